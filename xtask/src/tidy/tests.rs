//! Tests of the tidy rules: the detectors on strings, and each rule on a small
//! fake workspace (clean, then with one planted violation).

use std::path::Path;

use super::cycles::refs;
use super::lexer::{Kind, tokenize};
use super::sans_io::io_uses;
use super::sql::{findings, is_sql};

/// A clean fake workspace: every rule holds, and each has something nearby
/// that it must not mistake for a violation.
const CLEAN: &[(&str, &str)] = &[
    (
        "domain/Cargo.toml",
        "[package]\nname = \"hms-domain\"\n\n[dependencies]\nserde.workspace = true\n\n[dev-dependencies]\ntokio.workspace = true\n",
    ),
    (
        "domain/src/lib.rs",
        "//! Domain: knows nothing of tokio (a comment may say so).\npub mod ids;\npub mod time;\npub use time::Timestamp;\n",
    ),
    (
        "domain/src/ids.rs",
        "//! Ids.\nuse crate::Timestamp;\n/// An id made at a time.\npub struct Id(pub Timestamp);\n",
    ),
    (
        "domain/src/time.rs",
        "//! Time.\npub struct Timestamp;\nconst NOTE: &str = \"tokio::time is not used here\";\n",
    ),
    (
        "firmware-config/Cargo.toml",
        "[package]\nname = \"firmware-config\"\n\n[dependencies]\nhms-domain.workspace = true\n",
    ),
    (
        "firmware-config/src/lib.rs",
        "//! Config.\npub mod schema;\n",
    ),
    (
        "firmware-config/src/schema.rs",
        "//! Schema.\npub struct Hospital { pub sort: u8 }\n",
    ),
    (
        "edge-node/Cargo.toml",
        "[package]\nname = \"hms-edge\"\n\n[dependencies]\ntokio.workspace = true\nrusqlite.workspace = true\n",
    ),
    (
        "edge-node/src/lib.rs",
        "//! The appliance.\npub mod board;\npub mod integration;\npub mod store;\npub mod sync;\n",
    ),
    (
        "edge-node/src/main.rs",
        "//! The binary may use anything.\nuse hms_edge::{store, sync};\nfn main() {}\n",
    ),
    (
        "edge-node/src/board/mod.rs",
        "//! The sans-IO board.\npub struct Board;\n#[cfg(test)]\nmod tests;\n",
    ),
    (
        "edge-node/src/board/tests.rs",
        "//! Board tests.\nuse super::*;\n#[test]\nfn builds() {\n    let _ = Board;\n}\n",
    ),
    (
        "edge-node/src/integration/mod.rs",
        "//! Integration.\npub mod client;\npub mod hl7;\n",
    ),
    (
        "edge-node/src/integration/hl7.rs",
        "//! HL7.\nuse crate::board::Board;\npub fn parse(_: &Board) {}\n",
    ),
    (
        "edge-node/src/integration/client.rs",
        "//! The client does IO.\nuse tokio::net::TcpListener;\nuse super::hl7::parse;\nuse crate::store::Store;\n",
    ),
    (
        "edge-node/src/store/mod.rs",
        "//! The store.\nmod handle;\nmod writer;\npub use handle::Store;\npub const LIMIT: usize = 8;\n",
    ),
    (
        "edge-node/src/store/handle.rs",
        "//! Handle.\nuse super::writer::Writer;\npub struct Store(Writer);\nconst Q: &str = \"SELECT * FROM beds\";\nfn open() { let _ = rusqlite::Connection::open(\"edge.sqlite\"); }\n",
    ),
    (
        "edge-node/src/store/writer.rs",
        "//! Writer.\nuse super::LIMIT;\nuse crate::board::Board;\npub struct Writer;\nfn commit(c: &rusqlite::Connection) { c.execute_batch(\"COMMIT\").ok(); }\n",
    ),
    ("edge-node/src/sync/mod.rs", "//! Sync.\npub mod uplink;\n"),
    (
        "edge-node/src/sync/uplink.rs",
        "//! Uplink: reads through the store, never \"SELECT * FROM x\" itself.\nuse crate::store::Store;\n// SELECT * FROM events\n/* \"DELETE FROM events\" */\npub fn run(_: &Store) {\n    let _ = \"SELECTED items\";\n    let _q = '\"';\n    let _ = \"update failed\";\n    tokio::spawn(async {});\n}\n",
    ),
    (
        "cloud-sync/Cargo.toml",
        "[package]\nname = \"cloud-sync\"\n\n[dependencies]\nrusqlite.workspace = true\n",
    ),
    (
        "cloud-sync/src/lib.rs",
        "//! The cloud.\npub mod empi;\npub mod store;\n#[cfg(test)]\nmod testkit;\n",
    ),
    (
        "cloud-sync/src/empi.rs",
        "//! Regional EMPI.\nuse crate::store::Db;\n#[cfg(test)]\nmod tests {\n    use crate::testkit::seed;\n}\n",
    ),
    (
        "cloud-sync/src/store/mod.rs",
        "//! Cloud store.\npub mod sqlite;\npub struct Db;\nconst SCHEMA: &str = r#\"\n    CREATE TABLE x (a TEXT DEFAULT \"q\")\n\"#;\n",
    ),
    (
        "cloud-sync/src/store/sqlite.rs",
        "//! SQLite.\nuse super::Db;\n",
    ),
    (
        "cloud-sync/src/testkit.rs",
        "//! A test harness may use anything.\nuse crate::empi;\nuse crate::store::Db;\npub fn seed() {}\n",
    ),
];

