//! The shard file: one Parquet file (arrow-rs), one row per image, the
//! model and shard in its key-value metadata. The column names are the ones
//! autofaiss and embedding-reader expect (`embedding`), so pandas, polars,
//! DuckDB and Spark read the vectors as they are.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::types::Float32Type;
use arrow_array::{
    Array, Float32Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::{Shard, ShardError};
use crate::model::Model;

/// The columns, in order.
pub const COLUMNS: [&str; 9] = [
    "path",
    "blake3",
    "size",
    "mtime",
    "width",
    "height",
    "label",
    "embedding",
    "recon_error",
];

/// One embedded image.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardRow {
    /// Absolute (written as text: a name that is not UTF-8 is written lossily).
    pub path: PathBuf,
    pub blake3: [u8; 32],
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub width: u32,
    pub height: u32,
    /// The parent folder's name below the folder given, as ingest labels.
    pub label: Option<String>,
    pub embedding: Vec<f32>,
    pub recon_error: f32,
}

/// What a shard file says about itself (its key-value metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMeta {
    pub model: String,
    pub fingerprint: String,
    pub latent: usize,
    pub prep: String,
    pub version: String,
    pub shard: Shard,
    /// The folders embedded (those given, not files named one by one): an
    /// index imported from the shard records them as its roots, as ingest
    /// does, so `reindex` and `status` know them.
    pub roots: Vec<PathBuf>,
}

impl ShardMeta {
    pub fn of(model: &Model, shard: Shard, roots: &[PathBuf]) -> Self {
        Self {
            model: model.name.clone(),
            fingerprint: model.fingerprint.clone(),
            latent: model.embedding_dim(),
            prep: model.input_shape().prep.as_str().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            shard,
            roots: roots.to_vec(),
        }
    }

    fn key_values(&self) -> Vec<KeyValue> {
        [
            ("imgsearch.model", self.model.clone()),
            ("imgsearch.fingerprint", self.fingerprint.clone()),
            ("imgsearch.latent", self.latent.to_string()),
            ("imgsearch.prep", self.prep.clone()),
            ("imgsearch.version", self.version.clone()),
            (
                "imgsearch.shard",
                format!("{}/{}", self.shard.index, self.shard.count),
            ),
            ("imgsearch.roots", roots_json(&self.roots)),
        ]
        .into_iter()
        .map(|(k, v)| KeyValue::new(k.to_string(), v))
        .collect()
    }

    fn from_key_values(pairs: &[KeyValue]) -> Option<Self> {
        let get = |key: &str| {
            pairs
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.clone())
        };
        Some(Self {
            model: get("imgsearch.model")?,
            fingerprint: get("imgsearch.fingerprint")?,
            latent: get("imgsearch.latent")?.parse().ok()?,
            prep: get("imgsearch.prep")?,
            version: get("imgsearch.version")?,
            shard: get("imgsearch.shard")?.parse().ok()?,
            roots: match get("imgsearch.roots") {
                Some(json) => serde_json::from_str::<Vec<String>>(&json)
                    .ok()?
                    .into_iter()
                    .map(PathBuf::from)
                    .collect(),
                None => Vec::new(),
            },
        })
    }
}

/// The roots as a JSON array of strings (lossy for names that are not UTF-8,
/// like the `path` column).
fn roots_json(roots: &[PathBuf]) -> String {
    let names: Vec<String> = roots
        .iter()
        .map(|r| r.to_string_lossy().into_owned())
        .collect();
    serde_json::to_string(&names).expect("strings serialize")
}

fn schema() -> SchemaRef {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("blake3", DataType::Utf8, false),
        Field::new("size", DataType::Int64, false),
        Field::new("mtime", DataType::Int64, false),
        Field::new("width", DataType::Int32, false),
        Field::new("height", DataType::Int32, false),
        Field::new("label", DataType::Utf8, true),
        Field::new("embedding", DataType::List(item), false),
        Field::new("recon_error", DataType::Float32, false),
    ]))
}

fn parquet_err(path: &Path, e: impl std::fmt::Display) -> ShardError {
    ShardError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes rows as row groups; [`Writer::finish`] writes the footer.
pub(super) struct Writer<'a, W: Write + Send> {
    inner: ArrowWriter<W>,
    path: &'a Path,
    rows: u64,
}

