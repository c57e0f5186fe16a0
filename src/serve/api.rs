//! The JSON API: queries and classification (by upload or by id), image
//! records and their files, status, anomalies and duplicate groups.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{blocking, compute, ApiError, App};
use crate::anomaly::{self, AnomalyError, AnomalyOptions, Select};
use crate::classify::{self, ClassifyError, ClassifyOptions};
use crate::filter::Filter;
use crate::imageio;
use crate::prepare;
use crate::search::{self, QueryOptions};

/// Neighbours returned when a request does not say.
const DEFAULT_K: usize = 12;
/// Most neighbours one request may ask for.
const MAX_K: usize = 1000;
/// Longest side of a thumbnail, in pixels (smaller images are sent as is).
const THUMBNAIL_SIDE: u32 = 160;

type Shared = State<Arc<App>>;

pub async fn healthz() -> &'static str {
    "ok"
}

/// Unknown routes. A path that climbs (`..`) is logged as an attempt to
/// reach outside what is served.
pub async fn not_found(uri: Uri) -> ApiError {
    let decoded = percent_decode(uri.path());
    if decoded.split(['/', '\\']).any(|seg| seg == "..") {
        tracing::warn!(path = %uri.path(), "refused a path traversal attempt");
    }
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub async fn status(State(app): Shared) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let status = app.index.status()?;
        Ok(Json(json!({
            "status": status,
            "graph_loaded": app.index.ann().loaded_graph().is_some(),
            "jobs": app.jobs.summary(),
            "uptime_seconds": app.started.elapsed().as_secs(),
            "version": env!("CARGO_PKG_VERSION"),
        })))
    })
    .await
}

/// Search settings, from the JSON body, multipart fields or the URL query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Query by an indexed image instead of an upload.
    id: Option<u64>,
    k: Option<usize>,
    under: Option<PathBuf>,
    label: Option<String>,
    exact: Option<bool>,
}

/// What a query or classification is about.
enum Subject {
    Id(u64),
    Upload { name: String, bytes: Bytes },
}

/// Reads a query request: `application/json` (`{"id": N, ...}`) or
/// `multipart/form-data` (an `image` file field, and optional `k`, `under`,
/// `label`, `exact` fields); settings may also come in the URL query.
async fn read_subject(req: Request) -> Result<(Subject, Params), ApiError> {
    let mut params = match req.uri().query() {
        Some(q) => {
            Query::<Params>::try_from_uri(req.uri())
                .map_err(|e| {
                    ApiError::bad_request(format!("query string `{q}`: {}", e.body_text()))
                })?
                .0
        }
        None => Params::default(),
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut upload = None;
    if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, &()).await.map_err(|e| {
            ApiError::new(e.status(), format!("malformed upload: {}", e.body_text()))
        })?;
        while let Some(field) = form.next_field().await? {
            let name = field.name().unwrap_or("").to_string();
            match name.as_str() {
                "image" => {
                    let file = field.file_name().unwrap_or("upload").to_string();
                    upload = Some((file, field.bytes().await?));
                }
                "k" | "id" | "under" | "label" | "exact" => {
                    let text = field.text().await?;
                    set_param(&mut params, &name, text.trim())?;
                }
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown form field `{other}` (expected image, k, id, under, label, exact)"
                    )))
                }
            }
        }
    } else if content_type.starts_with("application/json") {
        let Json(body) = Json::<Params>::from_request(req, &())
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        params = Params {
            id: body.id.or(params.id),
            k: body.k.or(params.k),
            under: body.under.or(params.under),
            label: body.label.or(params.label),
            exact: body.exact.or(params.exact),
        };
    } else if !content_type.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type `{content_type}`: send multipart/form-data with an `image` file, or JSON {{\"id\": N}}"),
        ));
    }
    let subject = match (upload, params.id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "send either an image or an id, not both",
            ))
        }
        (Some((name, bytes)), None) => Subject::Upload { name, bytes },
        (None, Some(id)) => Subject::Id(id),
        (None, None) => {
            return Err(ApiError::bad_request(
                "nothing to search for: upload an `image` file field, or send {\"id\": N}",
            ))
        }
    };
    if params.k.is_some_and(|k| k == 0 || k > MAX_K) {
        return Err(ApiError::bad_request(format!("k must be 1 to {MAX_K}")));
    }
    Ok((subject, params))
}