/// The clean workspace with `changes` written over it, in a temp dir.
fn tree(changes: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in CLEAN.iter().chain(changes) {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
    }
    dir
}

fn problems(root: &Path) -> Vec<String> {
    super::problems(root).expect("tidy runs").0
}

#[test]
fn a_clean_tree_passes() {
    let dir = tree(&[]);
    assert_eq!(problems(dir.path()), Vec::<String>::new());
    assert!(super::check(dir.path()).is_ok());
}

#[test]
fn sans_io_rule_fails_on_tokio_in_board() {
    let dir = tree(&[(
        "edge-node/src/board/mod.rs",
        "//! The sans-IO board.\nuse tokio::sync::mpsc;\npub struct Board;\n#[cfg(test)]\nmod tests;\n",
    )]);
    assert_eq!(
        problems(dir.path()),
        [
            "edge-node/src/board/mod.rs:2: sans-IO module uses the IO crate `tokio` (use tokio::sync::mpsc)"
        ]
    );
    assert!(super::check(dir.path()).is_err());
}

#[test]
fn sans_io_rule_covers_test_code_and_the_sans_io_parts_of_integration() {
    let dir = tree(&[
        (
            "edge-node/src/board/tests.rs",
            "//! Board tests.\nuse super::*;\n#[tokio::test]\nasync fn builds() {\n    let _ = Board;\n}\n",
        ),
        (
            "edge-node/src/integration/hl7.rs",
            "//! HL7.\nuse crate::board::Board;\npub fn parse(_: &Board) {\n    let _ = rusqlite::Connection::open_in_memory();\n}\n",
        ),
        (
            "domain/src/time.rs",
            "//! Time.\npub struct Timestamp;\n#[cfg(test)]\nmod tests {\n    use axum::Router;\n}\n",
        ),
    ]);
    assert_eq!(
        problems(dir.path()),
        [
            "domain/src/time.rs:5: sans-IO module uses the IO crate `axum` (use axum::Router)",
            "edge-node/src/board/tests.rs:3: sans-IO module uses the IO crate `tokio` (tokio::test)",
            "edge-node/src/integration/hl7.rs:4: sans-IO module uses the IO crate `rusqlite` (rusqlite::Connection::open_in_memory)",
            // The SQL rule sees it too.
            "edge-node/src/integration/hl7.rs:4: opens a database connection (Connection::open_in_memory) outside the store modules (edge-node/src/store/)",
        ]
    );
}

