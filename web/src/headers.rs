//! Security headers on every response of both servers, pages and API alike:
//! a Content-Security-Policy that allows only this origin's own files (no
//! inline script or style, no frames, forms only to this origin),
//! `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin` (no
//! address of a page leaves for another site; `no-referrer` would also make
//! browsers send `Origin: null` on the pages' own form posts) and
//! `X-Frame-Options: DENY` for browsers that predate `frame-ancestors`.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The policy: this origin only; nothing inline; never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// Middleware (`axum::middleware::from_fn(security_headers)`).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}
