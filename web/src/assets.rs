//! The static files of the web pages (style sheet, script, icon), compiled
//! into the binary: the hospital LAN may have no WAN, so nothing is fetched
//! from anywhere else.
//!
//! Each file is served under a name that carries a digest of its content
//! (`/assets/app.3f9c0a1b2d.css`), with `Cache-Control: immutable` for a
//! year: a browser keeps it until a new binary ships a new name. A request
//! for the plain name (`/assets/app.css`) is redirected to the current one.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use ring::digest;

use crate::Problem;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// The plain name (`app.css`).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// The bytes.
    pub bytes: &'static [u8],
    /// The name served, with the content digest (`app.<10 hex>.css`).
    pub hashed: String,
    /// The strong `ETag`.
    pub etag: String,
}

const FILES: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("../assets/icon.svg"),
    ),
];

/// Every embedded file.
pub fn all() -> &'static [Asset] {
    static ALL: OnceLock<Vec<Asset>> = OnceLock::new();
    ALL.get_or_init(|| {
        FILES
            .iter()
            .map(|(name, content_type, bytes)| {
                let d = digest::digest(&digest::SHA256, bytes);
                let hex = hms_domain::event::to_hex(&d.as_ref()[..5]);
                let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
                Asset {
                    name,
                    content_type,
                    bytes,
                    hashed: format!("{stem}.{hex}.{ext}"),
                    etag: format!("\"{hex}\""),
                }
            })
            .collect()
    })
}

/// The URL of the embedded file `name` (`/assets/app.<digest>.css`).
///
/// # Panics
/// When no file of that name is embedded (a programming error, caught by
/// the tests of every page).
pub fn url(name: &str) -> String {
    let a = all()
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no embedded asset {name}"));
    format!("/assets/{}", a.hashed)
}

/// `GET /assets/{file}`: an embedded file by its hashed name (cached for a
/// year), or a redirect from its plain name; 404 problem otherwise.
pub async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if let Some(a) = all().iter().find(|a| a.hashed == file) {
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == a.etag.as_bytes());
        let cache = [
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
            (
                header::ETAG,
                HeaderValue::from_str(&a.etag).unwrap_or(HeaderValue::from_static("\"\"")),
            ),
        ];
        if fresh {
            return (StatusCode::NOT_MODIFIED, cache).into_response();
        }
        return (
            cache,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            )],
            a.bytes,
        )
            .into_response();
    }
    if let Some(a) = all().iter().find(|a| a.name == file) {
        return Redirect::to(&format!("/assets/{}", a.hashed)).into_response();
    }
    Problem::new(
        StatusCode::NOT_FOUND,
        "no-such-asset",
        "Not found",
        "no such file among the page assets",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_digest_of_the_content() {
        for a in all() {
            assert!(a.hashed.starts_with(a.name.rsplit_once('.').unwrap().0));
            assert_eq!(a.hashed.len(), a.name.len() + 11, "{}", a.hashed);
            assert!(!a.bytes.is_empty());
        }
        assert!(url("app.css").starts_with("/assets/app."));
        assert!(url("app.css").ends_with(".css"));
    }
}