#[test]
fn sql_rule_fails_on_a_select_in_the_uplink() {
    let dir = tree(&[(
        "edge-node/src/sync/uplink.rs",
        "//! Uplink.\nuse crate::store::Store;\npub fn run(_: &Store) {\n    let _ = \"SELECT * FROM x\";\n}\n",
    )]);
    assert_eq!(
        problems(dir.path()),
        [
            "edge-node/src/sync/uplink.rs:4: SQL string literal \"SELECT * FROM x\" outside the store modules (edge-node/src/store/)"
        ]
    );
}

#[test]
fn sql_rule_fails_on_multi_line_raw_sql_in_the_cloud_empi() {
    let dir = tree(&[(
        "cloud-sync/src/empi.rs",
        "//! Regional EMPI.\nuse crate::store::Db;\nconst PUT: &str = r#\"\n    insert into records (id, \"name\")\n    values (?1, ?2)\"#;\n",
    )]);
    assert_eq!(
        problems(dir.path()),
        [
            "cloud-sync/src/empi.rs:3: SQL string literal \"insert into records (id, \"name\") values (?1, ?2)\" outside the store modules (cloud-sync/src/store/)"
        ]
    );
}

#[test]
fn sql_rule_fails_on_a_connection_opened_outside_the_store() {
    let dir = tree(&[(
        "edge-node/src/sync/uplink.rs",
        "//! Uplink.\nuse rusqlite::{Connection, OpenFlags};\nfn peek(p: &str) {\n    let c = Connection::open_with_flags(p, OpenFlags::SQLITE_OPEN_READ_ONLY);\n    c.unwrap().query_row(\"vacuum\", [], |_| Ok(())).ok();\n}\n",
    )]);
    assert_eq!(
        problems(dir.path()),
        [
            "edge-node/src/sync/uplink.rs:4: opens a database connection (Connection::open_with_flags) outside the store modules (edge-node/src/store/)",
            "edge-node/src/sync/uplink.rs:5: string literal passed to .query_row(: \"vacuum\" outside the store modules (edge-node/src/store/)",
        ]
    );
}

#[test]
fn cycle_rule_fails_on_a_top_level_cycle() {
    let dir = tree(&[(
        "edge-node/src/store/handle.rs",
        "//! Handle.\nuse super::writer::Writer;\npub struct Store(Writer);\n\nfn status() -> crate::sync::uplink::Status {\n    crate::sync::uplink::Status\n}\n",
    )]);
    assert_eq!(
        problems(dir.path()),
        [
            "edge-node/src/store/handle.rs:5: module cycle in edge-node: store → sync → store (edge-node/src/store/handle.rs:5 uses crate::sync (+1 more); edge-node/src/sync/uplink.rs:2 uses crate::store)"
        ]
    );
}

#[test]
fn cycle_rule_fails_on_a_sibling_cycle_inside_store() {
    // The writer names the handle through the parent's re-export.
    let dir = tree(&[(
        "edge-node/src/store/writer.rs",
        "//! Writer.\nuse super::{LIMIT, Store};\npub struct Writer;\n",
    )]);
    assert_eq!(
        problems(dir.path()),
        [
            "edge-node/src/store/handle.rs:2: module cycle in edge-node store/: handle → writer → handle (edge-node/src/store/handle.rs:2 uses super::writer; edge-node/src/store/writer.rs:2 uses super::Store (re-exported from handle))"
        ]
    );
}

