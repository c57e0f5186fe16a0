//! Latent export: every indexed image's embedding with its path, label and
//! reconstruction error, for pandas, numpy or sklearn.
//!
//! - `csv`: `id,path,label,recon_error,z0,…,z{d-1}`, one row per image
//!   (RFC 4180 quoting).
//! - `jsonl`: one JSON object per line with the same fields, `latent` as an
//!   array.
//! - `npy`: the latents as a little-endian float32 matrix `(images, d)`
//!   (NumPy format 1.0), plus `FILE.rows.csv` beside it naming each row
//!   (`row,id,path,label,recon_error`).
//!
//! - `parquet`: the schema of embedding shards ([`crate::shards`]): path,
//!   blake3, size, mtime, width, height, label, embedding, recon_error, and
//!   the model in the file's metadata, so `import` reads it back into an
//!   index and other tools read it as it is.
//!
//! Files are written to a temporary name and renamed when complete, so an
//! interrupted export never leaves a half file under the final name.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::filter::Filter;
use crate::index::Index;
use crate::shards::{Shard, ShardError, ShardMeta, ShardRow};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing {path}: {error}")]
    Write {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error(transparent)]
    Parquet(#[from] ShardError),
    #[error("record {id} has no stored latent (the store is inconsistent; run `imgsearch ingest` again on its folder)")]
    MissingVector { id: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    #[default]
    Jsonl,
    Npy,
    Parquet,
}

/// One exported image.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: u64,
    #[serde(serialize_with = "crate::fsutil::serialize_lossy")]
    pub path: PathBuf,
    pub label: Option<String>,
    pub recon_error: f32,
    pub latent: Vec<f32>,
    /// What only the Parquet format carries.
    #[serde(skip)]
    pub file: FileFacts,
}

/// The file an image was read from, as its record holds it.
#[derive(Debug, Clone, Default)]
pub struct FileFacts {
    pub blake3: [u8; 32],
    pub size: u64,
    pub mtime_ns: u64,
    pub width: u32,
    pub height: u32,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub format: Format,
    pub images: usize,
    pub dim: usize,
    /// Files written (`<stdout>` for standard output).
    pub files: Vec<String>,
}

/// The selected images in id order.
pub fn rows<'a>(
    index: &'a Index,
    filter: &Filter,
) -> Result<impl Iterator<Item = Result<Row, ExportError>> + 'a, ExportError> {
    let store = &index.store;
    let records = filter.records(store)?;
    Ok(records.map(move |r| {
        let (id, rec) = r?;
        let latent = store.vector(id)?.ok_or(ExportError::MissingVector { id })?;
        Ok(Row {
            id,
            path: rec.path_buf(),
            label: rec.label,
            recon_error: rec.recon_error,
            latent,
            file: FileFacts {
                blake3: rec.hash,
                size: rec.size,
                mtime_ns: rec.mtime_ns,
                width: rec.width,
                height: rec.height,
            },
        })
    }))
}

/// Writes the rows as `format` to `out` (`None`: standard output, not for
/// `npy` or `parquet`). `index` names the model (and roots) in a Parquet
/// file's metadata.
pub fn export(
    rows: impl Iterator<Item = Result<Row, ExportError>>,
    index: &Index,
    format: Format,
    out: Option<&Path>,
) -> Result<ExportReport, ExportError> {
    let dim = index.model.embedding_dim();
    let Some(out) = out else {
        let stdout = std::io::stdout();
        let mut w = BufWriter::new(stdout.lock());
        let images = write_text(rows, dim, format, &mut w, Path::new("<stdout>"))?;
        w.flush()
            .map_err(|error| write_err(Path::new("<stdout>"), error))?;
        return Ok(ExportReport {
            format,
            images,
            dim,
            files: vec!["<stdout>".into()],
        });
    };
    let mut files = vec![out.display().to_string()];
    let images = match format {
        Format::Csv | Format::Jsonl => atomic(out, |w| write_text(rows, dim, format, w, out))?,
        Format::Npy => {
            let side = sidecar(out);
            let mut names = Vec::new();
            let n = atomic(out, |w| write_npy(rows, dim, w, out, &mut names))?;
            atomic(&side, |w| {
                write_line(
                    w,
                    &side,
                    &["row", "id", "path", "label", "recon_error"].map(String::from),
                )?;
                for (row, (id, path, label, err)) in names.iter().enumerate() {
                    let fields = [
                        row.to_string(),
                        id.to_string(),
                        path.to_string_lossy().into_owned(),
                        label.clone().unwrap_or_default(),
                        err.to_string(),
                    ];
                    write_line(w, &side, &fields)?;
                }
                Ok(())
            })?;
            files.push(side.display().to_string());
            n
        }
        Format::Parquet => {
            let meta = ShardMeta::of(&index.model, Shard::ALL, &index.store.roots()?);
            let rows = rows.map(|row| {
                row.map(|row| ShardRow {
                    path: row.path,
                    blake3: row.file.blake3,
                    size: row.file.size,
                    mtime_ns: row.file.mtime_ns as i64,
                    width: row.file.width,
                    height: row.file.height,
                    label: row.label,
                    embedding: row.latent,
                    recon_error: row.recon_error,
                })
            });
            crate::shards::write_shard_file(out, &meta, rows)?
        }
    };
    Ok(ExportReport {
        format,
        images,
        dim,
        files,
    })
}

