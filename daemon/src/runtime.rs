//! The runtime both daemons run on, from their `worker_threads` setting.
//!
//! - `0` (the default): one thread per core but one, at least one. The core left over is for
//!   what serving costs outside the process (the kernel's network stack, and the processes a
//!   gateway or node shares its machine with: its Redis, an upstream, the load generator).
//!   Measured on 2 cores (`loadtests/run.sh`), a thread per core there made the gateway's p99
//!   2-4x nginx's, one thread kept it below nginx's and served more.
//! - One thread, chosen or resolved: a current-thread runtime. Nothing is shared between
//!   workers, so nothing pays for sharing: no work stealing, no cross-thread wake-ups, a
//!   cheaper scheduler, and a request stays on the thread that took it.
//! - More: the multi-threaded (work-stealing) scheduler with that many workers.

use std::io;

/// The worker threads `worker_threads` resolves to on a machine with `cores` cores.
pub fn threads(worker_threads: usize, cores: usize) -> usize {
    match worker_threads {
        0 => cores.saturating_sub(1).max(1),
        n => n,
    }
}

/// The cores this process may use (1 if unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Builds the runtime for `worker_threads` (see the module docs), with IO and time enabled.
pub fn build(worker_threads: usize) -> io::Result<tokio::runtime::Runtime> {
    let n = match worker_threads {
        0 => threads(0, cores()),
        n => n,
    };
    match n {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_leaves_one_core_and_keeps_one_thread() {
        assert_eq!(threads(0, 1), 1);
        assert_eq!(threads(0, 2), 1);
        assert_eq!(threads(0, 16), 15);
        assert_eq!(threads(3, 2), 3);
        assert_eq!(threads(1, 64), 1);
    }

    #[test]
    fn one_thread_is_a_current_thread_runtime() {
        let rt = build(1).unwrap();
        assert_eq!(
            rt.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
        assert_eq!(
            rt.block_on(async { tokio::spawn(async { 7 }).await.unwrap() }),
            7
        );
        let rt = build(2).unwrap();
        assert_eq!(
            rt.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        );
    }
}
