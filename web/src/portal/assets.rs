//! The portal's static files, built into the binary and served under a name that carries a
//! hash of their content (`/static/portal.3f2a1b9c.css`), so browsers may keep them for a
//! year: a new build changes the name, never the bytes behind a name.

use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::AppState;

struct Asset {
    /// The name templates ask for.
    name: &'static str,
    bytes: &'static [u8],
    content_type: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "portal.css",
        bytes: include_bytes!("../../assets/portal.css"),
        content_type: "text/css; charset=utf-8",
    },
    // htmx 2.0.11 from npm, unchanged (web/assets/vendor/README.md).
    Asset {
        name: "htmx.js",
        bytes: include_bytes!("../../assets/vendor/htmx.min.js"),
        content_type: "text/javascript; charset=utf-8",
    },
];

/// Each asset with its served file name (`portal.<hash>.css`).
static SERVED: LazyLock<Vec<(String, &'static Asset)>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let hash = hex::encode(&Sha256::digest(asset.bytes)[..4]);
            let file = match asset.name.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
                None => format!("{}.{hash}", asset.name),
            };
            (file, asset)
        })
        .collect()
});

/// The URL of asset `name` (`/static/portal.<hash>.css`).
pub(crate) fn url(name: &str) -> String {
    SERVED
        .iter()
        .find(|(_, a)| a.name == name)
        .map(|(file, _)| format!("/static/{file}"))
        .unwrap_or_else(|| format!("/static/{name}"))
}

/// `GET /static/{file}`: an asset (or the instance's logo) by its hashed name, cacheable for a
/// year.
pub(crate) async fn get(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    let (bytes, content_type): (Vec<u8>, &'static str) =
        match SERVED.iter().find(|(f, _)| *f == file) {
            Some((_, asset)) => (asset.bytes.to_vec(), asset.content_type),
            None => match &state.options.logo {
                Some(logo) if logo.file() == file => (logo.bytes().to_vec(), logo.content_type()),
                _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
            },
        };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // An SVG opened on its own runs nothing and loads nothing.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_asset_is_named_by_its_content() {
        let css = url("portal.css");
        let hash = css
            .strip_prefix("/static/portal.")
            .and_then(|rest| rest.strip_suffix(".css"))
            .unwrap_or_default();
        assert_eq!(hash.len(), 8, "{css}");
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{css}");
    }
}
