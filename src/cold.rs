//! An index read without opening its store: the model, the flat vector
//! file and the record catalogue, when the catalogue says all three are
//! current. What a one-shot CLI query uses, because opening sled costs
//! time in proportion to the store's size (0.7 s at a million images)
//! while the exact scan of the flat file takes milliseconds.
//!
//! A search that the plan (or `--hnsw`) sends to the graph reads the saved
//! `graph.hnsw` too, when it holds exactly the flat file's rows: 0.2 s at a
//! million points, where opening the store first costs as much again.
//!
//! Nothing here writes. Whenever the derived files cannot be trusted
//! (a writer's changes unfinished, a file missing, torn, damaged or made
//! for other rows), [`ColdIndex::open`] says why, and the caller opens the
//! [`crate::index::Index`] instead, which repairs them. The flat file's
//! rows and the catalogue's are checked against their checksums piece by
//! piece as they are read, not all on open; damage found that way comes
//! out of [`ColdIndex::answer`], with the same remedy.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::ann::{flat, AnnStatus, FlatVectors, Graph, HnswParams};
use crate::catalogue::{Catalogue, Meta};
use crate::index::{IndexError, Status};
use crate::model::Model;
use crate::search::{self, Method, Neighbours, QueryOptions, SearchError, Searchable};
use crate::store::{bytes_to_path, StoreError};

pub struct ColdIndex {
    pub dir: PathBuf,
    pub model: Model,
    flat: FlatVectors,
    catalogue: Catalogue,
    /// The store's meta as of the last save.
    meta: Meta,
    /// The saved graph, read the first time a search needs it; `None`
    /// when it is not current.
    graph: OnceLock<Option<Graph>>,
}

impl ColdIndex {
    /// Opens the index in `dir` from its derived files. `Ok(Err(why))`
    /// when they cannot be trusted; `Err` when they can but the model they
    /// name does not load.
    pub fn open(dir: &Path) -> Result<Result<Self, String>, IndexError> {
        if !dir.join("db").exists() {
            return Ok(Err("no store".into()));
        }
        // The catalogue (and the model it names) and the flat file are each
        // checked against their checksums, side by side.
        let (opened, flat) = rayon::join(
            || -> Result<Result<(Catalogue, Model, Meta), String>, IndexError> {
                let catalogue = match Catalogue::open(dir) {
                    Ok(catalogue) => catalogue,
                    Err(why) => return Ok(Err(format!("record catalogue: {why}"))),
                };
                let meta = match catalogue.meta() {
                    Ok(meta) => meta,
                    Err(why) => return Ok(Err(format!("record catalogue: {why}"))),
                };
                let model = crate::index::model_of_stamp(&meta.stamp)?;
                Ok(Ok((catalogue, model, meta)))
            },
            || flat::header_dim(dir).and_then(|dim| FlatVectors::open_checked_on_read(dir, dim)),
        );
        let (catalogue, model, meta) = match opened? {
            Ok(opened) => opened,
            Err(why) => return Ok(Err(why)),
        };
        if model.fingerprint != meta.stamp.fingerprint {
            // The full open says what to do about it.
            return Ok(Err("the model it names has other weights now".into()));
        }
        let Some(mut flat) = flat.filter(|f| f.dim() == model.embedding_dim()) else {
            return Ok(Err("the flat vector file is missing or damaged".into()));
        };
        if !catalogue.describes(&flat) {
            return Ok(Err(
                "the record catalogue was saved beside another state of the flat vector file"
                    .into(),
            ));
        }
        flat.set_tombstones(catalogue.removed_ids());
        Ok(Ok(Self {
            dir: dir.to_path_buf(),
            model,
            flat,
            catalogue,
            meta,
            graph: OnceLock::new(),
        }))
    }

    /// The saved graph, if it holds exactly the flat file's rows (the same
    /// count and newest id: ids only grow, so that is the same set), with
    /// the catalogue's removed ids (the flat file's tombstones) as its
    /// own. `None` (missing, damaged or behind) sends the search to the
    /// store, whose open catches the graph up.
    fn graph(&self) -> Option<&Graph> {
        self.graph
            .get_or_init(|| {
                let (points, params) = Graph::saved(&self.dir)?;
                if points != self.flat.rows() {
                    return None;
                }
                let mut graph = Graph::load(&self.dir, self.flat.dim(), params).ok()?;
                if graph.max_id() != self.flat.last_id() {
                    return None;
                }
                // The catalogue's removals, which `open` gave the flat file.
                graph.add_tombstones(self.flat.tombstones().iter().copied());
                Some(graph)
            })
            .as_ref()
    }