#[test]
fn cycle_rule_resolves_super_in_inline_test_modules() {
    // `super::super::handle` from `store::writer::tests` is `store::handle`.
    let dir = tree(&[(
        "edge-node/src/store/writer.rs",
        "//! Writer.\npub struct Writer;\n#[cfg(test)]\nmod tests {\n    use super::super::handle;\n}\n",
    )]);
    assert_eq!(
        problems(dir.path()),
        [
            "edge-node/src/store/handle.rs:2: module cycle in edge-node store/: handle → writer → handle (edge-node/src/store/handle.rs:2 uses super::writer; edge-node/src/store/writer.rs:5 uses super::super::handle)"
        ]
    );
}

#[test]
fn cycle_rule_lists_each_cycle_of_a_larger_knot() {
    let dir = tree(&[
        (
            "domain/src/lib.rs",
            "//! D.\npub mod a;\npub mod b;\npub mod c;\n",
        ),
        (
            "domain/src/a.rs",
            "//! A.\nuse crate::{b::B, c::C};\npub struct A;\n",
        ),
        (
            "domain/src/b.rs",
            "//! B.\nuse crate::a::A;\npub struct B;\n",
        ),
        ("domain/src/c.rs", "//! C.\npub struct C(crate::a::A);\n"),
    ]);
    assert_eq!(
        problems(dir.path()),
        [
            "domain/src/a.rs:2: module cycle in domain: a → b → a (domain/src/a.rs:2 uses crate::b; domain/src/b.rs:2 uses crate::a)",
            "domain/src/a.rs:2: module cycle in domain: a → c → a (domain/src/a.rs:2 uses crate::c; domain/src/c.rs:2 uses crate::a)",
        ]
    );
}

#[test]
fn the_lexer_skips_comments_and_reads_every_string_flavour() {
    let src = "// \"not a string\"\n/* outer /* nested \"x\" */ still comment */\nlet a = \"esc \\\" quote\";\nlet b = r#\"raw \"quoted\" text\"#;\nlet c = br\"bytes\";\nlet d = b\"x\\n\";\nlet e = '\"';\nlet f = '\\'';\nfn g<'a>(x: &'a str) -> &'a str { 'outer: loop { break 'outer x; } }\nlet h = r#type;\n";
    let strings: Vec<(usize, String)> = tokenize(src)
        .into_iter()
        .filter_map(|t| match t.kind {
            Kind::Str(s) => Some((t.line, s)),
            _ => None,
        })
        .collect();
    assert_eq!(
        strings,
        [
            (3, "esc \" quote".to_owned()),
            (4, "raw \"quoted\" text".to_owned()),
            (5, "bytes".to_owned()),
            (6, "x\n".to_owned()),
        ]
    );
    let tokens = tokenize(src);
    assert_eq!(tokens.iter().filter(|t| t.kind == Kind::Char).count(), 2);
    assert_eq!(
        tokens.iter().filter(|t| t.kind == Kind::Lifetime).count(),
        5
    );
    assert!(tokens.iter().any(|t| t.is_ident("type")));
    assert_eq!(tokens.last().map(|t| t.line), Some(10));
}

#[test]
fn sql_in_a_comment_is_fine() {
    assert_eq!(
        findings(
            "// SELECT * FROM beds\n/// INSERT INTO beds VALUES (1)\n/* DELETE FROM beds */\n"
        ),
        []
    );
}

#[test]
fn a_char_literal_quote_does_not_open_a_string() {
    let src = "let q = '\"'; let n = 1; // \"\nlet s = \"SELECT id FROM beds\";\nlet t = '\"';\n";
    assert_eq!(
        findings(src),
        [(2, "SQL string literal \"SELECT id FROM beds\"".to_owned())]
    );
}