/// Where the row names of an `npy` export go: `latents.npy` → `latents.rows.csv`.
pub fn sidecar(npy: &Path) -> PathBuf {
    npy.with_extension("rows.csv")
}

fn write_text(
    rows: impl Iterator<Item = Result<Row, ExportError>>,
    dim: usize,
    format: Format,
    w: &mut dyn Write,
    path: &Path,
) -> Result<usize, ExportError> {
    let mut n = 0;
    if format == Format::Csv {
        let mut header: Vec<String> = ["id", "path", "label", "recon_error"]
            .map(String::from)
            .to_vec();
        header.extend((0..dim).map(|i| format!("z{i}")));
        write_line(w, path, &header)?;
    }
    for row in rows {
        let row = row?;
        match format {
            Format::Csv => {
                let mut fields = vec![
                    row.id.to_string(),
                    row.path.to_string_lossy().into_owned(),
                    row.label.unwrap_or_default(),
                    row.recon_error.to_string(),
                ];
                fields.extend(row.latent.iter().map(f32::to_string));
                write_line(w, path, &fields)?;
            }
            _ => {
                let line = serde_json::to_string(&row).expect("rows serialize");
                writeln!(w, "{line}").map_err(|error| write_err(path, error))?;
            }
        }
        n += 1;
    }
    Ok(n)
}

type RowName = (u64, PathBuf, Option<String>, f32);

/// NumPy format 1.0: magic, header length, a padded header dict, then the
/// data. The header is written with a placeholder row count, padded to a
/// fixed length, and rewritten once the count is known, so rows stream.
fn write_npy(
    rows: impl Iterator<Item = Result<Row, ExportError>>,
    dim: usize,
    w: &mut BufWriter<File>,
    path: &Path,
    names: &mut Vec<RowName>,
) -> Result<usize, ExportError> {
    let err = |error| write_err(path, error);
    w.write_all(&npy_header(0, dim)).map_err(err)?;
    for row in rows {
        let row = row?;
        for v in &row.latent {
            w.write_all(&v.to_le_bytes()).map_err(err)?;
        }
        names.push((row.id, row.path, row.label, row.recon_error));
    }
    // Seeking a BufWriter flushes it first.
    w.seek(SeekFrom::Start(0)).map_err(err)?;
    w.write_all(&npy_header(names.len(), dim)).map_err(err)?;
    Ok(names.len())
}

/// The header block: always 128 bytes, whatever the shape.
pub fn npy_header(rows: usize, dim: usize) -> Vec<u8> {
    const TOTAL: usize = 128;
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    let len = TOTAL - 10;
    header.extend((len as u16).to_le_bytes());
    header.extend(dict.as_bytes());
    header.resize(TOTAL - 1, b' ');
    header.push(b'\n');
    header
}

fn write_line(w: &mut dyn Write, path: &Path, fields: &[String]) -> Result<(), ExportError> {
    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    writeln!(w, "{}", line.join(",")).map_err(|error| write_err(path, error))
}

/// One CSV field, quoted (RFC 4180) when it holds a comma, quote or line break.
pub fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

/// Writes through `write` into `path.tmp`, then renames it to `path`.
fn atomic<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, ExportError>,
) -> Result<T, ExportError> {
    crate::fsutil::write_atomically(path, write, write_err)
}

fn write_err(path: &Path, error: std::io::Error) -> ExportError {
    ExportError::Write {
        path: path.to_path_buf(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_fixed_length_and_aligned() {
        for (r, d) in [(0, 16), (12_345_678, 128)] {
            let h = npy_header(r, d);
            assert_eq!(h.len(), 128);
            assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
            assert_eq!(u16::from_le_bytes([h[8], h[9]]), 118);
            let text = std::str::from_utf8(&h[10..]).unwrap();
            assert!(text.contains(&format!("'shape': ({r}, {d})")), "{text}");
            assert!(text.ends_with('\n'));
        }
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("a/b.png"), "a/b.png");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