    /// What a read found damaged so far, if anything: the flat file and
    /// the catalogue are checked piece by piece as they are read (a query
    /// at a million images reads ten records), so damage can surface after
    /// [`ColdIndex::open`]. Reads from a damaged piece give nothing.
    pub fn damage(&self) -> Option<String> {
        self.flat.damage().or_else(|| self.catalogue.damage())
    }

    /// `read`'s answer, if nothing it read was found damaged; otherwise why
    /// not, and the caller opens the store, which repairs the files. Every
    /// answer from a `ColdIndex` should come through here.
    pub fn answer<T>(&self, read: impl FnOnce(&Self) -> T) -> Result<T, String> {
        let answer = read(self);
        match self.damage() {
            Some(why) => Err(why),
            None => Ok(answer),
        }
    }

    /// Live images.
    pub fn live(&self) -> u64 {
        self.catalogue.live()
    }

    /// What `imgsearch status` shows, as of the last writer's save: the
    /// same as [`crate::index::Index::status`] without opening the store.
    pub fn status(&self) -> Status {
        let removed = self.catalogue.rows() as u64 - self.catalogue.live();
        let (graph_points, graph_params) = match Graph::saved(&self.dir) {
            Some((points, params)) => (Some(points), params),
            None => (None, HnswParams::default()),
        };
        Status::new(
            &self.dir,
            &self.model,
            self.meta.stamp.clone(),
            self.meta.schema_version,
            (self.live(), removed),
            AnnStatus {
                flat_rows: self.flat.rows(),
                graph_points,
                graph_params,
            },
            self.meta.roots.iter().map(|r| bytes_to_path(r)).collect(),
            self.meta.labels.clone(),
        )
    }
}

impl Searchable for ColdIndex {
    fn model(&self) -> &Model {
        &self.model
    }

    fn id_for_path(&self, path: &[u8]) -> Result<Option<u64>, StoreError> {
        // Ingest and import add the root of everything they store, so a
        // path under none of the roots is not in the index, and the usual
        // query (a photo from elsewhere) skips scanning a million rows'
        // paths. Only a shortcut: a file not found here is decoded and
        // embedded instead, to the same vector.
        let path_buf = bytes_to_path(path);
        let roots = &self.meta.roots;
        if !roots.is_empty() && !roots.iter().any(|r| path_buf.starts_with(bytes_to_path(r))) {
            return Ok(None);
        }
        Ok(self.catalogue.id_for_path(path))
    }

    fn stored_vector(&self, id: u64) -> Option<Vec<f32>> {
        self.flat.get(id)
    }

    fn path_and_label(&self, id: u64) -> Result<Option<(PathBuf, Option<String>)>, StoreError> {
        Ok(self.catalogue.find(id).map(|row| {
            (
                crate::store::bytes_to_path(row.path),
                row.label.map(str::to_string),
            )
        }))
    }

    /// An exact scan, or the saved graph when the plan wants it (forced,
    /// or a batch large enough to pay for loading it); a graph that is not
    /// current is [`SearchError::NeedsGraph`].
    fn neighbours(
        &self,
        vectors: &[Vec<f32>],
        opts: &QueryOptions,
    ) -> Result<(Vec<Neighbours>, Method), SearchError> {
        let allowed = opts.filter.allowed_ids_in(&self.catalogue);
        let candidates = allowed
            .as_ref()
            .map_or(self.catalogue.live() as usize, Vec::len);
        let dim = self.model.embedding_dim();
        // The graph's cost is that of reading the saved one (if it turns
        // out not to be current, the store's open catches it up instead).
        let method = search::plan(
            opts,
            search::SAVED_GRAPH_LOAD_NS_PER_POINT,
            self.flat.rows(),
            candidates,
            vectors.len(),
            dim,
        );
        if method == Method::Hnsw {
            let graph = self.graph().ok_or(SearchError::NeedsGraph)?;
            let found = search::graph_search(graph, vectors, opts, allowed.as_deref());
            return Ok((found, Method::Hnsw));
        }
        let found = search::exact(&self.flat, vectors, opts.k.max(1), allowed.as_deref());
        Ok((found, Method::Exact))
    }
}