#[test]
fn what_counts_as_sql() {
    for sql in [
        "SELECT * FROM x",
        "  select id from beds where unit = ?1",
        "SELECT 1",
        "SELECT count(*) FROM events",
        "\n    INSERT INTO events (seq) VALUES (?1)",
        "insert or ignore into t values (1)",
        "UPDATE beds SET state = ?1",
        "DELETE FROM events WHERE seq <= ?1",
        "CREATE TABLE IF NOT EXISTS t (a)",
        "create unique index i on t (a)",
        "DROP TABLE t",
        "ALTER TABLE t ADD COLUMN b",
        "PRAGMA journal_mode = WAL",
        "BEGIN",
        "BEGIN IMMEDIATE",
        "begin immediate",
        "COMMIT",
        "commit;",
        "ROLLBACK",
        "ROLLBACK TO SAVEPOINT s",
        "WITH t AS (SELECT 1) SELECT * FROM t",
        "with recursive r(n) as (select 1) select n from r",
        "VACUUM INTO ?1",
    ] {
        assert!(is_sql(sql), "{sql:?} is SQL");
    }
    for text in [
        "SELECTED items",
        "Select a bed",
        "selection",
        "update failed",
        "Updated 3 beds",
        "delete the token",
        "create a token first",
        "drop it",
        "with care",
        "commit",
        "begin",
        "release beds",
        "DELETE",
        "",
        "beginning",
    ] {
        assert!(!is_sql(text), "{text:?} is not SQL");
    }
}

#[test]
fn a_literal_passed_to_a_database_call_is_sql() {
    let src = "c.execute_batch(\"vacuum\")?;\nc.prepare_cached(\"anything\")?;\nurl.join(\"select\");\nconst S: &str = include_str!(\"schema.sql\");\n";
    let passed = |m: &str, s: &str| format!("string literal passed to .{m}(: \"{s}\"");
    assert_eq!(
        findings(src),
        [
            (1, passed("execute_batch", "vacuum")),
            (2, passed("prepare_cached", "anything")),
            (4, "includes the SQL file \"schema.sql\"".to_owned()),
        ]
    );
}

#[test]
fn io_uses_are_code_not_comments_strings_or_local_modules() {
    let src = "//! Mentions tokio::spawn in a doc.\n// use tokio;\nlet s = \"tokio::spawn\";\nuse crate::ort::Session;\nlet sort = 1;\nuse ::tokio::time;\n#[tokio::test]\nasync fn t() { hyper::body::Bytes::new(); }\nextern crate reqwest;\n";
    assert_eq!(
        io_uses(src),
        [
            (6, "tokio::time".to_owned()),
            (7, "tokio::test".to_owned()),
            (8, "hyper::body::Bytes::new".to_owned()),
            (9, "reqwest".to_owned()),
        ]
    );
}

#[test]
fn super_paths_resolve_from_the_file_and_its_inline_modules() {
    let module = ["store".to_owned(), "schema".to_owned()];
    let src = "use super::{projection::{self, COLUMNS}, Store as S};\nmod tests {\n    use super::super::retention::TABLES;\n    fn f() { crate::sync::run(); self::g(); }\n}\n";
    let found: Vec<(Vec<String>, Vec<String>, Option<String>)> = refs(src, &module)
        .into_iter()
        .map(|r| {
            (
                r.from,
                r.path.into_iter().map(|(s, _)| s).collect(),
                r.alias,
            )
        })
        .collect();
    let v = |xs: &[&str]| xs.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        found,
        [
            (v(&["store", "schema"]), v(&["store", "projection"]), None),
            (
                v(&["store", "schema"]),
                v(&["store", "projection", "COLUMNS"]),
                None
            ),
            (
                v(&["store", "schema"]),
                v(&["store", "Store"]),
                Some("S".to_owned())
            ),
            (
                v(&["store", "schema", "tests"]),
                v(&["store", "retention", "TABLES"]),
                None
            ),
            (v(&["store", "schema", "tests"]), v(&["sync", "run"]), None),
            (
                v(&["store", "schema", "tests"]),
                v(&["store", "schema", "tests", "g"]),
                None
            ),
        ]
    );
}
