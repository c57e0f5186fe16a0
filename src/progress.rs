//! How long-running library work reports how far it has got.
//!
//! One small interface serves ingest, eval, train, anomalies, restore and
//! `serve`'s jobs, so the library never depends on a UI crate: the command
//! line adapts it to a terminal bar (`cli::progress`), `serve` to a
//! [`Counter`] that its job view reads, and tests and benches pass
//! [`NoProgress`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Receives progress from work that may run on several threads at once.
///
/// `total` may grow while the work runs: a walk that streams files into the
/// pipeline adds to the total as it finds them instead of counting first.
pub trait Progress: Sync {
    /// Starts a new stage: its name (what is counted), and its total, when known.
    fn stage(&self, _name: &str, _total: Option<u64>) {}
    /// `n` more units are known to be coming in this stage.
    fn grow(&self, _n: u64) {}
    /// `n` more units are done.
    fn advance(&self, _n: u64) {}
    /// A short status, such as the current training loss.
    fn message(&self, _text: &str) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {}

/// Progress kept as two counters, readable from another thread.
#[derive(Debug, Default)]
pub struct Counter {
    done: AtomicU64,
    total: AtomicU64,
}

impl Counter {
    /// Units done so far in the current stage.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Units known of in the current stage.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

impl Progress for Counter {
    fn stage(&self, _name: &str, total: Option<u64>) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
    }

    fn grow(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_counts_across_stages() {
        let c = Counter::default();
        c.stage("files", None);
        c.grow(3);
        c.grow(2);
        c.advance(4);
        assert_eq!((c.done(), c.total()), (4, 5));
        c.stage("passes", Some(10));
        c.advance(1);
        assert_eq!((c.done(), c.total()), (1, 10));
    }
}