fn set_param(params: &mut Params, name: &str, value: &str) -> Result<(), ApiError> {
    let bad =
        |what: &str| ApiError::bad_request(format!("field `{name}`: `{value}` is not {what}"));
    match name {
        "k" => params.k = Some(value.parse().map_err(|_| bad("a count"))?),
        "id" => params.id = Some(value.parse().map_err(|_| bad("an image id"))?),
        "under" if !value.is_empty() => params.under = Some(PathBuf::from(value)),
        "label" if !value.is_empty() => params.label = Some(value.to_string()),
        "exact" => params.exact = Some(matches!(value, "true" | "1" | "on")),
        _ => {}
    }
    Ok(())
}

/// A subject's embedding, what to say about it, and its content hash.
struct Embedded {
    latent: Vec<f32>,
    about: Value,
    hash: [u8; 32],
    /// The indexed image it is, when queried by id.
    id: Option<u64>,
}

impl Embedded {
    /// The ids that are the same image (its record and byte-identical
    /// copies): they may not vote on it.
    fn copies(&self, app: &App) -> Vec<u64> {
        classify::copies(&app.index.store, Some(&self.hash), self.id)
    }
}

fn latent_of(app: &App, subject: &Subject) -> Result<Embedded, ApiError> {
    let index = &app.index;
    match subject {
        Subject::Id(id) => {
            let record = index
                .store
                .record(*id)?
                .ok_or_else(|| ApiError::not_found(format!("no image with id {id}")))?;
            let latent = index
                .ann()
                .flat
                .get(*id)
                .ok_or_else(|| ApiError::not_found(format!("no image with id {id}")))?;
            let about = json!({ "id": id, "path": record.path_buf() });
            Ok(Embedded {
                latent,
                about,
                hash: record.hash,
                id: Some(*id),
            })
        }
        Subject::Upload { name, bytes } => {
            let image = prepare::decode(
                bytes,
                Path::new(name),
                index.model.input_shape(),
                app.opts.limits,
            )
            .map_err(ApiError::image)?;
            let latent = index
                .model
                .embed(&[image.pixels])?
                .pop()
                .ok_or_else(|| ApiError::internal("the model returned no embedding"))?;
            let about = json!({
                "upload": name,
                "bytes": bytes.len(),
                "width": image.width,
                "height": image.height,
            });
            Ok(Embedded {
                latent,
                about,
                hash: prepare::content_hash(bytes),
                id: None,
            })
        }
    }
}

#[derive(Serialize)]
struct Timed<T: Serialize> {
    query: Value,
    #[serde(flatten)]
    body: T,
    method: search::Method,
    took_ms: f64,
}

pub async fn query(State(app): Shared, req: Request) -> Result<Response, ApiError> {
    let (subject, params) = read_subject(req).await?;
    compute(move || {
        let t = Instant::now();
        let Embedded { latent, about, .. } = latent_of(&app, &subject)?;
        let opts = QueryOptions {
            k: params.k.unwrap_or(DEFAULT_K),
            filter: Filter {
                under: params.under,
                label: params.label,
                labelled: false,
            },
            exact: params.exact.unwrap_or(false),
            ..Default::default()
        };
        let (hits, method) = search::nearest(&app.index, &latent, &opts)?;
        Ok(Json(Timed {
            query: about,
            body: json!({ "hits": hits }),
            method,
            took_ms: t.elapsed().as_secs_f64() * 1e3,
        })
        .into_response())
    })
    .await
}

pub async fn classify(State(app): Shared, req: Request) -> Result<Response, ApiError> {
    let (subject, params) = read_subject(req).await?;
    if params.under.is_some() || params.label.is_some() {
        return Err(ApiError::bad_request(
            "classify takes no `under` or `label` filter: every labelled image votes",
        ));
    }
    compute(move || {
        let t = Instant::now();
        let embedded = latent_of(&app, &subject)?;
        let same = embedded.copies(&app);
        let Embedded { latent, about, .. } = embedded;
        let opts = ClassifyOptions {
            k: params.k.unwrap_or(classify::DEFAULT_K),
            exact: params.exact.unwrap_or(false),
            ..Default::default()
        };
        let (mut predictions, method) = classify::classify(&app.index, &[latent], &[same], &opts)
            .map_err(|e| match e {
            ClassifyError::NoLabels => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            other => ApiError::internal(other.to_string()),
        })?;
        let prediction = predictions.pop().expect("one per latent");
        Ok(Json(Timed {
            query: about,
            body: json!({ "prediction": prediction }),
            method,
            took_ms: t.elapsed().as_secs_f64() * 1e3,
        })
        .into_response())
    })
    .await
}

