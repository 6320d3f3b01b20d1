//! Rule: the sans-IO modules import no IO crate.
//!
//! No code in `domain/src`, `firmware-config/src`, `edge-node/src/board/`,
//! `edge-node/src/or_board.rs` or `edge-node/src/integration/` (except its one IO part, `client.rs`, the
//! MLLP client; the listener is `edge-node/src/feed.rs`) names an IO crate: not in a `use`, not in a path
//! (`tokio::spawn`), not in an attribute (`#[tokio::test]`), test modules
//! included. Comments and strings do not count (the [lexer](super::lexer)
//! drops them).

use std::path::Path;

use super::lexer::{Kind, Token, tokenize};
use super::{Problems, rel, rust_files};

/// Crates that do IO, as Rust code names them.
pub const IO_CRATES: &[&str] = &[
    "tokio",
    "rusqlite",
    "axum",
    "hyper",
    "reqwest",
    "postgres",
    "tokio_postgres",
    "sqlx",
    "rumqttc",
    "ort",
];

/// The sans-IO trees (files or folders).
const SANS_IO: &[&str] = &[
    "domain/src",
    "firmware-config/src",
    "edge-node/src/board",
    "edge-node/src/board.rs",
    "edge-node/src/or_board.rs",
    "edge-node/src/integration",
    "edge-node/src/integration.rs",
];

/// The files inside those trees that are allowed to do IO.
const IO_PARTS: &[&str] = &["edge-node/src/integration/client.rs"];

/// Uses of an IO crate in a source text: the line and the path as written
/// (`tokio::sync::mpsc`, `use rusqlite`).
pub fn io_uses(src: &str) -> Vec<(usize, String)> {
    io_uses_in(&tokenize(src))
}

fn io_uses_in(tokens: &[Token]) -> Vec<(usize, String)> {
    let mut out = vec![];
    for (i, t) in tokens.iter().enumerate() {
        let Some(name) = t.ident().filter(|n| IO_CRATES.contains(n)) else {
            continue;
        };
        let prev = i.checked_sub(1).map(|k| &tokens[k]);
        let before = i.checked_sub(2).map(|k| &tokens[k]);
        let next = tokens.get(i + 1);
        // `x::tokio::...` names a module `tokio` inside `x`, not the crate;
        // `::tokio::...` (a leading `::`) is the crate.
        let inner_segment = prev.is_some_and(Token::is_path_sep)
            && before.is_some_and(|b| {
                matches!(b.kind, Kind::Ident(_) | Kind::Punct('>')) && !b.is_ident("use")
            });
        let starts_path = next.is_some_and(Token::is_path_sep) && !inner_segment;
        let used = prev.is_some_and(|p| p.is_ident("use"))
            || (prev.is_some_and(|p| p.is_ident("crate"))
                && before.is_some_and(|b| b.is_ident("extern")));
        if starts_path || used {
            let mut shown = name.to_owned();
            let mut k = i + 1;
            while k + 1 < tokens.len() && tokens[k].is_path_sep() && shown.len() < 60 {
                match &tokens[k + 1].kind {
                    Kind::Ident(seg) => shown.push_str(&format!("::{seg}")),
                    Kind::Punct(c @ ('{' | '*')) => {
                        shown.push_str(&format!("::{c}"));
                        if *c == '{' {
                            shown.push_str("…}");
                        }
                        break;
                    }
                    _ => break,
                }
                k += 2;
            }
            if prev.is_some_and(|p| p.is_ident("use")) {
                shown = format!("use {shown}");
            }
            out.push((t.line, shown));
        }
    }
    out
}

/// Every use of an IO crate in a sans-IO module.
pub fn check(root: &Path, problems: &mut Problems) -> anyhow::Result<()> {
    let mut files = vec![];
    for tree in SANS_IO {
        let p = root.join(tree);
        if p.is_file() {
            files.push(p);
        } else {
            rust_files(&p, &mut files);
        }
    }
    files.sort();
    for f in files {
        let path = rel(root, &f);
        if IO_PARTS.contains(&path.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&f)?;
        for (line, what) in io_uses(&text) {
            let krate = what
                .trim_start_matches("use ")
                .split("::")
                .next()
                .unwrap_or("");
            problems.push(format!(
                "{path}:{line}: sans-IO module uses the IO crate `{krate}` ({what})"
            ));
        }
    }
    Ok(())
}
