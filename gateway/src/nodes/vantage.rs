//! Proof of location from every vantage point: gateways share, through Redis, the smallest RTT
//! each has measured to each node, so every gateway can check a node's claimed location against
//! every gateway's measurement (constraint-based geolocation).
//!
//! A node can add delay but not remove it, so a measurement bounds how far the node can be from
//! the gateway that made it: light in fibre covers `km_per_ms` per millisecond of round trip. A
//! claim outside any gateway's bound is implausible, on every gateway. With one gateway only a
//! node claiming to be too far away from it is caught; with gateways in several places, a node in
//! Singapore claiming Frankfurt is caught by the Singapore gateway's small RTT.
//!
//! Through Redis rather than the nodes' own connections: a node that lies about its location
//! would also be the one carrying the evidence. Each gateway writes
//! `{prefix}:vantage:{node_id}` field `{gateway name}` = `lat,lon,min_rtt_ms,written_at_ms` and
//! reads the others' for the nodes joined to it, every `EVERY`; a field not renewed for
//! `ENTRY_TTL` is ignored (a gateway that left), and the hash expires once nobody writes it.
//! Gateway names must differ: they are the fields.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;

use super::registry::Registry;
use crate::config::Point;
use crate::redis_link::{open, unix_ms, REDIS_TIMEOUT};

/// How often measurements are shared and read.
const EVERY: Duration = Duration::from_secs(1);
/// A gateway's measurement is forgotten this long after it stopped renewing it.
const ENTRY_TTL: Duration = Duration::from_secs(30);

static REDIS_LOG: daemon::loglimit::LogLimit = daemon::loglimit::LogLimit::new(5, 60);

/// One gateway's smallest RTT to a node, and where that gateway is.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub gateway: String,
    pub at: Point,
    pub min_rtt: Duration,
}

impl Measurement {
    /// How far from `(lat, lon)` this measurement allows the node to be, and whether the
    /// claim is within it.
    pub fn allows(&self, lat: f64, lon: f64, km_per_ms: f64) -> (bool, f64, f64) {
        let km = crate::geo::haversine_km((self.at.lat, self.at.lon), (lat, lon));
        let reach = km_per_ms * self.min_rtt.as_secs_f64() * 1000.0;
        (km <= reach, km, reach)
    }

    /// `lat,lon,min_rtt_ms,written_at_ms`.
    fn encode(&self, written_at_ms: u64) -> String {
        format!(
            "{},{},{},{written_at_ms}",
            self.at.lat,
            self.at.lon,
            self.min_rtt.as_secs_f64() * 1000.0
        )
    }

    /// A field as another gateway wrote it; `None` when malformed or older than `ENTRY_TTL`.
    fn decode(gateway: &str, v: &str, now_ms: u64) -> Option<Self> {
        let mut it = v.split(',');
        let mut num = || it.next()?.parse::<f64>().ok().filter(|x| x.is_finite());
        let (lat, lon, ms, at) = (num()?, num()?, num()?, num()?);
        let fresh = now_ms.saturating_sub(at as u64) <= ENTRY_TTL.as_millis() as u64;
        let ok = (-90.0..=90.0).contains(&lat)
            && (-180.0..=180.0).contains(&lon)
            && (0.0..60_000.0).contains(&ms)
            && fresh;
        if !ok {
            return None;
        }
        Some(Self {
            gateway: gateway.to_string(),
            at: Point { lat, lon },
            min_rtt: Duration::try_from_secs_f64(ms / 1000.0).ok()?,
        })
    }
}

/// The other gateways' measurements, by node id (what the health checker judges with), each
/// with when it was read.
#[derive(Default)]
pub struct Vantage {
    others: RwLock<HashMap<String, (Vec<Measurement>, std::time::Instant)>>,
}

impl Vantage {
    /// The other gateways' measurements of `node_id`, by gateway name; none once they are
    /// older than `ENTRY_TTL` (Redis gone: each gateway is back to its own).
    pub fn of(&self, node_id: &str) -> Vec<Measurement> {
        match self.others.read().get(node_id) {
            Some((m, read)) if read.elapsed() <= ENTRY_TTL => m.clone(),
            _ => Vec::new(),
        }
    }

