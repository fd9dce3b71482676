//! The Prometheus text exposition of a registry.

use prometheus::{Encoder, Registry, TextEncoder};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding to a Vec cannot fail");
    String::from_utf8(buf).expect("exposition is UTF-8")
}

/// Makes metric families and registers them in one step, so a family cannot be made and
/// forgotten. Names and label sets are fixed at compile time, so a failure is a bug: it panics.
pub struct Families<'a>(pub &'a Registry);

impl Families<'_> {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, m: prometheus::Result<M>) -> M {
        let m = m.expect("a valid metric definition");
        self.0
            .register(Box::new(m.clone()))
            .expect("each metric registered once");
        m
    }

    pub fn counter(&self, name: &str, help: &str) -> prometheus::IntCounter {
        self.add(prometheus::IntCounter::new(name, help))
    }

    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::IntCounterVec {
        self.add(prometheus::IntCounterVec::new(
            prometheus::Opts::new(name, help),
            labels,
        ))
    }

    pub fn gauge(&self, name: &str, help: &str) -> prometheus::IntGauge {
        self.add(prometheus::IntGauge::new(name, help))
    }

    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::IntGaugeVec {
        self.add(prometheus::IntGaugeVec::new(
            prometheus::Opts::new(name, help),
            labels,
        ))
    }

    /// A float gauge family (ratios, seconds).
    pub fn float_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
        self.add(prometheus::GaugeVec::new(
            prometheus::Opts::new(name, help),
            labels,
        ))
    }

    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> prometheus::Histogram {
        self.add(prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        ))
    }

    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> prometheus::HistogramVec {
        self.add(prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        ))
    }

    /// `build_info{version}` = 1.
    pub fn build_info(&self, version: &str) -> prometheus::IntGaugeVec {
        let info = self.gauge_vec(
            "build_info",
            "Always 1; the version label says which build runs.",
            &["version"],
        );
        info.with_label_values(&[version]).set(1);
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_registered_as_made() {
        let r = Registry::new_custom(Some("t".into()), None).unwrap();
        let f = Families(&r);
        f.counter("a_total", "a").inc();
        f.counter_vec("b_total", "b", &["x"])
            .with_label_values(&["y"])
            .inc();
        f.build_info("1.2.3");
        let text = render(&r);
        assert!(text.contains("t_a_total 1"), "{text}");
        assert!(text.contains("t_b_total{x=\"y\"} 1"), "{text}");
        assert!(text.contains("t_build_info{version=\"1.2.3\"} 1"), "{text}");
    }
}
