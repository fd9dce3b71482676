//! Each node's reputation, by node id (so it survives reconnects): a score from 1.0 down, lost
//! for answers an audit showed wrong (and a little for each health drop), regained slowly for
//! answers audits confirmed. Below `audit.eject_below` the node is ejected until
//! `audit.eject_for_secs` pass or an operator re-admits it. The book only keeps the standings;
//! `nodes::audit` acts on them (routing, kept answers).

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::{Duration, Instant};

use crate::config::AuditConfig;

/// Nodes whose standing is kept; past it, spotless ones are forgotten first.
const MAX_STANDINGS: usize = 10_000;

/// What happened to a node's reputation.
#[derive(Debug, Clone)]
pub enum Event {
    /// An audit agreed with its answer.
    Confirmed,
    /// An audit showed an answer wrong; the evidence, for the log and the status page.
    Wrong(String),
    /// The health checker dropped it for a chain.
    HealthDrop,
}

/// One node's standing.
#[derive(Debug, Clone, Serialize)]
pub struct Standing {
    pub score: f64,
    pub confirmed: u64,
    pub wrong: u64,
    pub ejections: u32,
    /// While ejected: when it comes back by itself.
    #[serde(skip)]
    pub ejected_until: Option<Instant>,
    /// Milliseconds since the Unix epoch of the last ejection.
    pub ejected_at_ms: Option<u64>,
    /// The evidence of the last wrong answer.
    pub last_wrong: Option<String>,
}

impl Default for Standing {
    fn default() -> Self {
        Self {
            score: 1.0,
            confirmed: 0,
            wrong: 0,
            ejections: 0,
            ejected_until: None,
            ejected_at_ms: None,
            last_wrong: None,
        }
    }
}

impl Standing {
    pub fn ejected(&self) -> bool {
        self.ejected_until.is_some()
    }
}

/// The standings of every node seen, by node id.
#[derive(Default)]
pub struct Book {
    standings: Mutex<HashMap<String, Standing>>,
}

impl Book {
    /// Applies `event` to `id`'s standing; true when it has just been ejected by it.
    pub fn record(&self, id: &str, event: Event, cfg: &AuditConfig) -> bool {
        let mut all = self.standings.lock();
        if all.len() >= MAX_STANDINGS && !all.contains_key(id) {
            all.retain(|_, s| s.ejected() || s.score < 1.0);
            if all.len() >= MAX_STANDINGS {
                return false;
            }
        }
        let s = all.entry(id.to_string()).or_default();
        match event {
            Event::Confirmed => {
                s.confirmed += 1;
                s.score = (s.score + cfg.reward).min(1.0);
            }
            Event::Wrong(evidence) => {
                s.wrong += 1;
                s.score = (s.score - cfg.penalty).max(0.0);
                s.last_wrong = Some(evidence);
            }
            Event::HealthDrop => s.score = (s.score - cfg.health_penalty).max(0.0),
        }
        if s.ejected() || s.score >= cfg.eject_below {
            return false;
        }
        s.ejected_until = Some(Instant::now() + cfg.eject_for);
        s.ejected_at_ms = Some(daemon::unix_ms());
        s.ejections += 1;
        true
    }

    pub fn is_ejected(&self, id: &str) -> bool {
        self.standings.lock().get(id).is_some_and(Standing::ejected)
    }

    pub fn standing(&self, id: &str) -> Standing {
        self.standings.lock().get(id).cloned().unwrap_or_default()
    }

    /// Ends every ejection whose time has passed; returns those nodes' ids.
    pub fn expire(&self, now: Instant) -> Vec<String> {
        let mut back = Vec::new();
        for (id, s) in self.standings.lock().iter_mut() {
            if s.ejected_until.is_some_and(|t| t <= now) {
                readmitted(s);
                back.push(id.clone());
            }
        }
        back
    }

    /// Time heals: every node in good standing (not ejected) regains `amount`, up to 1.0, so
    /// health drops spread over a long life do not add up to an ejection.
    pub fn heal(&self, amount: f64) {
        for s in self.standings.lock().values_mut().filter(|s| !s.ejected()) {
            s.score = (s.score + amount).min(1.0);
        }
    }

    /// An operator re-admits `id`: false if it was not ejected.
    pub fn readmit(&self, id: &str) -> bool {
        match self.standings.lock().get_mut(id) {
            Some(s) if s.ejected() => {
                readmitted(s);
                true
            }
            _ => false,
        }
    }

    /// Time left of `id`'s ejection.
    pub fn ejected_for(&self, id: &str) -> Option<Duration> {
        let until = self.standings.lock().get(id)?.ejected_until?;
        Some(until.saturating_duration_since(Instant::now()))
    }
}

/// A re-admitted node starts again with a clean score (its counts stay, for the record).
fn readmitted(s: &mut Standing) {
    s.ejected_until = None;
    s.score = 1.0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wrong_answers_eject_and_time_or_an_operator_readmits() {
        let cfg = AuditConfig::default();
        let b = Book::default();
        for _ in 0..20 {
            assert!(!b.record("a", Event::Confirmed, &cfg));
        }
        assert_eq!(b.standing("a").score, 1.0, "capped at 1");
        assert!(
            !b.record("a", Event::Wrong("x".into()), &cfg),
            "0.6: still in"
        );
        assert!(b.record("a", Event::Wrong("y".into()), &cfg), "0.2: out");
        assert!(b.is_ejected("a"));
        assert!(
            !b.record("a", Event::Wrong("z".into()), &cfg),
            "ejected once only"
        );
        assert_eq!(b.standing("a").last_wrong.as_deref(), Some("z"));
        assert!(b.expire(Instant::now()).is_empty());
        tokio::time::advance(cfg.eject_for).await;
        assert_eq!(b.expire(Instant::now()), vec!["a".to_string()]);
        assert!(!b.is_ejected("a"));
        assert_eq!(b.standing("a").score, 1.0);
        assert_eq!(b.standing("a").ejections, 1);
        // Health drops alone take a long time; an operator can re-admit at once.
        let drops = (1..100).find(|_| b.record("b", Event::HealthDrop, &cfg));
        assert!(matches!(drops, Some(25..=26)), "{drops:?}");
        assert!(b.readmit("b"));
        b.record("c", Event::Wrong("w".into()), &cfg);
        b.heal(0.3);
        assert!((b.standing("c").score - 0.9).abs() < 1e-9);
        b.heal(0.3);
        assert_eq!(b.standing("c").score, 1.0, "capped");
        assert!(!b.readmit("b"), "not ejected any more");
        assert!(!b.readmit("nobody"));
    }
}
