//! Log lines that a caller (or a misbehaving peer) can cause are rate limited per call site:
//! nobody outside must be able to write our logs at their rate. A site allows `burst` lines
//! per `period`; the first line after a quiet spell says how many were left out.
//!
//! ```
//! use daemon::loglimit::LogLimit;
//! static HEADER_FETCH: LogLimit = LogLimit::new(10, 60);
//! if let Some(suppressed) = HEADER_FETCH.allow() {
//!     tracing::warn!(suppressed, "header fetch failed");
//! }
//! ```

use std::sync::Mutex;

use tokio::time::{Duration, Instant};

pub struct LogLimit {
    burst: u32,
    period_secs: u64,
    state: Mutex<Window>,
}

struct Window {
    started: Option<Instant>,
    allowed: u32,
    suppressed: u64,
}

impl LogLimit {
    /// `burst` lines per `period_secs` seconds.
    pub const fn new(burst: u32, period_secs: u64) -> Self {
        Self {
            burst,
            period_secs,
            state: Mutex::new(Window {
                started: None,
                allowed: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(lines left out since the last one logged)` when this line may be logged.
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = w
            .started
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(self.period_secs));
        if fresh {
            w.started = Some(now);
            w.allowed = 0;
        }
        if w.allowed < self.burst {
            w.allowed += 1;
            return Some(std::mem::take(&mut w.suppressed));
        }
        w.suppressed += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_per_period_then_the_count_of_what_was_left_out() {
        let l = LogLimit::new(3, 10);
        let allowed: Vec<_> = (0..100).map(|_| l.allow()).collect();
        assert_eq!(&allowed[..3], &[Some(0), Some(0), Some(0)]);
        assert!(allowed[3..].iter().all(Option::is_none));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            l.allow(),
            Some(97),
            "the next line says how many were left out"
        );
        assert_eq!(l.allow(), Some(0));
    }
}
