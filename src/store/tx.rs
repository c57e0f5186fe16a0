//! The one write path: every change to the store is applied to all of its
//! trees inside one sled transaction, through [`TxTrees`].

use std::cell::RefCell;
use std::collections::BTreeMap;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::{content_key, id_of, key, value, Record, StoreError};

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<String>>;

fn read_u64(tree: &TransactionalTree, name: &str) -> TxResult<u64> {
    Ok(tree
        .get(name)?
        .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
        .unwrap_or(0))
}

fn tx_counter(tree: &TransactionalTree, name: &str, delta: i64) -> TxResult<u64> {
    let next = (read_u64(tree, name)? as i64 + delta).max(0) as u64;
    tree.insert(name, &next.to_be_bytes())?;
    Ok(next)
}

/// The counters a transaction moves, summed as it goes and written once
/// at its end: a batch of 4,096 adds then reads and writes `next_id`,
/// `live` and each label's count once, not 4,096 times each.
#[derive(Default)]
pub(super) struct Tally {
    /// The next free id, once an add has read it.
    next_id: Option<u64>,
    live: i64,
    tombstones: i64,
    labels: BTreeMap<String, i64>,
}

impl Tally {
    fn label(&mut self, label: &str, delta: i64) {
        match self.labels.get_mut(label) {
            Some(d) => *d += delta,
            None => {
                self.labels.insert(label.to_string(), delta);
            }
        }
    }
}

/// The trees of one transaction, so helpers take one argument.
pub(super) struct TxTrees<'a> {
    pub(super) meta: &'a TransactionalTree,
    pub(super) records: &'a TransactionalTree,
    pub(super) paths: &'a TransactionalTree,
    pub(super) content: &'a TransactionalTree,
    pub(super) tombs: &'a TransactionalTree,
    pub(super) labels: &'a TransactionalTree,
    /// What this attempt of the transaction changed (reset on a retry,
    /// since sled re-runs the closure that makes it).
    pub(super) applied: &'a RefCell<super::Applied>,
    /// Likewise reset on a retry.
    pub(super) tally: &'a RefCell<Tally>,
}

impl TxTrees<'_> {
    /// Stores a new record under the next id, replacing any older record of
    /// the same path (a path has one live record), and returns the id.
    pub(super) fn add(&self, record: &Record, vector: &[f32]) -> TxResult<u64> {
        let id = self.take_id()?;
        if let Some(old) = self.paths.get(&record.path)? {
            self.remove(id_of(&old))?;
        }
        self.records
            .insert(&key(id), value::encode(record, vector))?;
        self.paths.insert(record.path.as_slice(), &key(id))?;
        self.content.insert(&content_key(&record.hash, id), &[])?;
        self.move_label(None, record.label.as_deref());
        self.tally.borrow_mut().live += 1;
        self.applied.borrow_mut().added.push(id);
        Ok(id)
    }

    /// Rewrites a live record (a move to a new path, or new file facts or
    /// label); its embedding is kept. A record removed meanwhile is skipped.
    pub(super) fn update(&self, id: u64, record: &Record) -> TxResult<()> {
        let Some(old_value) = self.records.get(key(id))? else {
            return Ok(());
        };
        let old = value::record(&old_value).map_err(abort(id))?;
        if old.path != record.path {
            self.paths.remove(old.path.as_slice())?;
            // The new path's older record, if any, gives way.
            if let Some(other) = self.paths.get(&record.path)? {
                if id_of(&other) != id {
                    self.remove(id_of(&other))?;
                }
            }
            self.paths.insert(record.path.as_slice(), &key(id))?;
        }
        self.move_label(old.label.as_deref(), record.label.as_deref());
        let (embedding, _) = value::split(&old_value).expect("a record that decoded splits");
        self.records
            .insert(&key(id), value::encode_with(record, embedding))?;
        self.applied.borrow_mut().changed.push(id);
        Ok(())
    }

    /// Drops a live record from every tree and makes its id a tombstone.
    pub(super) fn remove(&self, id: u64) -> TxResult<()> {
        let Some(old) = self.records.remove(&key(id))? else {
            return Ok(());
        };
        let old = value::record(&old).map_err(abort(id))?;
        if self.paths.get(&old.path)?.is_some_and(|v| id_of(&v) == id) {
            self.paths.remove(old.path.as_slice())?;
        }
        self.content.remove(&content_key(&old.hash, id))?;
        self.move_label(old.label.as_deref(), None);
        self.tombs.insert(&key(id), &[])?;
        {
            let mut tally = self.tally.borrow_mut();
            tally.live -= 1;
            tally.tombstones += 1;
        }
        self.applied.borrow_mut().removed.push(id);
        Ok(())
    }

    /// Counts a record's move from label `old` to label `new` (either
    /// may be none); the per-label counts are written in
    /// [`TxTrees::finish`].
    fn move_label(&self, old: Option<&str>, new: Option<&str>) {
        if old == new {
            return;
        }
        let mut tally = self.tally.borrow_mut();
        if let Some(old) = old {
            tally.label(old, -1);
        }
        if let Some(new) = new {
            tally.label(new, 1);
        }
    }

    /// The next free id, read from `meta` the first time.
    fn take_id(&self) -> TxResult<u64> {
        let mut tally = self.tally.borrow_mut();
        let id = match tally.next_id {
            Some(id) => id,
            None => read_u64(self.meta, "next_id")?,
        };
        tally.next_id = Some(id + 1);
        Ok(id)
    }

    /// Writes the counters the transaction moved: call it last.
    pub(super) fn finish(&self) -> TxResult<()> {
        let tally = self.tally.take();
        if let Some(next) = tally.next_id {
            self.meta.insert("next_id", &next.to_be_bytes())?;
        }
        for (name, delta) in [("live", tally.live), ("tombstones", tally.tombstones)] {
            if delta != 0 {
                tx_counter(self.meta, name, delta)?;
            }
        }
        for (label, delta) in &tally.labels {
            if *delta != 0 && tx_counter(self.labels, label, *delta)? == 0 {
                self.labels.remove(label.as_bytes())?;
            }
        }
        Ok(())
    }
}

/// Abandons the transaction over a record that does not decode.
fn abort(id: u64) -> impl FnOnce(String) -> ConflictableTransactionError<String> {
    move |message| ConflictableTransactionError::Abort(format!("corrupt record {id}: {message}"))
}

pub(super) fn tx_error(e: TransactionError<String>) -> StoreError {
    match e {
        TransactionError::Abort(message) => StoreError::Aborted(message),
        TransactionError::Storage(e) => StoreError::Db(e),
    }
}
