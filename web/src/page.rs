//! The frame every web page of both servers shares: document head (the
//! embedded style sheet and script, nothing else), a skip link, the header
//! with the site and the signed-in user, the navigation and `<main>`.
//!
//! Pages are rendered on the server ([`maud`]: escaped by construction) and
//! work without the script; the script adds live updates and one-tap
//! actions. Responses are `Cache-Control: no-store` (they may show patients).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::assets;

/// One entry of the navigation.
#[derive(Debug, Clone, Copy)]
pub struct Nav<'a> {
    /// Label.
    pub label: &'a str,
    /// Target.
    pub href: &'a str,
    /// Whether it is the page shown.
    pub current: bool,
}

/// Who is signed in, as the header shows it.
#[derive(Debug, Clone, Copy)]
pub struct User<'a> {
    /// The token's name.
    pub name: &'a str,
    /// The role, as the API names it.
    pub role: &'a str,
}

/// What frames a page.
#[derive(Debug, Clone, Copy)]
pub struct Shell<'a> {
    /// The product (`HMS Edge`, `HMS Fleet`).
    pub app: &'a str,
    /// The site (hospital or region) name.
    pub site: &'a str,
    /// The page title (also the `<h1>`'s text is the page's own).
    pub title: &'a str,
    /// The navigation.
    pub nav: &'a [Nav<'a>],
    /// The signed-in user (none on the sign-in page).
    pub user: Option<User<'a>>,
    /// `data-page` of `<body>`: which behaviour the script attaches.
    pub page: &'a str,
    /// Where the header's sign-out form posts (`/logout`, `/console/logout`).
    pub logout: &'a str,
}

/// The whole document around `main`.
pub fn document(shell: &Shell<'_>, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title {
                    (shell.title) " — "
                    @if !shell.site.is_empty() { (shell.site) " — " }
                    (shell.app)
                }
                link rel="icon" href=(assets::url("icon.svg")) type="image/svg+xml";
                link rel="stylesheet" href=(assets::url("app.css"));
                script src=(assets::url("app.js")) defer {}
            }
            body data-page=(shell.page) {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    div class="brand" {
                        span class="app" { (shell.app) }
                        span class="site" { (shell.site) }
                    }
                    @if !shell.nav.is_empty() {
                        nav aria-label="Main" {
                            ul {
                                @for n in shell.nav {
                                    li {
                                        @if n.current {
                                            a href=(n.href) aria-current="page" { (n.label) }
                                        } @else {
                                            a href=(n.href) { (n.label) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if let Some(u) = shell.user {
                        div class="user" {
                            span { (u.name) " · " (u.role.replace('_', " ")) }
                            form method="post" action=(shell.logout) {
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                div id="live-banner" class="banner" role="status" aria-live="polite" hidden {}
                main id="main" tabindex="-1" { (main) }
            }
        }
    }
}

/// A page response: `200`, HTML, never cached.
pub fn respond(markup: Markup) -> Response {
    respond_with(StatusCode::OK, markup)
}

/// A page response with `status`.
pub fn respond_with(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        markup.into_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_escapes_what_it_is_given_and_links_only_embedded_files() {
        let shell = Shell {
            app: "HMS Edge",
            site: "St <Mary>",
            title: "Board",
            nav: &[Nav {
                label: "Units",
                href: "/",
                current: true,
            }],
            user: Some(User {
                name: "kiosk-4",
                role: "bed_manager",
            }),
            page: "board",
            logout: "/logout",
        };
        let html = document(&shell, html! { h1 { "x" } }).into_string();
        assert!(html.contains("St &lt;Mary&gt;"));
        assert!(html.contains(&assets::url("app.css")));
        assert!(html.contains("aria-current=\"page\""));
        assert!(html.contains("bed manager"));
        assert!(!html.contains("<script>"), "no inline script");
        assert!(!html.contains("style="), "no inline style");
    }
}
