//! The operator dashboard at `/ui/`: the files `npm run build` writes to
//! `ui/dist` (sources in `ui/src`), embedded in the binary. The page talks
//! to the same API as the CLI, with the token the operator logs in with.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

#[derive(rust_embed::Embed)]
#[folder = "../ui/dist"]
struct Assets;

/// `/ui`: to `/ui/`, where the page's relative paths resolve.
pub(crate) async fn to_index() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `/ui/`: the page.
pub(crate) async fn index() -> Response {
    asset("index.html")
}

/// `/ui/{path}`: a built file.
pub(crate) async fn file(Path(path): Path<String>) -> Response {
    asset(&path)
}

fn asset(path: &str) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, format!("no file {path:?} in the dashboard")).into_response();
    };
    let mut response = file.data.into_owned().into_response();
    let headers = response.headers_mut();
    let mime = file.metadata.mimetype();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(mime).unwrap_or(HeaderValue::from_static("text/plain")));
    // Built files carry their content hash in their name; the page does
    // not, so a new server's page is always the one loaded.
    let cache = if path.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Only its own scripts and styles; the API on the same origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'none'",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_built_files_are_embedded() {
        let index = Assets::get("index.html").expect("ui/dist/index.html: run `npm ci && npm run build` in ui/");
        let page = String::from_utf8_lossy(&index.data).into_owned();
        // Every script and stylesheet the page names is in the binary.
        let referenced: Vec<&str> =
            page.split("/ui/").skip(1).filter_map(|rest| rest.split('"').next()).filter(|p| !p.is_empty()).collect();
        assert!(!referenced.is_empty(), "{page}");
        for path in referenced {
            assert!(Assets::get(path).is_some(), "index.html names {path}, which is not embedded");
        }
    }
}