    /// Adds what an exchange read (the sync task, or a test); nodes it did not cover keep
    /// theirs until they age out, so a node that rejoins is judged at once.
    pub fn set(&self, all: HashMap<String, Vec<Measurement>>) {
        let now = std::time::Instant::now();
        let mut map = self.others.write();
        map.retain(|_, (_, read)| read.elapsed() <= ENTRY_TTL);
        for (id, mut m) in all {
            m.sort_by(|a, b| a.gateway.cmp(&b.gateway));
            map.insert(id, (m, now));
        }
    }
}

/// Nodes per pipeline: one round trip stays small whatever the network's size.
const PIPELINE_NODES: usize = 500;

/// Shares this gateway's measurements and reads the others' until `stop`.
pub async fn run(
    vantage: Arc<Vantage>,
    registry: Arc<Registry>,
    client: redis::Client,
    prefix: String,
    me: String,
    location: Option<Point>,
    stop: CancellationToken,
) {
    let mut conn = None;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if conn.is_none() {
            conn = open(&client).await;
        }
        let Some(c) = conn.as_mut() else { continue };
        if registry.is_empty() {
            continue;
        }
        let ids: Vec<(String, Option<Duration>)> = registry
            .snapshot()
            .iter()
            .map(|n| (n.id.clone(), n.min_rtt()))
            .collect();
        for chunk in ids.chunks(PIPELINE_NODES) {
            let sync = exchange(c, &prefix, &me, location, chunk);
            match tokio::time::timeout(REDIS_TIMEOUT * 2, sync).await {
                Ok(Ok(all)) => vantage.set(all),
                Ok(Err(e)) => {
                    if let Some(suppressed) = REDIS_LOG.allow() {
                        tracing::warn!(error = %e, suppressed, "sharing node RTTs through Redis failed; once the others' measurements age out (30 s) each gateway judges locations on its own");
                    }
                    conn = None;
                    break;
                }
                Err(_) => {
                    conn = None;
                    break;
                }
            }
        }
    }
}

/// Writes this gateway's smallest RTT to each node it has measured and reads every gateway's
/// entries for the nodes joined here; returns the others'.
async fn exchange(
    c: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    me: &str,
    location: Option<Point>,
    nodes: &[(String, Option<Duration>)],
) -> redis::RedisResult<HashMap<String, Vec<Measurement>>> {
    let now = unix_ms();
    let mut pipe = redis::pipe();
    for (id, min_rtt) in nodes {
        let key = format!("{prefix}:vantage:{id}");
        if let (Some(at), Some(min_rtt)) = (location, min_rtt) {
            let m = Measurement {
                gateway: me.to_string(),
                at,
                min_rtt: *min_rtt,
            };
            pipe.hset(&key, me, m.encode(now)).ignore();
            pipe.pexpire(&key, ENTRY_TTL.as_millis() as i64).ignore();
        }
        pipe.hgetall(&key);
    }
    let answers: Vec<HashMap<String, String>> = pipe.query_async(c).await?;
    Ok(nodes
        .iter()
        .zip(answers)
        .map(|((id, _), fields)| {
            let others = fields
                .iter()
                .filter(|(g, _)| g.as_str() != me)
                .filter_map(|(g, v)| Measurement::decode(g, v, now))
                .collect();
            (id.clone(), others)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_round_trip_and_bound_the_claim() {
        let sg = Measurement {
            gateway: "gw-sg".into(),
            at: Point {
                lat: 1.35,
                lon: 103.82,
            },
            min_rtt: Duration::from_millis(2),
        };
        let now = unix_ms();
        let back = Measurement::decode("gw-sg", &sg.encode(now), now).unwrap();
        assert_eq!(back, sg);
        let later = now + ENTRY_TTL.as_millis() as u64 + 1;
        assert!(
            Measurement::decode("gw-sg", &sg.encode(now), later).is_none(),
            "aged out"
        );
        assert!(Measurement::decode("x", "1,2,inf,0", now).is_none());
        assert!(Measurement::decode("x", "1,2,1e30,0", now).is_none());
        // 2 ms of fibre round trip (100 km/ms) reaches 200 km: not Frankfurt, 10,000 km away.
        let (ok, km, reach) = sg.allows(50.11, 8.68, 100.0);
        assert!(!ok && km > 10_000.0 && (reach - 200.0).abs() < 1e-6);
        assert!(sg.allows(1.30, 103.85, 100.0).0);
        assert!(Measurement::decode("x", "1,2", now).is_none());
        assert!(Measurement::decode("x", &format!("95,2,3,{now}"), now).is_none());
    }
}