fn record(app: &App, id: u64) -> Result<crate::store::Record, ApiError> {
    app.index
        .store
        .record(id)?
        .ok_or_else(|| ApiError::not_found(format!("no image with id {id}")))
}

fn parse_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| {
        if percent_decode(raw).contains("..") || raw.contains('/') {
            tracing::warn!(id = raw, "refused a path traversal attempt");
        }
        ApiError::bad_request(format!("`{raw}` is not an image id"))
    })
}

pub async fn image(
    State(app): Shared,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    blocking(move || {
        let rec = record(&app, id)?;
        Ok(Json(json!({
            "id": id,
            "path": rec.path_buf(),
            "label": rec.label,
            "width": rec.width,
            "height": rec.height,
            "bytes": rec.size,
            "blake3": hex(&rec.hash),
            "reconstruction_error": rec.recon_error,
            "ingested_at": rec.ingested_at,
            "thumbnail": format!("/api/images/{id}/thumbnail"),
            "file": format!("/api/images/{id}/file"),
        })))
    })
    .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The indexed file's bytes, if they are still the bytes that were indexed.
/// Only paths held by a record are ever read.
fn indexed_bytes(app: &App, id: u64) -> Result<(crate::store::Record, Vec<u8>), ApiError> {
    let rec = record(app, id)?;
    let path = rec.path_buf();
    // The file must still lie under a folder the index holds: an indexed
    // file (or a folder above it) swapped for a link to elsewhere is not
    // served, whatever it points to.
    let resolved = std::fs::canonicalize(&path).map_err(|e| {
        let why = match e.kind() {
            // Records imported from shards keep the paths of the machine
            // that embedded them.
            std::io::ErrorKind::NotFound => {
                "is not on this machine (imported from a shard made elsewhere, or removed since)"
                    .to_string()
            }
            _ => format!("cannot be read: {e}"),
        };
        ApiError::new(
            StatusCode::GONE,
            format!("image {id} ({}) {why}", path.display()),
        )
    })?;
    let roots = app.index.store.roots()?;
    if !roots.iter().any(|root| resolved.starts_with(root)) {
        tracing::warn!(id, path = %path.display(), resolved = %resolved.display(), "refused to serve a file that resolves outside the index's folders");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "image {id} ({}) now resolves to {}, outside the folders this index holds",
                path.display(),
                resolved.display()
            ),
        ));
    }
    // Never blocks: a FIFO put in an indexed file's place is refused.
    let bytes = imageio::read_file(&path).map_err(|e| {
        ApiError::new(
            StatusCode::GONE,
            format!(
                "image {id} ({}) cannot be read: {}",
                path.display(),
                e.reason()
            ),
        )
    })?;
    if prepare::content_hash(&bytes) != rec.hash {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "image {id} ({}) changed on disk since it was indexed; ingest its folder again",
                path.display()
            ),
        ));
    }
    Ok((rec, bytes))
}

pub async fn file(State(app): Shared, UrlPath(id): UrlPath<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    blocking(move || {
        let (rec, bytes) = indexed_bytes(&app, id)?;
        let kind = content_type(&rec.path_buf());
        Ok(cached(kind, bytes))
    })
    .await
}

pub async fn thumbnail(
    State(app): Shared,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    blocking(move || {
        let (rec, bytes) = match indexed_bytes(&app, id) {
            Ok(found) => found,
            Err(gone) if gone.status == StatusCode::GONE => {
                return reconstructed_thumbnail(&app, id).map(|png| png.ok_or(gone))?;
            }
            Err(e) => return Err(e),
        };
        let fits = imageio::DecodeSize::Cover {
            side: THUMBNAIL_SIDE,
            prep: imageio::Prep::Letterbox,
        };
        let image = imageio::decode_at(&bytes, &rec.path_buf(), app.opts.limits, fits)
            .map_err(ApiError::image)?
            .image;
        let image = if image.width() > THUMBNAIL_SIDE || image.height() > THUMBNAIL_SIDE {
            image.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE)
        } else {
            image
        };
        let mut png = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| ApiError::internal(format!("encoding thumbnail {id}: {e}")))?;
        Ok(cached("image/png", png.into_inner()))
    })
    .await
}

