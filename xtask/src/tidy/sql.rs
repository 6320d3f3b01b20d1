//! Rule: no SQL outside the store modules.
//!
//! In `edge-node/src` outside `edge-node/src/store/`, and in `cloud-sync/src`
//! outside `cloud-sync/src/store/` (test modules inside `src` included), there
//! is no SQL string literal and no `Connection::open*` call.
//!
//! A SQL string literal is a string literal (any flavour, found by the
//! [lexer](super::lexer), so comments do not count) whose text starts with a
//! SQL statement's opening words (see [`is_sql`]), or any string literal passed
//! straight to a database call (`.execute(`, `.execute_batch(`, `.prepare(`,
//! `.query_row(`, ...). An `include_str!("….sql")` counts as SQL too.

use std::path::Path;

use super::lexer::{Kind, Token, tokenize};
use super::{Problems, rel, rust_files};

/// The source trees this rule covers, and the store folder each may hold SQL in.
const SCOPES: &[(&str, &str)] = &[
    ("edge-node/src", "edge-node/src/store"),
    ("cloud-sync/src", "cloud-sync/src/store"),
];

/// Database calls whose first argument is SQL (rusqlite and postgres).
const SQL_METHODS: &[&str] = &[
    "execute",
    "execute_batch",
    "batch_execute",
    "prepare",
    "prepare_cached",
    "query",
    "query_row",
    "query_one",
    "query_opt",
    "simple_query",
];

/// Whether a string literal's text is SQL: trimmed, case-insensitive, it
/// opens with the first words of a SQL statement, each a whole word:
/// `SELECT ... FROM` (or `SELECT` and an expression that is not a word:
/// `SELECT 1`, `SELECT count(*)`), `INSERT INTO|OR`, `REPLACE INTO`,
/// `UPDATE t SET`, `DELETE FROM`, `CREATE|DROP` and an object
/// (`TABLE`, `INDEX`, ...), `ALTER TABLE`, `PRAGMA x`, `WITH [RECURSIVE] x AS`,
/// `VACUUM INTO`, `SAVEPOINT x`, `RELEASE SAVEPOINT`, and transaction control
/// (`BEGIN`, `COMMIT`, `ROLLBACK`, `END`, `START TRANSACTION`, with their
/// modifiers) as the whole statement.
///
/// The second word is what keeps English out: `"Select a bed"`, `"update
/// failed"`, `"with care"`, `"release beds"` and `"SELECTED items"` are not
/// SQL. A statement of one word (`BEGIN`, `COMMIT`, `ROLLBACK`, `VACUUM`,
/// `ANALYZE`) counts when written in capitals or ended by `;`, so that
/// `.expect("commit")` is not SQL.
pub fn is_sql(text: &str) -> bool {
    let trimmed = text.trim();
    let upper = trimmed.to_ascii_uppercase();
    let upper = upper.trim_end_matches(';').trim_end();
    let words: Vec<&str> = upper.split_whitespace().collect();
    let Some(&first) = words.first() else {
        return false;
    };
    let word = |k: usize| words.get(k).copied().unwrap_or("");
    let has_word = |w: &str| {
        words
            .iter()
            .any(|x| *x == w || x.starts_with(&format!("{w}(")))
    };
    if words.len() == 1 {
        let statement = ["BEGIN", "COMMIT", "ROLLBACK", "END", "VACUUM", "ANALYZE"];
        let capitals = trimmed.trim_end_matches(';') == first;
        return statement.contains(&first) && (capitals || trimmed.ends_with(';'));
    }
    const OBJECTS: &[&str] = &[
        "TABLE",
        "INDEX",
        "UNIQUE",
        "VIEW",
        "TRIGGER",
        "TEMP",
        "TEMPORARY",
        "VIRTUAL",
        "DATABASE",
        "SCHEMA",
        "SEQUENCE",
        "ROLE",
        "EXTENSION",
        "FUNCTION",
        "IF",
        "OR",
    ];
    const TRANSACTION: &[&str] = &[
        "TRANSACTION",
        "IMMEDIATE",
        "DEFERRED",
        "EXCLUSIVE",
        "WORK",
        "ISOLATION",
        "TO",
    ];
    match first {
        "SELECT" => {
            let second = word(1);
            has_word("FROM")
                || !second.starts_with(|c: char| c.is_ascii_alphabetic())
                || second.contains('(')
        }
        "INSERT" => matches!(word(1), "INTO" | "OR"),
        "REPLACE" => word(1) == "INTO",
        "UPDATE" => word(2) == "SET" || (word(1) == "OR" && word(4) == "SET"),
        "DELETE" => word(1) == "FROM",
        "CREATE" | "DROP" => OBJECTS.contains(&word(1)),
        "ALTER" => matches!(
            word(1),
            "TABLE" | "DATABASE" | "INDEX" | "ROLE" | "SEQUENCE"
        ),
        "PRAGMA" => true,
        "WITH" => {
            let k = if word(1) == "RECURSIVE" { 2 } else { 1 };
            word(k + 1) == "AS" || word(k).contains('(')
        }
        "VACUUM" => word(1) == "INTO" || word(2) == "INTO",
        "SAVEPOINT" => words.len() == 2,
        "RELEASE" => word(1) == "SAVEPOINT",
        "BEGIN" | "COMMIT" | "ROLLBACK" | "END" | "START" => {
            (first != "START" || word(1) == "TRANSACTION")
                && words.len() <= 5
                && TRANSACTION.contains(&word(1))
        }
        _ => false,
    }
}

