//! A small parser for the Prometheus text exposition format (0.0.4) and the naming rules we hold
//! our metrics to. The `prometheus` crate only writes the format, so the tests read it here.

use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: String,
    pub samples: Vec<Sample>,
}

/// Parses a whole exposition; every sample must belong to a family declared by `# TYPE`.
pub fn parse(text: &str) -> Result<Vec<Family>, String> {
    let mut fams: Vec<Family> = Vec::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    for (no, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", no + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            helps.insert(name.to_string(), help.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without a type".into()))?;
            if fams.iter().any(|f| f.name == name) {
                return Err(at(format!("family {name} declared twice")));
            }
            fams.push(Family {
                name: name.to_string(),
                help: helps.get(name).cloned().unwrap_or_default(),
                kind: kind.to_string(),
                samples: Vec::new(),
            });
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let s = parse_sample(line).map_err(at)?;
        let fam = fams
            .last_mut()
            .ok_or_else(|| at("sample before any TYPE".into()))?;
        let base = match fam.kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suf| s.name.strip_suffix(suf))
                .unwrap_or(&s.name),
            _ => s.name.as_str(),
        };
        if base != fam.name {
            return Err(at(format!(
                "sample {} outside its family {}",
                s.name, fam.name
            )));
        }
        fam.samples.push(s);
    }
    Ok(fams)
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let mut end = None;
        loop {
            // label name
            while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                chars.next();
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(*i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if !is_name(&key) || key.starts_with("__") {
                return Err(format!("bad label name {key:?}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut val = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => val.push('\n'),
                        Some('\\') => val.push('\\'),
                        Some('"') => val.push('"'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => val.push(c),
                }
            }
            if !closed {
                return Err("unterminated label value".into());
            }
            if labels.insert(key.clone(), val).is_some() {
                return Err(format!("label {key} twice"));
            }
        }
        let end = end.ok_or("unterminated label set")?;
        rest = &r[end + 1..];
    }
    let mut parts = rest.split_whitespace();
    let v = parts.next().ok_or("no value")?;
    let value = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if parts.next().is_some() {
        return Err("trailing data".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Label names that would carry unbounded or private values.
pub const FORBIDDEN_LABELS: &[&str] = &[
    "ip",
    "addr",
    "address",
    "remote",
    "peer",
    "client",
    "params",
    "path",
    "url",
    "uri",
    "body",
    "query",
    "request_id",
    "id",
];

/// Units other than the base ones Prometheus prescribes.
const NON_BASE_UNITS: &[&str] = &[
    "_ms",
    "_millis",
    "_milliseconds",
    "_microseconds",
    "_us",
    "_ns",
    "_minutes",
    "_hours",
    "_kb",
    "_mb",
    "_kilobytes",
    "_megabytes",
    "_percent",
];

/// Our naming rules; returns every violation.
pub fn lint(prefix: &str, fams: &[Family]) -> Vec<String> {
    let mut bad = Vec::new();
    for f in fams {
        let n = &f.name;
        let mut err = |m: String| bad.push(format!("{n}: {m}"));
        if !n.starts_with(&format!("{prefix}_")) {
            err(format!("not prefixed {prefix}_"));
        }
        if f.help.trim().is_empty() {
            err("no HELP text".into());
        }
        match f.kind.as_str() {
            "counter" if !n.ends_with("_total") => err("counter without _total".into()),
            "counter" => {}
            "gauge" | "histogram" if n.ends_with("_total") => {
                err(format!("{} ends in _total", f.kind));
            }
            "gauge" | "histogram" => {}
            other => err(format!(
                "type {other}: only counters, gauges and histograms"
            )),
        }
        let stem = n.strip_suffix("_total").unwrap_or(n);
        for unit in NON_BASE_UNITS {
            if stem.ends_with(unit) || stem.contains(&format!("{unit}_")) {
                err(format!("non-base unit {unit}"));
            }
        }
        let timeish = ["duration", "latency", "rtt", "_age", "elapsed", "_time"];
        if timeish.iter().any(|t| stem.contains(t)) && !stem.ends_with("_seconds") {
            err("a time without _seconds".into());
        }
        if stem.contains("bytes") && !stem.ends_with("_bytes") {
            err("a size not ending _bytes".into());
        }
        if stem.ends_with("_seconds") && f.kind == "counter" && !n.ends_with("_seconds_total") {
            err("seconds counter must end _seconds_total".into());
        }
        for s in &f.samples {
            for k in s.labels.keys() {
                if FORBIDDEN_LABELS.contains(&k.as_str()) {
                    err(format!("forbidden label {k:?}"));
                }
            }
        }
        if f.kind == "histogram" {
            bad.extend(check_histogram(f));
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

/// Buckets ascend, counts are cumulative, `+Inf` equals `_count`, `_sum` exists: per label set.
fn check_histogram(f: &Family) -> Vec<String> {
    let mut bad = Vec::new();
    let mut series: BTreeMap<Vec<(String, String)>, Vec<&Sample>> = BTreeMap::new();
    for s in &f.samples {
        let key = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        series.entry(key).or_default().push(s);
    }
    for (key, ss) in series {
        let buckets: Vec<(f64, f64)> = ss
            .iter()
            .filter(|s| s.name.ends_with("_bucket"))
            .map(|s| {
                let le = s.labels.get("le").map(String::as_str).unwrap_or("?");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                (le, s.value)
            })
            .collect();
        let count = ss
            .iter()
            .find(|s| s.name.ends_with("_count"))
            .map(|s| s.value);
        let has_sum = ss.iter().any(|s| s.name.ends_with("_sum"));
        let ok = !buckets.is_empty()
            && buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            && buckets.last().map(|b| b.0) == Some(f64::INFINITY)
            && count == buckets.last().map(|b| b.1)
            && has_sum;
        if !ok {
            bad.push(format!("{}{key:?}: malformed histogram", f.name));
        }
    }
    bad
}

/// Every sample name (histograms contribute `_bucket`, `_sum`, `_count`).
pub fn sample_names(fams: &[Family]) -> std::collections::BTreeSet<String> {
    fams.iter()
        .flat_map(|f| f.samples.iter().map(|s| s.name.clone()))
        .collect()
}

pub fn family<'a>(fams: &'a [Family], name: &str) -> Option<&'a Family> {
    fams.iter().find(|f| f.name == name)
}

#[test]
fn parser_and_lint_catch_what_they_should() {
    let good = "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\n\
        x_requests_total{chain=\"a\\\"b\",outcome=\"ok\"} 3\n\
        # HELP x_d_seconds D.\n# TYPE x_d_seconds histogram\n\
        x_d_seconds_bucket{le=\"0.1\"} 1\nx_d_seconds_bucket{le=\"+Inf\"} 2\n\
        x_d_seconds_sum 0.3\nx_d_seconds_count 2\n";
    let f = parse(good).unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].samples[0].labels["chain"], "a\"b");
    assert!(lint("x", &f).is_empty(), "{:?}", lint("x", &f));

    let bad = "# HELP y_requests Requests.\n# TYPE y_requests counter\ny_requests{ip=\"1.2.3.4\"} 1\n\
        # HELP y_latency_ms L.\n# TYPE y_latency_ms summary\ny_latency_ms{quantile=\"0.5\"} 1\n\
        # HELP y_h H.\n# TYPE y_h histogram\ny_h_bucket{le=\"1\"} 5\ny_h_bucket{le=\"+Inf\"} 4\ny_h_sum 1\ny_h_count 4\n";
    let problems = lint("x", &parse(bad).unwrap()).join("\n");
    for want in [
        "not prefixed x_",
        "counter without _total",
        "forbidden label \"ip\"",
        "type summary",
        "non-base unit _ms",
        "malformed histogram",
    ] {
        assert!(
            problems.contains(want),
            "lint missed {want:?} in:\n{problems}"
        );
    }
    assert!(
        parse("x 1\n").is_err(),
        "a sample without TYPE must not parse"
    );
    assert!(parse("# TYPE x counter\nx{a=\"1} 1\n").is_err());
}
