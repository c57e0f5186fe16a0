//! Which indexed images a command looks at: those under a folder, with a
//! label, or with any label. One filter serves query, classify (voters are
//! the labelled images), anomalies, export and `serve`.
//!
//! A filter resolves to a sorted list of ids ([`Filter::allowed_ids`]) that
//! searches apply *inside* the scan or graph walk, so a filtered query still
//! returns k results whenever k images match.

use std::path::PathBuf;

use crate::catalogue::Catalogue;
use crate::store::{path_to_bytes, Record, Store, StoreError};

/// Records streamed from the store, with their ids.
pub type Records<'a> = Box<dyn Iterator<Item = Result<(u64, Record), StoreError>> + 'a>;

/// Selected images, as parallel lists.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub ids: Vec<u64>,
    pub paths: Vec<PathBuf>,
    pub labels: Vec<Option<String>>,
    pub vectors: Vec<Vec<f32>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only images whose path is under this folder.
    pub under: Option<PathBuf>,
    /// Only images with this label.
    pub label: Option<String>,
    /// Only images with a label (the voters of a kNN classification).
    pub labelled: bool,
}

impl Filter {
    /// Whether every live image passes.
    pub fn is_empty(&self) -> bool {
        self.under.is_none() && self.label.is_none() && !self.labelled
    }

    /// Sorted ids passing the filter, or `None` when every live image does.
    pub fn allowed_ids(&self, store: &Store) -> Result<Option<Vec<u64>>, StoreError> {
        let any_label = self.labelled || self.label.is_some();
        let mut ids: Vec<u64> = match &self.under {
            None if !any_label => return Ok(None),
            None if self.label.is_none() => {
                // Labelled only: nothing to filter when every image has a label.
                let labelled: u64 = store.label_counts()?.values().sum();
                if labelled >= store.live_count()? {
                    return Ok(None);
                }
                store
                    .labelled()
                    .map(|r| r.map(|(id, _)| id))
                    .collect::<Result<_, _>>()?
            }
            None => store
                .labelled()
                .filter(|r| r.as_ref().map_or(true, |(_, l)| self.label_ok(Some(l))))
                .map(|r| r.map(|(id, _)| id))
                .collect::<Result<_, _>>()?,
            Some(_) => {
                let prefix = self.prefix().expect("a folder to be under");
                let mut ids = Vec::new();
                for item in store.paths_under(&prefix) {
                    let (_, id) = item?;
                    if !any_label || self.label_ok(store.label_of(id)?.as_deref()) {
                        ids.push(id);
                    }
                }
                ids
            }
        };
        ids.sort_unstable();
        Ok(Some(ids))
    }

    /// Sorted ids of the record catalogue's live rows passing the filter,
    /// or `None` when every live image does: [`Filter::allowed_ids`] for a
    /// reader that did not open the store.
    pub fn allowed_ids_in(&self, catalogue: &Catalogue) -> Option<Vec<u64>> {
        if self.is_empty() {
            return None;
        }
        let prefix = self.prefix();
        let ids = catalogue
            .iter()
            .filter(|row| !row.removed)
            .filter(|row| prefix.as_ref().is_none_or(|p| row.path.starts_with(p)))
            .filter(|row| self.label_ok(row.label))
            .map(|row| row.id)
            .collect();
        // Rows are in id order already.
        Some(ids)
    }

    /// The canonical folder to be under, as path bytes ending in `/`.
    fn prefix(&self) -> Option<Vec<u8>> {
        let dir = self.under.as_ref()?;
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        let mut prefix = path_to_bytes(&dir);
        if !prefix.ends_with(b"/") {
            prefix.push(b'/');
        }
        Some(prefix)
    }

    /// The live records passing the filter, in id order: streamed from the
    /// store when nothing is filtered, else looked up by id (one removed
    /// since it was listed is skipped).
    pub fn records<'a>(&self, store: &'a Store) -> Result<Records<'a>, StoreError> {
        Ok(match self.allowed_ids(store)? {
            Some(ids) => Box::new(ids.into_iter().filter_map(move |id| {
                store.record(id).transpose().map(|r| r.map(|rec| (id, rec)))
            })),
            None => Box::new(store.records()),
        })
    }

    /// The stored embeddings of the records passing the filter, in id
    /// order, with what a report names them by: what clusters and maps
    /// work on.
    pub fn select(&self, store: &Store) -> Result<Selection, StoreError> {
        let mut selection = Selection::default();
        for item in self.records(store)? {
            let (id, record) = item?;
            let Some(vector) = store.vector(id)? else {
                continue;
            };
            selection.ids.push(id);
            selection.paths.push(record.path_buf());
            selection.labels.push(record.label);
            selection.vectors.push(vector);
        }
        Ok(selection)
    }

    fn label_ok(&self, label: Option<&str>) -> bool {
        match &self.label {
            Some(want) => label == Some(want.as_str()),
            None => !self.labelled || label.is_some(),
        }
    }
}