impl<'a, W: Write + Send> Writer<'a, W> {
    pub(super) fn new(out: W, meta: &ShardMeta, path: &'a Path) -> Result<Self, ShardError> {
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(meta.key_values()))
            .build();
        let inner =
            ArrowWriter::try_new(out, schema(), Some(props)).map_err(|e| parquet_err(path, e))?;
        Ok(Self {
            inner,
            path,
            rows: 0,
        })
    }

    pub(super) fn write(&mut self, rows: &[ShardRow]) -> Result<(), ShardError> {
        if rows.is_empty() {
            return Ok(());
        }
        let text = |f: &dyn Fn(&ShardRow) -> String| -> StringArray {
            rows.iter().map(|r| Some(f(r))).collect()
        };
        let columns: Vec<Arc<dyn Array>> = vec![
            Arc::new(text(&|r| r.path.to_string_lossy().into_owned())),
            Arc::new(text(&|r| hex(&r.blake3))),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.size as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.mtime_ns),
            )),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| r.width as i32),
            )),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| r.height as i32),
            )),
            Arc::new(
                rows.iter()
                    .map(|r| r.label.clone())
                    .collect::<StringArray>(),
            ),
            Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(
                rows.iter()
                    .map(|r| Some(r.embedding.iter().copied().map(Some))),
            )),
            Arc::new(Float32Array::from_iter_values(
                rows.iter().map(|r| r.recon_error),
            )),
        ];
        let batch =
            RecordBatch::try_new(schema(), columns).map_err(|e| parquet_err(self.path, e))?;
        self.inner
            .write(&batch)
            .map_err(|e| parquet_err(self.path, e))?;
        // One row group per call, so a crash mid-file loses at most the
        // file (it is renamed into place only when finished).
        self.inner.flush().map_err(|e| parquet_err(self.path, e))?;
        self.rows += rows.len() as u64;
        Ok(())
    }

    /// Writes the footer; returns the number of rows.
    pub(super) fn finish(self) -> Result<u64, ShardError> {
        self.inner.close().map_err(|e| parquet_err(self.path, e))?;
        Ok(self.rows)
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, ShardError> {
    let file = File::open(path).map_err(|source| ShardError::Input {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| parquet_err(path, e))
}

fn meta_of(
    builder: &ParquetRecordBatchReaderBuilder<File>,
    path: &Path,
) -> Result<(ShardMeta, u64), ShardError> {
    let file_meta = builder.metadata().file_metadata();
    let meta = file_meta
        .key_value_metadata()
        .and_then(|kv| ShardMeta::from_key_values(kv))
        .ok_or_else(|| parquet_err(path, "not an imgsearch shard (no imgsearch.* metadata)"))?;
    Ok((meta, file_meta.num_rows() as u64))
}

/// A shard file's metadata and row count, from its footer alone.
pub(super) fn read_meta(path: &Path) -> Result<(ShardMeta, u64), ShardError> {
    meta_of(&open(path)?, path)
}

/// A shard file read one row group at a time, so a file of any size is
/// imported in bounded memory.
pub struct ShardReader {
    pub meta: ShardMeta,
    /// Rows in the whole file (from its footer).
    pub rows: u64,
    batches: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    path: PathBuf,
}

impl ShardReader {
    /// Opens a shard, checking its metadata and columns (not yet its rows).
    pub fn open(path: &Path) -> Result<Self, ShardError> {
        let builder = open(path)?;
        let (meta, rows) = meta_of(&builder, path)?;
        let fields = builder.schema().fields();
        if fields.len() != COLUMNS.len() || fields.iter().zip(COLUMNS).any(|(f, n)| f.name() != n) {
            return Err(parquet_err(path, format!("columns are not {COLUMNS:?}")));
        }
        let batches = builder.build().map_err(|e| parquet_err(path, e))?;
        Ok(Self {
            meta,
            rows,
            batches,
            path: path.to_path_buf(),
        })
    }

    fn rows_of(&self, batch: &RecordBatch) -> Result<Vec<ShardRow>, ShardError> {
        let path = &self.path;
        let bad = |what: &str| parquet_err(path, format!("column `{what}` has an unexpected type"));
        let col = |i: usize| batch.column(i).as_any();
        let strings = |i: usize| {
            col(i)
                .downcast_ref::<StringArray>()
                .ok_or_else(|| bad(COLUMNS[i]))
        };
        let (paths, hashes, labels) = (strings(0)?, strings(1)?, strings(6)?);
        let int64 = |i: usize| {
            col(i)
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| bad(COLUMNS[i]))
        };
        let int32 = |i: usize| {
            col(i)
                .downcast_ref::<Int32Array>()
                .ok_or_else(|| bad(COLUMNS[i]))
        };
        let (sizes, mtimes, widths, heights) = (int64(2)?, int64(3)?, int32(4)?, int32(5)?);
        let embeddings = col(7)
            .downcast_ref::<ListArray>()
            .ok_or_else(|| bad("embedding"))?;
        let errors = col(8)
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| bad("recon_error"))?;
        let values = embeddings
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| bad("embedding"))?;
        let offsets = embeddings.value_offsets();
        (0..batch.num_rows())
            .map(|i| {
                let embedding = &values.values()[offsets[i] as usize..offsets[i + 1] as usize];
                if embedding.len() != self.meta.latent {
                    return Err(parquet_err(
                        path,
                        format!(
                            "row {i} has {} floats, the shard says {}",
                            embedding.len(),
                            self.meta.latent
                        ),
                    ));
                }
                Ok(ShardRow {
                    path: PathBuf::from(paths.value(i)),
                    blake3: unhex(hashes.value(i)).ok_or_else(|| bad("blake3"))?,
                    size: sizes.value(i) as u64,
                    mtime_ns: mtimes.value(i),
                    width: widths.value(i) as u32,
                    height: heights.value(i) as u32,
                    label: (!labels.is_null(i)).then(|| labels.value(i).to_string()),
                    embedding: embedding.to_vec(),
                    recon_error: errors.value(i),
                })
            })
            .collect()
    }
}

impl Iterator for ShardReader {
    type Item = Result<Vec<ShardRow>, ShardError>;

    /// The next row group's rows.
    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.batches.next()?;
        Some(
            batch
                .map_err(|e| parquet_err(&self.path, e))
                .and_then(|batch| self.rows_of(&batch)),
        )
    }
}

/// A whole shard file: its metadata and rows.
pub fn read_shard(path: &Path) -> Result<(ShardMeta, Vec<ShardRow>), ShardError> {
    let mut reader = ShardReader::open(path)?;
    let mut rows = Vec::new();
    for batch in reader.by_ref() {
        rows.extend(batch?);
    }
    Ok((reader.meta, rows))
}