/// For an image whose file is gone (not on this machine): what the decoder
/// makes of its stored latent, at the original's aspect ratio, marked
/// `X-Imgsearch-Reconstructed: 1`. `None` when the file still exists but
/// cannot be read (a FIFO in its place, say), or when the index stores
/// head embeddings rather than latents (`photos`), which cannot be decoded.
fn reconstructed_thumbnail(app: &App, id: u64) -> Result<Option<Response>, ApiError> {
    let rec = record(app, id)?;
    let model = &app.index.model;
    let path = rec.path_buf();
    if std::fs::symlink_metadata(&path).is_ok() || !model.embeds_latents() {
        return Ok(None);
    }
    let Some(latent) = app.index.store.vector(id)? else {
        return Ok(None);
    };
    let decoded = model
        .decode(&[latent])
        .map_err(|e| ApiError::internal(format!("decoding image {id}'s latent: {e}")))?
        .remove(0);
    let mut image = imageio::planar_to_image(&decoded.data, decoded.size, decoded.channels);
    let (w, h) = (rec.width.max(1) as f64, rec.height.max(1) as f64);
    let scale = (THUMBNAIL_SIDE as f64 / w.max(h)).min(1.0);
    let (tw, th) = ((w * scale).round().max(1.0), (h * scale).round().max(1.0));
    image = image.resize_exact(
        tw as u32,
        th as u32,
        image::imageops::FilterType::CatmullRom,
    );
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| ApiError::internal(format!("encoding thumbnail {id}: {e}")))?;
    let mut response = png.into_inner().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    // The file may come back: not cached.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-imgsearch-reconstructed", HeaderValue::from_static("1"));
    Ok(Some(response))
}

fn cached(kind: &'static str, bytes: Vec<u8>) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // An id always names the same content (changed files get new ids).
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("bmp") => "image/bmp",
        Some("tif" | "tiff") => "image/tiff",
        _ => "application/octet-stream",
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyParams {
    top: Option<usize>,
    under: Option<PathBuf>,
    label: Option<String>,
    by_label: Option<bool>,
}

pub async fn anomalies(
    State(app): Shared,
    params: Result<Query<AnomalyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    blocking(move || {
        let opts = AnomalyOptions {
            by_label: params.by_label.unwrap_or(false),
            filter: Filter {
                under: params.under,
                label: params.label,
                labelled: false,
            },
            ..Default::default()
        };
        let top = params.top.unwrap_or(20).min(MAX_K);
        match anomaly::rank(&app.index, &opts, &crate::progress::NoProgress) {
            Ok(ranking) => Ok(Json(json!({
                "models": ranking.models,
                "by_label": ranking.by_label,
                "scored": ranking.images.len(),
                "images": ranking.select(Select::Top(top)),
            }))),
            Err(AnomalyError::Empty) => Ok(Json(json!({ "scored": 0, "images": [] }))),
            Err(e) => Err(ApiError::internal(e.to_string())),
        }
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuplicateParams {
    /// Latent distance; default: the model's measured threshold.
    threshold: Option<f32>,
}

pub async fn duplicates(
    State(app): Shared,
    params: Result<Query<DuplicateParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if params.threshold.is_some_and(|t| t.is_nan() || t < 0.0) {
        return Err(ApiError::bad_request("threshold must be 0 or more"));
    }
    blocking(move || {
        let threshold = params
            .threshold
            .unwrap_or_else(|| crate::duplicates::default_threshold(&app.index.model));
        let groups = crate::duplicates::duplicates(&app.index, threshold, 8)?;
        Ok(Json(json!({ "threshold": threshold, "groups": groups })))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_exposes_climbing_paths() {
        assert_eq!(percent_decode("/a/..%2F..%2fetc"), "/a/../../etc");
        assert_eq!(percent_decode("%2e%2E/x"), "../x");
        // Malformed escapes stay as they are.
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn files_are_served_with_their_type() {
        assert_eq!(content_type(Path::new("a/b.PNG")), "image/png");
        assert_eq!(content_type(Path::new("b.jpeg")), "image/jpeg");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}