/// One finding: the line and what is wrong there.
pub type Finding = (usize, String);

fn shown(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut s: String = one_line.chars().take(60).collect();
    if one_line.chars().count() > 60 {
        s.push('…');
    }
    s
}

/// SQL literals, and SQLite connections opened, in one source text.
pub fn findings(src: &str) -> Vec<Finding> {
    findings_in(&tokenize(src))
}

fn findings_in(tokens: &[Token]) -> Vec<Finding> {
    let mut out = vec![];
    for (i, t) in tokens.iter().enumerate() {
        match &t.kind {
            Kind::Str(text) => {
                let call = i >= 3
                    && tokens[i - 1].is_punct('(')
                    && tokens[i - 3].is_punct('.')
                    && tokens[i - 2]
                        .ident()
                        .is_some_and(|m| SQL_METHODS.contains(&m));
                let included = i >= 3
                    && tokens[i - 1].is_punct('(')
                    && tokens[i - 2].is_punct('!')
                    && tokens[i - 3].is_ident("include_str");
                if included && text.to_ascii_lowercase().ends_with(".sql") {
                    out.push((t.line, format!("includes the SQL file \"{text}\"")));
                } else if is_sql(text) {
                    out.push((t.line, format!("SQL string literal \"{}\"", shown(text))));
                } else if call {
                    let method = tokens[i - 2].ident().unwrap_or_default();
                    out.push((
                        t.line,
                        format!("string literal passed to .{method}(: \"{}\"", shown(text)),
                    ));
                }
            }
            Kind::Ident(name) if name == "Connection" => {
                if let (Some(sep), Some(open)) = (tokens.get(i + 1), tokens.get(i + 2))
                    && sep.is_path_sep()
                    && let Some(f) = open.ident().filter(|f| f.starts_with("open"))
                {
                    out.push((
                        t.line,
                        format!("opens a database connection (Connection::{f})"),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// Every SQL literal or connection opened outside the store modules.
pub fn check(root: &Path, problems: &mut Problems) -> anyhow::Result<()> {
    for (scope, store) in SCOPES {
        let mut files = vec![];
        rust_files(&root.join(scope), &mut files);
        files.sort();
        for f in files {
            let path = rel(root, &f);
            if path.starts_with(&format!("{store}/")) || path == format!("{store}.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&f)?;
            for (line, what) in findings(&text) {
                problems.push(format!(
                    "{path}:{line}: {what} outside the store modules ({store}/)"
                ));
            }
        }
    }
    Ok(())
}
