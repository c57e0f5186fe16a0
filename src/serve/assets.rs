//! The web page and the OpenAPI description, embedded in the binary (no
//! build step, nothing to install beside it).

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::ApiError;

const INDEX_HTML: &str = include_str!("web/index.html");
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("web/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("web/style.css"),
    ),
];
const OPENAPI: &str = include_str!("web/openapi.json");

pub async fn page() -> Response {
    text("text/html; charset=utf-8", INDEX_HTML)
}

pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, kind, body)| text(kind, body))
        .ok_or_else(|| {
            if name.contains("..") {
                tracing::warn!(name, "refused a path traversal attempt");
            }
            ApiError::not_found(format!("no asset `{name}`"))
        })
}

pub async fn openapi() -> Response {
    text("application/json", OPENAPI)
}

fn text(kind: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_is_valid_json_naming_every_route() {
        let spec: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let paths = spec["paths"].as_object().unwrap();
        for route in [
            "/healthz",
            "/api/status",
            "/api/query",
            "/api/classify",
            "/api/ingest",
            "/api/jobs",
            "/api/jobs/{id}",
            "/api/images/{id}",
            "/api/images/{id}/thumbnail",
            "/api/images/{id}/file",
            "/api/anomalies",
            "/api/duplicates",
            "/api/map",
            "/api/clusters",
        ] {
            assert!(paths.contains_key(route), "{route} is not described");
        }
    }
}
