//! The session cookie of the web pages: `HttpOnly` (no script reads it),
//! `SameSite=Strict` (no other site's page can make the browser send it),
//! `Path=/`, and `Secure` when the server speaks HTTPS. It carries an
//! opaque session id, never a token.

use axum::http::{HeaderMap, HeaderValue, header};

/// `Set-Cookie` that stores `value` under `name` for the browser session.
pub fn set(name: &str, value: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or(HeaderValue::from_static("invalid=1; Max-Age=0"))
}

/// `Set-Cookie` that deletes the cookie `name`.
pub fn clear(name: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    ))
    .unwrap_or(HeaderValue::from_static("invalid=1; Max-Age=0"))
}

/// The value of the cookie `name` the request carries, if any.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Whether a request that changes something comes from a page of this
/// origin: its `Origin` names the `Host` it was sent to, or (when a browser
/// sends no `Origin`, or `null`) `Sec-Fetch-Site` says `same-origin`. Requests that a
/// cookie authenticates must pass this (defence in depth beside
/// `SameSite=Strict`).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    // `Origin: null` (a browser hiding the origin) proves nothing either way.
    match headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| *o != "null")
    {
        Some(origin) => {
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            authority.is_some() && authority == host
        }
        None => headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"same-origin"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_cookie_is_http_only_and_strict_and_secure_under_https() {
        let c = set("hms_session", "abc", true);
        assert_eq!(
            c.to_str().unwrap(),
            "hms_session=abc; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!set("s", "v", false).to_str().unwrap().contains("Secure"));
        assert!(clear("s", false).to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn reads_one_cookie_among_several() {
        let h = headers(&[("cookie", "a=1; hms_session=xyz; b=2")]);
        assert_eq!(get(&h, "hms_session"), Some("xyz"));
        assert_eq!(get(&h, "c"), None);
    }

    #[test]
    fn same_origin_needs_a_matching_origin_or_fetch_site() {
        assert!(same_origin(&headers(&[
            ("host", "kiosk.local:8080"),
            ("origin", "http://kiosk.local:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "kiosk.local:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "kiosk.local:8080"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "kiosk.local:8080"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "kiosk.local:8080"),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "kiosk.local"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&headers(&[("host", "kiosk.local")])));
    }
}
