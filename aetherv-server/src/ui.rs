//! The web UI: one page, its script and its style sheet, embedded in the binary.
//!
//! `GET /` answers the page and `GET /ui/{file}` the assets. The UI is plain HTML, CSS and
//! JavaScript without a build step; it talks to the server only through the public REST API
//! and its event streams, so it needs no server-side state. The page itself is public (the
//! router is merged outside authentication); the API calls it makes are authenticated.
//!
//! Invariant: the page loads nothing but these embedded files (no inline script or style), which
//! the `Content-Security-Policy` header enforces.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file under `/ui/`; `index.html` is also served at `/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../ui/index.html"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../ui/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/app.js"),
    },
    Asset {
        name: "vm_day2.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/vm_day2.js"),
    },
    Asset {
        name: "migrate.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/migrate.js"),
    },
    Asset {
        name: "hosts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/hosts.js"),
    },
    Asset {
        name: "maintenance.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../ui/maintenance.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../ui/favicon.svg"),
    },
];

/// The page may load and contact only its own origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The UI routes: `GET /` (the page) and `GET /ui/{file}` (its assets; unknown files answer a
/// 404 [`ApiError`]). Every answer carries `Cache-Control: no-cache`, so a new binary's UI is
/// picked up at once.
pub fn routes<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .route("/ui/{file}", get(asset))
}

/// `GET /`: the page.
#[utoipa::path(get, path = "/", tag = "probes", operation_id = "webUi", summary = "Web UI",
    description = "The single-page web interface.",
    responses((status = 200, description = "HTML page", body = String, content_type = "text/html")))]
async fn index() -> Response {
    match find("index.html") {
        Some(page) => serve(page),
        None => ApiError::internal("the web UI is missing from this build").into_response(),
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    match find(&file) {
        Some(asset) => serve(asset),
        None => ApiError::not_found("UI file", &file).into_response(),
    }
}

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

fn serve(asset: &'static Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if asset.name == "index.html" {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    async fn get_path(path: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let app: Router = routes().into();
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    #[tokio::test]
    async fn serves_page_and_assets_with_types_and_no_cache() {
        for (path, content_type) in [
            ("/", "text/html; charset=utf-8"),
            ("/ui/index.html", "text/html; charset=utf-8"),
            ("/ui/app.js", "text/javascript; charset=utf-8"),
            ("/ui/app.css", "text/css; charset=utf-8"),
            ("/ui/favicon.svg", "image/svg+xml"),
        ] {
            let (status, headers, body) = get_path(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert!(!body.is_empty(), "{path}");
        }
        let (_, headers, page) = get_path("/").await;
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains("/ui/app.js") && page.contains("/ui/app.css"));
    }

    #[tokio::test]
    async fn unknown_file_is_a_json_404() {
        for path in ["/ui/nope.js", "/ui/..%2Fsrc%2Flib.rs", "/ui/APP.JS"] {
            let (status, headers, body) = get_path(path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(
                headers[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json")
            );
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], "not_found", "{path}");
        }
    }

    #[test]
    fn page_references_only_embedded_assets_and_script_never_uses_inner_html() {
        let page = std::str::from_utf8(find("index.html").unwrap().body).unwrap();
        for part in page.split("\"/ui/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(
                find(name).is_some(),
                "index.html references missing /ui/{name}"
            );
        }
        assert!(
            !page.contains("<script>"),
            "inline scripts are refused by the policy"
        );
        assert!(
            !page.contains("style=\""),
            "inline styles are refused by the policy"
        );
        let script = std::str::from_utf8(find("app.js").unwrap().body).unwrap();
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(
                !script.contains(sink),
                "app.js must build the DOM without {sink}"
            );
        }
    }
}
