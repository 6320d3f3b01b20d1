//! Checks of the configuration schema: every error class with its exact
//! `file:line:col: error: message`, the tolerant loader against the strict
//! linter, path resolution, operating rooms, the committed files, the example
//! generator, the `hms-config` command and hostile input.

use std::path::{Path, PathBuf};
use std::process::Command;

use expect_test::{Expect, expect};
use firmware_config::{
    BundlesSection, Config, ConfigError, DEFAULT_BUNDLE_PROBATION_S, DEFAULT_FLEET_KEEPALIVE_S,
    DEFAULT_FLEET_TELEMETRY_S, Diagnostic, FleetBroker, FleetSection, Hl7Location, MllpSection,
    MllpTls, Severity, example, lint, lint_str, load, load_str,
};
use hms_domain::{BedId, GenderRestriction, LevelOfCare, OrRoomId, RoomId, UnitId};

/// A valid configuration with one unit and no bed; each case adds to it.
const HEAD: &str = r#"[node]
hospital_id = "demo-general"
region = "eu-west"
node_id = "edge-1"
timezone = "Europe/Warsaw"

[listen]
http = "127.0.0.1:8080"

[store]
data_dir = "data"

[[facility]]
id = "DGH"
name = "Demo General"

[[building]]
id = "main"
facility = "DGH"
name = "Main"

[[floor]]
id = "main-3"
building = "main"
name = "Floor 3"

[[unit]]
id = "3W"
floor = "main-3"
name = "3 West"
level_of_care = "acute"

[[room]]
id = "3W-301"
unit = "3W"
"#;

/// One valid bed in room 3W-301 (lines 36 to 40 when appended to [`HEAD`]).
const BED: &str = r#"
[[bed]]
id = "3W-301-A"
room = "3W-301"
hl7 = { facility = "DGH", point_of_care = "3W", room = "301", bed = "A" }
"#;

fn file() -> &'static Path {
    Path::new("hospital.toml")
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(|d| format!("{d}\n")).collect()
}

fn check(text: &str, expected: Expect) {
    expected.assert_eq(&render(&lint_str(text, file())));
}

fn valid() -> String {
    format!("{HEAD}{BED}")
}

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("config")
        .join(name)
}

#[test]
fn the_base_case_is_clean() {
    check(&valid(), expect![[""]]);
}

#[test]
fn syntax_errors_are_located() {
    check(
        "[node\nhospital_id = \"x\"\n",
        expect![[r#"
            hospital.toml:1:6: error: TOML syntax: unclosed table, expected `]`
        "#]],
    );
    check(
        &valid().replace("region = \"eu-west\"", "region = eu-west"),
        expect![[r#"
            hospital.toml:3:10: error: TOML syntax: string values must be quoted, expected literal string
        "#]],
    );
    check(
        &format!(
            "{}\nregion = \"again\"\n",
            valid().replace("[listen]", "[node]")
        ),
        expect![[r#"
            hospital.toml:7:2: error: TOML syntax: duplicate key
        "#]],
    );
}

#[test]
fn type_errors_name_the_key_and_the_type_found() {
    let text = valid()
        .replace("region = \"eu-west\"", "region = 5")
        .replace(
            "data_dir = \"data\"",
            "data_dir = \"data\"\nmax_batch = \"many\"",
        )
        .replace(
            "room = \"3W-301\"\nhl7",
            "room = \"3W-301\"\ntelemetry = \"yes\"\ntags = [\"window\", 3]\nhl7",
        );
    check(
        &text,
        expect![[r#"
            hospital.toml:3:10: error: `node.region` must be a string, found integer
            hospital.toml:12:13: error: `store.max_batch` must be an integer, found string
            hospital.toml:41:13: error: `bed.telemetry` must be true or false, found string
            hospital.toml:42:19: error: `bed.tags` must hold only strings, found integer
        "#]],
    );
    check(
        &format!(
            "store = \"data\"\n{}",
            valid().replace("[store]\ndata_dir = \"data\"\n", "")
        ),
        expect![[r#"
            hospital.toml:1:9: error: `store` must be a table ([store]), found string
        "#]],
    );
    check(
        &valid().replace("[[floor]]", "[floor]"),
        expect![[r#"
            hospital.toml:22:1: error: `floor` must be an array of tables ([[floor]]), found table
        "#]],
    );
    check(
        &valid().replace("hl7 = {", "hl7 = \"DGH^3W^301^A\"\nx = {"),
        expect![[r#"
            hospital.toml:40:7: error: `bed.hl7` must be a table, found string
            hospital.toml:41:1: error: unknown key `x` in [[bed]]; expected one of: id, room, unit, gender, isolation_capable, telemetry, bariatric, level_of_care, tags, hl7
        "#]],
    );
}

#[test]
fn missing_required_keys_point_at_their_table() {
    let text = valid()
        .replace("node_id = \"edge-1\"\n", "")
        .replace("http = \"127.0.0.1:8080\"\n", "")
        .replace("name = \"3 West\"\nlevel_of_care = \"acute\"\n", "")
        .replace("id = \"3W-301-A\"\n", "");
    check(
        &text,
        expect![[r#"
            hospital.toml:1:1: error: missing required key `node_id` in [node]
            hospital.toml:6:1: error: missing required key `http` in [listen]
            hospital.toml:25:1: error: missing required key `name` in [[unit]]
            hospital.toml:25:1: error: missing required key `level_of_care` in [[unit]]
            hospital.toml:33:1: error: missing required key `id` in [[bed]]
        "#]],
    );
    check(
        &valid().replace("[listen]\nhttp = \"127.0.0.1:8080\"\n", ""),
        expect![[r#"
            hospital.toml:1:1: error: missing required section [listen]
        "#]],
    );
    check(
        &valid().replace("room = \"301\", ", ""),
        expect![[r#"
            hospital.toml:40:7: error: missing required key `room` in `bed.hl7`
        "#]],
    );
}

#[test]
fn bad_ids_quote_the_domain_rule() {
    let text = valid()
        .replace(
            "hospital_id = \"demo-general\"",
            "hospital_id = \"demo general\"",
        )
        .replace("id = \"DGH\"", "id = \"\"")
        .replace("id = \"3W\"", &format!("id = \"{}\"", "W".repeat(65)))
        .replace("id = \"3W-301-A\"", "id = \"3W/301/A\"");
    check(
        &text,
        expect![[r#"
            hospital.toml:2:15: error: invalid hospital id "demo general": id contains ' '; only letters, digits, dot, underscore, colon and hyphen are allowed
            hospital.toml:14:6: error: invalid facility id "": id is empty
            hospital.toml:19:12: error: building "main" refers to unknown facility "DGH"
            hospital.toml:28:6: error: invalid unit id "WWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWW"…: id is longer than 64 bytes
            hospital.toml:35:8: error: room "3W-301" refers to unknown unit "3W"
            hospital.toml:38:6: error: invalid bed id "3W/301/A": id contains '/'; only letters, digits, dot, underscore, colon and hyphen are allowed
        "#]],
    );
}

#[test]
fn bad_socket_addresses_are_errors() {
    let text = valid().replace(
        "http = \"127.0.0.1:8080\"",
        "http = \"localhost:8080\"\nmllp = \"127.0.0.1\"",
    );
    check(
        &text,
        expect![[r#"
            hospital.toml:8:8: error: `listen.http` is not a socket address: "localhost:8080"; expected IP:PORT, e.g. "127.0.0.1:8080"
            hospital.toml:9:8: error: `listen.mllp` is not a socket address: "127.0.0.1"; expected IP:PORT, e.g. "127.0.0.1:8080"
        "#]],
    );
}

#[test]
fn unknown_enum_values_list_the_allowed_ones() {
    let text = valid()
        .replace("level_of_care = \"acute\"", "level_of_care = \"intensive\"")
        .replace(
            "room = \"3W-301\"\nhl7",
            "room = \"3W-301\"\ngender = \"f\"\nhl7",
        );
    check(
        &text,
        expect![[r#"
            hospital.toml:31:17: error: `unit.level_of_care` has an unknown value "intensive"; expected one of: icu, step_down, acute, observation, emergency, maternity, pediatric, neonatal, psychiatric, rehab
            hospital.toml:40:10: error: `bed.gender` has an unknown value "f"; expected one of: any, female, male
        "#]],
    );
}

#[test]
fn numbers_out_of_range_give_the_range() {
    let text = valid().replace(
        "data_dir = \"data\"",
        "data_dir = \"data\"\ncheckpoint_interval_s = 0\nwriter_queue = -1\nmax_batch = 99999999999999999999\n\n[http]\nmax_body_bytes = 0\nshutdown_grace_s = 3601\nhistory_limit = 20",
    );
    check(
        &text,
        expect![[r#"
            hospital.toml:12:25: error: `store.checkpoint_interval_s` must be between 1 and 86400, found 0
            hospital.toml:13:16: error: `store.writer_queue` must be between 1 and 1000000, found -1
            hospital.toml:14:13: error: `store.max_batch` must be between 1 and 100000, found 99999999999999999999
            hospital.toml:17:18: error: `http.max_body_bytes` must be between 1 and 1073741824, found 0
            hospital.toml:18:20: error: `http.shutdown_grace_s` must be between 0 and 3600, found 3601
        "#]],
    );
}

/// [`valid`] with an `[mllp]` section holding `body` (its header at line 41,
/// its first key at line 42).
fn with_mllp(body: &str) -> String {
    format!("{}\n[mllp]\n{body}", valid())
}

#[test]
fn the_mllp_section_defaults_when_absent_or_empty() {
    for text in [valid(), with_mllp("")] {
        check(&text, expect![[""]]);
        let loaded = load_str(&text, file()).expect("valid");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let m = loaded.config.mllp;
        assert_eq!(m, MllpSection::default());
        assert_eq!(m.max_frame_bytes, 1_048_576);
        assert!(!m.tolerate_missing_cr);
        assert_eq!(m.max_connections, 64);
        assert_eq!(m.idle_timeout_s, 600);
        assert_eq!(m.frame_timeout_s, 30);
        assert_eq!(m.default_charset, "UNICODE UTF-8");
        assert_eq!(m.tls, None);
    }
}

#[test]
fn mllp_values_are_read_up_to_their_bounds() {
    let read = |body: &str| {
        let text = with_mllp(body);
        check(&text, expect![[""]]);
        load_str(&text, file()).expect("valid").config.mllp
    };
    assert_eq!(
        read(
            "max_frame_bytes = 1024\ntolerate_missing_cr = true\nmax_connections = 1\n\
             idle_timeout_s = 1\nframe_timeout_s = 1\ndefault_charset = \"ASCII\"\n"
        ),
        MllpSection {
            max_frame_bytes: 1024,
            tolerate_missing_cr: true,
            max_connections: 1,
            idle_timeout_s: 1,
            frame_timeout_s: 1,
            default_charset: "ASCII".to_owned(),
            ..MllpSection::default()
        }
    );
    assert_eq!(
        read(
            "max_frame_bytes = 2064384\ntolerate_missing_cr = false\nmax_connections = 10_000\n\
             idle_timeout_s = 86400\nframe_timeout_s = 3600\ndefault_charset = \"8859/1\"\n\
             max_connections_per_peer = 10_000\nfirst_frame_timeout_s = 3600\n\
             allow = [\"10.1.2.0/24\", \"127.0.0.1\", \"fd00::/8\"]\n"
        ),
        MllpSection {
            max_frame_bytes: firmware_config::MAX_SYNCABLE_FRAME_BYTES,
            tolerate_missing_cr: false,
            max_connections: 10_000,
            idle_timeout_s: 86_400,
            frame_timeout_s: 3_600,
            default_charset: "8859/1".to_owned(),
            tls: None,
            client_ca: None,
            allow: Some(vec![
                "10.1.2.0/24".parse().unwrap(),
                "127.0.0.1/32".parse().unwrap(),
                "fd00::/8".parse().unwrap(),
            ]),
            max_connections_per_peer: 10_000,
            first_frame_timeout_s: 3_600,
        }
    );
    assert_eq!(
        read("max_connections = 500\n"),
        MllpSection {
            max_connections: 500,
            ..MllpSection::default()
        }
    );
}

#[test]
fn mllp_numbers_out_of_range_give_the_range() {
    let below = with_mllp(
        "max_frame_bytes = 1023\nmax_connections = 0\nidle_timeout_s = 0\nframe_timeout_s = -30\n",
    );
    check(
        &below,
        expect![[r#"
            hospital.toml:43:19: error: `mllp.max_frame_bytes` must be between 1024 and 2064384, found 1023
            hospital.toml:44:19: error: `mllp.max_connections` must be between 1 and 10000, found 0
            hospital.toml:45:18: error: `mllp.idle_timeout_s` must be between 1 and 86400, found 0
            hospital.toml:46:19: error: `mllp.frame_timeout_s` must be between 1 and 3600, found -30
        "#]],
    );
    assert!(load_str(&below, file()).is_err());
    check(
        &with_mllp(
            "max_frame_bytes = 67108865\nmax_connections = 10001\nidle_timeout_s = 86401\nframe_timeout_s = 3601\n",
        ),
        expect![[r#"
            hospital.toml:43:19: error: `mllp.max_frame_bytes` must be between 1024 and 2064384, found 67108865
            hospital.toml:44:19: error: `mllp.max_connections` must be between 1 and 10000, found 10001
            hospital.toml:45:18: error: `mllp.idle_timeout_s` must be between 1 and 86400, found 86401
            hospital.toml:46:19: error: `mllp.frame_timeout_s` must be between 1 and 3600, found 3601
        "#]],
    );
}

#[test]
fn mllp_wrong_types_name_the_key_and_the_type_found() {
    let text = with_mllp(
        "max_frame_bytes = \"1 MiB\"\ntolerate_missing_cr = \"yes\"\nmax_connections = 1.5\n\
         idle_timeout_s = true\nframe_timeout_s = [30]\ndefault_charset = 8\n",
    );
    check(
        &text,
        expect![[r#"
            hospital.toml:43:19: error: `mllp.max_frame_bytes` must be an integer, found string
            hospital.toml:44:23: error: `mllp.tolerate_missing_cr` must be true or false, found string
            hospital.toml:45:19: error: `mllp.max_connections` must be an integer, found float
            hospital.toml:46:18: error: `mllp.idle_timeout_s` must be an integer, found boolean
            hospital.toml:47:19: error: `mllp.frame_timeout_s` must be an integer, found array
            hospital.toml:48:19: error: `mllp.default_charset` must be a string, found integer
        "#]],
    );
    assert!(load_str(&text, file()).is_err());
    let err = load_str(&with_mllp("tolerate_missing_cr = 1\n"), file()).expect_err("a bool");
    expect!["hospital.toml:43:23: error: `mllp.tolerate_missing_cr` must be true or false, found integer"].assert_eq(&err.to_string());
    check(
        &format!("mllp = 5\n{}", valid()),
        expect![[r#"
            hospital.toml:1:8: error: `mllp` must be a table ([mllp]), found integer
        "#]],
    );
    check(
        &format!("{}\n[[mllp]]\nmax_connections = 1\n", valid()),
        expect![[r#"
            hospital.toml:42:1: error: `mllp` must be a table ([mllp]), found array
        "#]],
    );
}

#[test]
fn an_unknown_mllp_charset_lists_the_allowed_ones() {
    let text = with_mllp("default_charset = \"UNICODE UTF-16\"\n");
    check(
        &text,
        expect![[r#"
            hospital.toml:43:19: error: `mllp.default_charset` has an unknown value "UNICODE UTF-16"; expected one of (case ignored): ASCII, 8859/1, 8859/2, 8859/3, 8859/4, 8859/5, 8859/6, 8859/7, 8859/8, 8859/9, 8859/15, UNICODE UTF-8, WINDOWS-1250, WINDOWS-1252, UTF-8, CP1250, CP1252
        "#]],
    );
    assert!(load_str(&text, file()).is_err());
    check(
        &with_mllp("default_charset = \"\"\n"),
        expect![[r#"
            hospital.toml:43:19: error: `mllp.default_charset` has an unknown value ""; expected one of (case ignored): ASCII, 8859/1, 8859/2, 8859/3, 8859/4, 8859/5, 8859/6, 8859/7, 8859/8, 8859/9, 8859/15, UNICODE UTF-8, WINDOWS-1250, WINDOWS-1252, UTF-8, CP1250, CP1252
        "#]],
    );
    // Any case is accepted, and kept as the list spells it.
    for (given, kept) in [
        ("unicode utf-8", "UNICODE UTF-8"),
        ("utf-8", "UTF-8"),
        ("windows-1250", "WINDOWS-1250"),
        ("cp1252", "CP1252"),
        ("8859/15", "8859/15"),
    ] {
        let text = with_mllp(&format!("default_charset = \"{given}\"\n"));
        check(&text, expect![[""]]);
        let m = load_str(&text, file()).expect("valid").config.mllp;
        assert_eq!(m.default_charset, kept);
    }
}

#[test]
fn unknown_mllp_keys_are_errors_for_lint_and_warnings_for_load() {
    let text = with_mllp("max_connections = 8\nmax_frame = 4096\nack_mode = \"enhanced\"\n");
    check(
        &text,
        expect![[r#"
            hospital.toml:44:1: error: unknown key `max_frame` in [mllp]; expected one of: max_frame_bytes, tolerate_missing_cr, max_connections, idle_timeout_s, frame_timeout_s, default_charset, tls_cert, tls_key, client_ca, allow, max_connections_per_peer, first_frame_timeout_s
            hospital.toml:45:1: error: unknown key `ack_mode` in [mllp]; expected one of: max_frame_bytes, tolerate_missing_cr, max_connections, idle_timeout_s, frame_timeout_s, default_charset, tls_cert, tls_key, client_ca, allow, max_connections_per_peer, first_frame_timeout_s
        "#]],
    );
    let loaded = load_str(&text, file()).expect("unknown keys do not stop loading");
    expect![[r#"
        hospital.toml:44:1: warning: unknown key `max_frame` in [mllp]; expected one of: max_frame_bytes, tolerate_missing_cr, max_connections, idle_timeout_s, frame_timeout_s, default_charset, tls_cert, tls_key, client_ca, allow, max_connections_per_peer, first_frame_timeout_s
        hospital.toml:45:1: warning: unknown key `ack_mode` in [mllp]; expected one of: max_frame_bytes, tolerate_missing_cr, max_connections, idle_timeout_s, frame_timeout_s, default_charset, tls_cert, tls_key, client_ca, allow, max_connections_per_peer, first_frame_timeout_s
    "#]]
    .assert_eq(&render(&loaded.warnings));
    assert_eq!(
        loaded.config.mllp,
        MllpSection {
            max_connections: 8,
            ..MllpSection::default()
        }
    );
}

/// A directory holding `edge.crt` and `edge.key` (empty files: only their
/// existence is checked) and `not-a-file/`, and the path of a configuration
/// file in it.
fn tls_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("edge.crt"), "").expect("edge.crt");
    std::fs::write(dir.path().join("edge.key"), "").expect("edge.key");
    std::fs::create_dir(dir.path().join("not-a-file")).expect("not-a-file/");
    let config = dir.path().join("edge.toml");
    (dir, config)
}

/// `diagnostics` rendered with the temporary directory `dir` shown as `$DIR`.
fn render_in(dir: &Path, diagnostics: &[Diagnostic]) -> String {
    render(diagnostics).replace(&dir.display().to_string(), "$DIR")
}

#[test]
fn mllp_tls_paths_resolve_against_the_config_directory() {
    let (dir, config) = tls_dir();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    std::fs::write(dir.path().join("tls/chain.pem"), "").unwrap();
    let key = dir.path().join("edge.key");
    let text = with_mllp(&format!(
        "max_connections = 8\ntls_cert = \"tls/chain.pem\"\ntls_key = {:?}\n",
        key.display().to_string()
    ));
    std::fs::write(&config, &text).unwrap();
    assert_eq!(lint(&config), []);
    assert_eq!(lint_str(&text, &config), []);
    let expected = MllpSection {
        max_connections: 8,
        tls: Some(MllpTls {
            cert: dir.path().join("tls/chain.pem"),
            key: key.clone(),
        }),
        ..MllpSection::default()
    };
    let loaded = load(&config).expect("valid");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config.mllp, expected);
    assert_eq!(
        load_str(&text, &config).expect("valid").config.mllp,
        expected
    );

    let text = with_mllp("tls_cert = \"../edge.crt\"\ntls_key = \"./edge.key\"\n");
    std::fs::write(dir.path().join("not-a-file/edge.key"), "").unwrap();
    let nested = dir.path().join("not-a-file").join("edge.toml");
    let tls = load_str(&text, &nested).expect("valid").config.mllp.tls;
    assert_eq!(
        tls,
        Some(MllpTls {
            cert: dir.path().join("not-a-file/../edge.crt"),
            key: dir.path().join("not-a-file/./edge.key"),
        }),
        "joined like `store.data_dir`, not canonicalized"
    );
}

#[test]
fn mllp_without_tls_keys_has_no_tls() {
    for text in [valid(), with_mllp(""), with_mllp("max_connections = 8\n")] {
        check(&text, expect![[""]]);
        assert_eq!(
            load_str(&text, file()).expect("valid").config.mllp.tls,
            None
        );
    }
}

#[test]
fn mllp_tls_cert_and_key_come_together() {
    let (dir, config) = tls_dir();
    let only_cert = with_mllp("tls_cert = \"edge.crt\"\n");
    let only_key = with_mllp("max_connections = 8\n  tls_key = \"edge.key\"\n");
    let diagnostics =
        [&only_cert, &only_key].map(|text| render_in(dir.path(), &lint_str(text, &config)));
    expect![[r#"
        [
            "$DIR/edge.toml:43:1: error: `mllp.tls_cert` is given without `mllp.tls_key`: TLS on the MLLP listener needs both, or neither for plain TCP\n",
            "$DIR/edge.toml:44:3: error: `mllp.tls_key` is given without `mllp.tls_cert`: TLS on the MLLP listener needs both, or neither for plain TCP\n",
        ]
    "#]]
    .assert_debug_eq(&diagnostics);
    for text in [&only_cert, &only_key] {
        let err = load_str(text, &config).expect_err("half a TLS setting");
        assert_eq!(err.diagnostics, lint_str(text, &config));
    }
}

#[test]
fn a_missing_mllp_tls_file_is_an_error() {
    let (dir, config) = tls_dir();
    let text = with_mllp("tls_cert = \"edge.crt\"\ntls_key = \"tls/edge.key\"\n");
    std::fs::write(&config, &text).unwrap();
    let expected = expect![[r#"
        $DIR/edge.toml:44:11: error: `mllp.tls_key` file "tls/edge.key" does not exist (looked for $DIR/tls/edge.key)
    "#]];
    expected.assert_eq(&render_in(dir.path(), &lint(&config)));
    let err = load(&config).expect_err("the key is missing");
    expected.assert_eq(&render_in(dir.path(), &err.diagnostics));

    let text = with_mllp("tls_cert = \"/nonexistent/hms/edge.crt\"\ntls_key = \"not-a-file\"\n");
    expect![[r#"
        $DIR/edge.toml:43:12: error: `mllp.tls_cert` file "/nonexistent/hms/edge.crt" does not exist
        $DIR/edge.toml:44:11: error: `mllp.tls_key` file "not-a-file" is a directory, not a file (looked for $DIR/not-a-file)
    "#]]
    .assert_eq(&render_in(dir.path(), &lint_str(&text, &config)));
    assert!(load_str(&text, &config).is_err());

    check(
        &with_mllp("tls_cert = \"no-such.crt\"\n"),
        expect![[r#"
            hospital.toml:43:1: error: `mllp.tls_cert` is given without `mllp.tls_key`: TLS on the MLLP listener needs both, or neither for plain TCP
            hospital.toml:43:12: error: `mllp.tls_cert` file "no-such.crt" does not exist
        "#]],
    );
    check(
        &with_mllp("tls_cert = \"\"\ntls_key = [\"edge.key\"]\n"),
        expect![[r#"
            hospital.toml:43:12: error: `mllp.tls_cert` must not be empty
            hospital.toml:44:11: error: `mllp.tls_key` must be a string, found array
        "#]],
    );
}

#[test]
fn duplicate_ids_name_the_first_definition() {
    let text = format!(
        "{}{BED}{}",
        valid(),
        r#"
[[facility]]
id = "DGH"
name = "Again"

[[building]]
id = "main"
facility = "DGH"
name = "Again"

[[floor]]
id = "main-3"
building = "main"
name = "Again"

[[unit]]
id = "3W"
floor = "main-3"
name = "Again"
level_of_care = "acute"

[[room]]
id = "3W-301"
unit = "3W"
"#
    );
    check(
        &text,
        expect![[r#"
            hospital.toml:43:6: error: duplicate bed id "3W-301-A" (first defined at line 38)
            hospital.toml:45:7: error: HL7 location DGH^3W^301^A is already mapped to bed "3W-301-A" at line 40
            hospital.toml:48:6: error: duplicate facility id "DGH" (first defined at line 14)
            hospital.toml:52:6: error: duplicate building id "main" (first defined at line 18)
            hospital.toml:57:6: error: duplicate floor id "main-3" (first defined at line 23)
            hospital.toml:62:6: error: duplicate unit id "3W" (first defined at line 28)
            hospital.toml:68:6: error: duplicate room id "3W-301" (first defined at line 34)
        "#]],
    );
}

#[test]
fn dangling_references_are_errors() {
    let text = valid()
        .replace("facility = \"DGH\"\nname", "facility = \"NOPE\"\nname")
        .replace("building = \"main\"", "building = \"annex\"")
        .replace("floor = \"main-3\"", "floor = \"main-9\"")
        .replace("unit = \"3W\"\n", "unit = \"4E\"\n")
        + r#"
[[bed]]
id = "3W-302-A"
room = "3W-302"
hl7 = { facility = "DGH", point_of_care = "3W", room = "302", bed = "A" }

[[bed]]
id = "ED-1"
unit = "ED"
hl7 = { facility = "DGH", point_of_care = "ED", room = "", bed = "1" }
"#;
    check(
        &text,
        expect![[r#"
            hospital.toml:19:12: error: building "main" refers to unknown facility "NOPE"
            hospital.toml:24:12: error: floor "main-3" refers to unknown building "annex"
            hospital.toml:29:9: error: unit "3W" refers to unknown floor "main-9"
            hospital.toml:35:8: error: room "3W-301" refers to unknown unit "4E"
            hospital.toml:44:8: error: bed "3W-302-A" refers to unknown room "3W-302"
            hospital.toml:49:8: error: bed "ED-1" refers to unknown unit "ED"
        "#]],
    );
}

#[test]
fn a_bed_needs_a_room_or_a_unit_that_agree() {
    let text = format!(
        "{}{}",
        valid(),
        r#"
[[unit]]
id = "4E"
floor = "main-3"
name = "4 East"
level_of_care = "acute"

[[bed]]
id = "4E-1"
unit = "4E"
hl7 = { facility = "DGH", point_of_care = "4E", room = "", bed = "1" }

[[bed]]
id = "NOWHERE"
hl7 = { facility = "DGH", point_of_care = "4E", room = "", bed = "2" }

[[bed]]
id = "3W-301-B"
room = "3W-301"
unit = "4E"
hl7 = { facility = "DGH", point_of_care = "3W", room = "301", bed = "B" }
"#
    );
    check(
        &text,
        expect![[r#"
            hospital.toml:53:1: error: bed "NOWHERE" has neither a room nor a unit
            hospital.toml:60:8: error: bed "3W-301-B" is in unit "4E" but its room "3W-301" belongs to unit "3W"
        "#]],
    );
}

#[test]
fn hl7_locations_must_be_present_complete_and_unique() {
    let text = format!(
        "{}{}",
        valid(),
        r#"
[[bed]]
id = "3W-301-B"
room = "3W-301"

[[bed]]
id = "3W-301-C"
room = "3W-301"
hl7 = { facility = "DGH", point_of_care = "3W", room = "301", bed = "A" }

[[bed]]
id = "3W-301-D"
room = "3W-301"
hl7 = { facility = "", point_of_care = "", room = "", bed = "" }

[[bed]]
id = "3W-301-E"
room = "3W-301"
hl7 = { facility = "DGH", point_of_care = "3W", room = "301^2", bed = "E" }
"#
    );
    check(
        &text,
        expect![[r#"
            hospital.toml:42:1: error: bed "3W-301-B" has no HL7 location mapping
            hospital.toml:49:7: error: HL7 location DGH^3W^301^A is already mapped to bed "3W-301-A" at line 40
            hospital.toml:54:20: error: `bed.hl7.facility` must not be empty
            hospital.toml:54:40: error: `bed.hl7.point_of_care` must not be empty
            hospital.toml:54:61: error: `bed.hl7.bed` must not be empty
            hospital.toml:59:56: error: `bed.hl7.room` must not contain '^': it is an HL7 delimiter or a control character
        "#]],
    );
}

#[test]
fn a_configuration_without_beds_is_an_error() {
    check(
        HEAD,
        expect![[r#"
        hospital.toml:1:1: error: no beds configured: at least one [[bed]] is required
    "#]],
    );
    check(
        &format!("bed = []\n{HEAD}"),
        expect![[r#"
        hospital.toml:1:7: error: no beds configured: at least one [[bed]] is required
    "#]],
    );
}

#[test]
fn an_empty_file_reports_every_missing_section() {
    check(
        "",
        expect![[r#"
        hospital.toml:1:1: error: missing required section [node]
        hospital.toml:1:1: error: missing required section [listen]
        hospital.toml:1:1: error: missing required section [store]
        hospital.toml:1:1: error: no beds configured: at least one [[bed]] is required
    "#]],
    );
}

#[test]
fn unknown_keys_are_errors_for_lint_and_warnings_for_load() {
    let text = valid()
        .replace(
            "node_id = \"edge-1\"",
            "node_id = \"edge-1\"\nfirmware_channel = \"beta\"",
        )
        .replace(
            "[[facility]]",
            "[dashboard]\nurl = \"https://dashboard.example\"\n\n[[facility]]",
        )
        .replace("room = \"301\", ", "room = \"301\", pl5 = \"x\", ");
    check(
        &text,
        expect![[r#"
            hospital.toml:5:1: error: unknown key `firmware_channel` in [node]; expected one of: hospital_id, region, node_id, name, timezone
            hospital.toml:14:2: error: unknown key `dashboard` in the top level; expected one of: node, listen, store, http, mllp, hl7, uplink, backup, fleet, bundles, inference, coding, facility, building, floor, unit, room, bed, or_room
            hospital.toml:44:63: error: unknown key `pl5` in `bed.hl7`; expected one of: facility, point_of_care, room, bed
        "#]],
    );

    let loaded = load_str(&text, file()).expect("unknown keys do not stop loading");
    expect![[r#"
        hospital.toml:5:1: warning: unknown key `firmware_channel` in [node]; expected one of: hospital_id, region, node_id, name, timezone
        hospital.toml:14:2: warning: unknown key `dashboard` in the top level; expected one of: node, listen, store, http, mllp, hl7, uplink, backup, fleet, bundles, inference, coding, facility, building, floor, unit, room, bed, or_room
        hospital.toml:44:63: warning: unknown key `pl5` in `bed.hl7`; expected one of: facility, point_of_care, room, bed
    "#]]
    .assert_eq(&render(&loaded.warnings));
    assert!(
        loaded
            .warnings
            .iter()
            .all(|d| d.severity == Severity::Warning)
    );
    assert_eq!(loaded.config.beds.len(), 1);
}

#[test]
fn load_fails_with_every_error_and_displays_them() {
    let text = valid()
        .replace("region = \"eu-west\"", "region = 5\nextra = 1")
        .replace("http = \"127.0.0.1:8080\"", "http = \"nowhere\"");
    let err: ConfigError = load_str(&text, file()).expect_err("invalid");
    expect![[r#"
        hospital.toml:3:10: error: `node.region` must be a string, found integer
        hospital.toml:9:8: error: `listen.http` is not a socket address: "nowhere"; expected IP:PORT, e.g. "127.0.0.1:8080""#]]
    .assert_eq(&err.to_string());
    assert_eq!(err.diagnostics.len(), 3, "the warning is kept too");
    let _: &dyn std::error::Error = &err;
}

#[test]
fn defaults_and_resolution() {
    let config: Config = load_str(&valid(), Path::new("/etc/hms/edge.toml"))
        .expect("valid")
        .config;
    assert_eq!(config.node.name, "demo-general");
    assert_eq!(config.listen.mllp, None);
    assert_eq!(config.store.data_dir, Path::new("/etc/hms/data"));
    assert_eq!(config.store.checkpoint_interval_s, 60);
    assert_eq!(config.store.journal_size_limit_mb, 64);
    assert_eq!(config.store.writer_queue, 1024);
    assert_eq!(config.store.max_batch, 256);
    assert_eq!(config.http.max_body_bytes, 65536);
    assert_eq!(config.http.shutdown_grace_s, 10);
    assert_eq!(config.http.history_limit, 20);
    assert_eq!(config.source, Path::new("/etc/hms/edge.toml"));
    assert_eq!(config.rooms[0].name, "3W-301");

    let bed = config.bed(&BedId::new("3W-301-A").unwrap()).expect("bed");
    assert_eq!(bed.unit.as_str(), "3W", "the unit comes from the room");
    assert_eq!(bed.attributes.level_of_care, LevelOfCare::Acute);
    assert_eq!(bed.attributes.room, Some(RoomId::new("3W-301").unwrap()));
    assert_eq!(bed.attributes.gender, GenderRestriction::Any);
    assert!(!bed.attributes.isolation_capable && !bed.attributes.telemetry);
    assert_eq!(
        bed.hl7,
        Hl7Location {
            facility: "DGH".into(),
            point_of_care: "3W".into(),
            room: "301".into(),
            bed: "A".into(),
        }
    );
    assert_eq!(bed.hl7.to_string(), "DGH^3W^301^A");
    assert!(config.unit(&UnitId::new("3W").unwrap()).is_some());
    assert!(config.unit(&UnitId::new("4E").unwrap()).is_none());
    assert!(config.bed(&BedId::new("3W-301-B").unwrap()).is_none());
}

#[test]
fn data_dir_resolves_against_the_config_directory() {
    let dir = |data_dir: &str, file: &str| {
        let text = valid().replace("data_dir = \"data\"", &format!("data_dir = {data_dir:?}"));
        load_str(&text, Path::new(file))
            .expect("valid")
            .config
            .store
            .data_dir
    };
    assert_eq!(dir("data", "edge.toml"), Path::new("data"));
    assert_eq!(dir("data", "conf/edge.toml"), Path::new("conf/data"));
    assert_eq!(
        dir("../d", "/etc/hms/edge.toml"),
        Path::new("/etc/hms/../d")
    );
    assert_eq!(
        dir("/var/lib/hms", "/etc/hms/edge.toml"),
        Path::new("/var/lib/hms")
    );
}

#[test]
fn explicit_values_override_defaults() {
    let text = valid()
        .replace("node_id = \"edge-1\"", "node_id = \"edge-1\"\nname = \"Demo\"")
        .replace(
            "http = \"127.0.0.1:8080\"",
            "http = \"[::1]:9000\"\nmllp = \"0.0.0.0:2575\"",
        )
        .replace(
            "data_dir = \"data\"",
            "data_dir = \"data\"\ncheckpoint_interval_s = 5\njournal_size_limit_mb = 0\nwriter_queue = 1\nmax_batch = 0x10\n\n[http]\nmax_body_bytes = 1_000\nshutdown_grace_s = 0\nhistory_limit = 0",
        )
        .replace(
            "room = \"3W-301\"\nhl7",
            "room = \"3W-301\"\nunit = \"3W\"\ngender = \"male\"\nisolation_capable = true\ntelemetry = true\nbariatric = true\nlevel_of_care = \"icu\"\ntags = [\"window\"]\nhl7",
        );
    let loaded = load_str(&text, file()).expect("valid");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.node.name, "Demo");
    assert_eq!(c.listen.http.to_string(), "[::1]:9000");
    assert_eq!(c.listen.mllp.map(|a| a.port()), Some(2575));
    assert_eq!(
        (c.store.checkpoint_interval_s, c.store.journal_size_limit_mb),
        (5, 0)
    );
    assert_eq!((c.store.writer_queue, c.store.max_batch), (1, 16));
    assert_eq!(
        (
            c.http.max_body_bytes,
            c.http.shutdown_grace_s,
            c.http.history_limit
        ),
        (1000, 0, 0)
    );
    let a = &c.beds[0].attributes;
    assert_eq!(a.gender, GenderRestriction::Male);
    assert!(a.isolation_capable && a.telemetry && a.bariatric);
    assert_eq!(a.level_of_care, LevelOfCare::Icu);
    assert_eq!(a.tags, ["window"]);
}

#[test]
fn the_demo_hospital_loads_and_lints_clean() {
    let path = repo_file("demo-hospital.toml");
    assert_eq!(lint(&path), []);
    let loaded = load(&path).expect("demo config loads");
    assert!(loaded.warnings.is_empty());
    let c = loaded.config;
    assert_eq!(c.beds.len(), 40);
    assert_eq!(c.node.hospital_id.as_str(), "demo-general");
    assert_eq!(c.node.region.as_str(), "eu-west");
    assert_eq!(c.node.node_id.as_str(), "edge-1");
    assert_eq!(c.listen.http.to_string(), "127.0.0.1:8080");
    assert_eq!(
        c.listen.mllp.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:2575")
    );
    assert_eq!(
        c.mllp,
        MllpSection::default(),
        "the demo's [mllp] section spells out the defaults"
    );
    assert!(
        c.store.data_dir.ends_with("config/../demo-data"),
        "{:?}",
        c.store.data_dir
    );
    let per_unit: Vec<(String, usize)> = c
        .units
        .iter()
        .map(|u| (u.id.to_string(), c.beds_of(&u.id).count()))
        .collect();
    expect![[r#"[("OBS", 4), ("ICU", 6), ("MAT", 4), ("3W", 14), ("4E", 12)]"#]]
        .assert_eq(&format!("{per_unit:?}"));
    let icu = UnitId::new("ICU").unwrap();
    assert!(
        c.beds_of(&icu)
            .all(|b| b.attributes.isolation_capable && b.attributes.telemetry)
    );
    let mat = UnitId::new("MAT").unwrap();
    assert!(
        c.beds_of(&mat)
            .all(|b| b.attributes.gender == GenderRestriction::Female)
    );
    let obs = c.bed(&BedId::new("OBS-1").unwrap()).expect("OBS-1");
    assert_eq!(obs.attributes.level_of_care, LevelOfCare::Observation);
    assert_eq!(obs.attributes.room, None);
    assert!(c.bed(&BedId::new("3W-301-A").unwrap()).is_some());
    let or_rooms: Vec<String> = c.or_rooms.iter().map(|r| r.hl7.to_string()).collect();
    assert_eq!(
        or_rooms,
        [
            "DGH^OR^OR-1^",
            "DGH^OR^OR-2^",
            "DGH^OR^OR-3^",
            "DGH^OR^OR-4^"
        ]
    );
    assert!(c.or_rooms.iter().all(|r| r.suite == "MAIN-OR"));
    let or1 = c.or_room(&OrRoomId::new("OR-1").unwrap()).expect("OR-1");
    assert_eq!(or1.name, "Operating Room 1");
}

#[test]
fn examples_lint_clean_at_every_size() {
    let sizes = (1..=60)
        .chain((61..=5000).step_by(211))
        .chain([500, 999, 1000, 2000, 5000]);
    for beds in sizes {
        let text = example(beds, "metro-general");
        let diagnostics = lint_str(&text, Path::new("example.toml"));
        assert!(
            diagnostics.is_empty(),
            "{beds} beds:\n{}",
            render(&diagnostics)
        );
        let c = load_str(&text, Path::new("example.toml"))
            .expect("loads")
            .config;
        assert_eq!(c.beds.len(), beds);
        assert_eq!(c.node.hospital_id.as_str(), "metro-general");
        assert_eq!(c.listen.http.to_string(), "127.0.0.1:8080");
        assert_eq!(c.store.data_dir, Path::new("data"));
        assert!(!text.contains("[mllp]"), "{beds} beds");
        assert_eq!(c.mllp, MllpSection::default());
        assert_eq!(
            c.or_rooms.len(),
            (beds / 100).clamp(2, 20),
            "{beds} beds: one OR room per 100 beds, 2 to 20"
        );
        for u in &c.units {
            let n = c.beds_of(&u.id).count();
            assert!(n <= 40, "{beds}: unit {} has {n} beds", u.id);
            assert!(n >= 8 || beds < 8, "{beds}: unit {} has {n} beds", u.id);
        }
        for r in &c.rooms {
            let n = c
                .beds
                .iter()
                .filter(|b| b.attributes.room.as_ref() == Some(&r.id))
                .count();
            assert!((1..=4).contains(&n), "{beds}: room {} has {n} beds", r.id);
        }
    }
}

#[test]
fn a_large_example_has_a_realistic_mix() {
    let c = load_str(&example(2000, "metro-general"), file())
        .expect("loads")
        .config;
    let share = |f: &dyn Fn(&firmware_config::Bed) -> bool| c.beds.iter().filter(|b| f(b)).count();
    let icu = share(&|b| b.attributes.level_of_care == LevelOfCare::Icu);
    assert!((140..=180).contains(&icu), "ICU beds: {icu}");
    for level in [
        LevelOfCare::StepDown,
        LevelOfCare::Acute,
        LevelOfCare::Maternity,
        LevelOfCare::Pediatric,
        LevelOfCare::Observation,
    ] {
        assert!(
            share(&|b| b.attributes.level_of_care == level) > 0,
            "{level:?}"
        );
    }
    assert!(share(&|b| b.attributes.isolation_capable) > 100);
    assert!(share(&|b| b.attributes.telemetry) > 200);
    let bariatric = share(&|b| b.attributes.bariatric);
    assert!((10..=100).contains(&bariatric), "bariatric: {bariatric}");
    assert!(share(&|b| b.attributes.gender == GenderRestriction::Male) > 0);
    assert!(share(&|b| b.attributes.gender == GenderRestriction::Female) > 0);
    assert_eq!(c.facilities.len(), 2);
    assert_eq!(c.buildings.len(), 2);
    assert_eq!(
        example(2000, "metro-general"),
        example(2000, "metro-general")
    );
}

#[test]
fn the_committed_2000_bed_hospital_is_the_generated_one() {
    let path = repo_file("hospital-2000.toml");
    let committed = std::fs::read_to_string(&path).expect("config/hospital-2000.toml");
    assert!(
        committed == example(2000, "metro-general"),
        "config/hospital-2000.toml is stale: regenerate it with \
         `hms-config example --beds 2000 --hospital metro-general > config/hospital-2000.toml`"
    );
    assert_eq!(lint(&path), []);
    let c = load(&path).expect("loads").config;
    assert_eq!(c.beds.len(), 2000);
    assert_eq!(c.or_rooms.len(), 20);
}

#[test]
fn an_unreadable_file_is_an_error_at_line_zero() {
    let missing = Path::new("/nonexistent/hms/edge.toml");
    let diagnostics = lint(missing);
    assert_eq!(diagnostics.len(), 1);
    let d = &diagnostics[0];
    assert_eq!((d.line, d.col, d.severity), (0, 0, Severity::Error));
    assert!(
        d.to_string()
            .starts_with("/nonexistent/hms/edge.toml:0:0: error: cannot read the file: "),
        "{d}"
    );
    let err = load(missing).expect_err("missing file");
    assert_eq!(err.diagnostics, diagnostics);
}

#[test]
fn binary_garbage_is_a_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.toml");
    let mut bytes = b"[node]\nname = \"ok\"\n".to_vec();
    bytes.extend((0u32..4096).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&path, &bytes).unwrap();
    let diagnostics = lint(&path);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert!(
        diagnostics[0].message.contains("not valid UTF-8"),
        "{diagnostics:?}"
    );
    assert!(diagnostics[0].line >= 3, "{diagnostics:?}");

    let lossy = String::from_utf8_lossy(&bytes);
    let diagnostics = lint_str(&lossy, file());
    assert!(diagnostics.iter().any(Diagnostic::is_error));
    let with_nul = "[node]\nhospital_id = \"a\0b\"\n\u{feff}\x01\x02";
    assert!(lint_str(with_nul, file()).iter().any(Diagnostic::is_error));
}

#[test]
fn a_one_mebibyte_line_is_handled() {
    let long = "x".repeat(1 << 20);
    let text = valid().replace("node_id = \"edge-1\"", &format!("node_id = \"{long}\""));
    let diagnostics = lint_str(&text, file());
    expect![[r#"
        hospital.toml:4:11: error: invalid node id "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"…: id is longer than 64 bytes
    "#]]
    .assert_eq(&render(&diagnostics));
    let text = format!("{}{long}\n", valid());
    let diagnostics = lint_str(&text, file());
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].line, 41);
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let depth = 100_000;
    let arrays = format!("x = {}{}\n", "[".repeat(depth), "]".repeat(depth));
    let tables = format!("x = {}1{}\n", "{a=".repeat(depth), "}".repeat(depth));
    let headers = format!("[{}]\n", vec!["a"; depth].join("."));
    for text in [arrays, tables, headers] {
        let diagnostics = lint_str(&text, file());
        assert!(diagnostics.iter().any(Diagnostic::is_error));
    }
}

mod cli {
    use super::*;

    fn hms_config(args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_hms-config"))
            .args(args)
            .output()
            .expect("run hms-config");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn a_clean_file_exits_0() {
        let demo = repo_file("demo-hospital.toml");
        let (code, out, err) = hms_config(&["lint", demo.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.ends_with("demo-hospital.toml: ok (40 beds, 5 units)\n"),
            "{out}"
        );
        assert_eq!(err, "");
    }

    #[test]
    fn a_broken_file_exits_1_with_diagnostics_on_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.toml");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&good, valid()).unwrap();
        std::fs::write(
            &bad,
            valid().replace("region = \"eu-west\"", "region = 5\nzone = 1"),
        )
        .unwrap();
        let (code, out, err) = hms_config(&["lint", good.to_str().unwrap(), bad.to_str().unwrap()]);
        assert_eq!(code, 1);
        let good = good.display();
        let bad = bad.display();
        assert_eq!(
            out,
            format!("{good}: ok (1 beds, 1 units)\n{bad}: 2 errors, 0 warnings\n")
        );
        assert_eq!(
            err,
            format!(
                "{bad}:3:10: error: `node.region` must be a string, found integer\n\
                 {bad}:4:1: error: unknown key `zone` in [node]; expected one of: hospital_id, region, node_id, name, timezone\n"
            )
        );
    }

    #[test]
    fn warnings_alone_exit_0() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spare.toml");
        let text = format!(
            "{}\n[[unit]]\nid = \"4E\"\nfloor = \"main-3\"\nname = \"4 East\"\nlevel_of_care = \"acute\"\n",
            valid()
        );
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = hms_config(&["lint", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.ends_with("spare.toml: ok (1 beds, 2 units), 1 warning\n"),
            "{out}"
        );
        assert!(
            err.ends_with("spare.toml:43:6: warning: unit \"4E\" has no beds\n"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_exits_1() {
        let (code, out, err) = hms_config(&["lint", "/nonexistent/edge.toml"]);
        assert_eq!(code, 1);
        assert_eq!(out, "/nonexistent/edge.toml: 1 error, 0 warnings\n");
        assert!(
            err.starts_with("/nonexistent/edge.toml:0:0: error: cannot read the file"),
            "{err}"
        );
    }

    #[test]
    fn bad_usage_exits_64() {
        for args in [
            &[][..],
            &["frobnicate"],
            &["lint"],
            &["lint", "--strict", "x.toml"],
            &["example"],
            &["example", "--beds", "0"],
            &["example", "--beds", "many"],
            &["example", "--beds", "10", "--hospital", "bad id"],
        ] {
            let (code, out, err) = hms_config(args);
            assert_eq!(code, 64, "{args:?}: {out}{err}");
            assert!(!err.is_empty(), "{args:?}");
        }
        let (code, out, _) = hms_config(&["--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("lint"));
    }

    #[test]
    fn example_prints_a_config_that_lints_clean() {
        let (code, out, err) = hms_config(&["example", "--beds", "40", "--hospital", "st-mary"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, example(40, "st-mary"));
        let (_, default, _) = hms_config(&["example", "--beds", "12"]);
        assert_eq!(default, example(12, "demo-general"));
        assert_eq!(lint_str(&default, file()), []);
    }
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_text_never_panics(text in "\\PC{0,300}") {
            let _ = lint_str(&text, file());
            let _ = load_str(&text, file());
        }

        #[test]
        fn random_toml_like_text_never_panics(
            text in "(\\[{1,2}[a-z.]{0,8}\\]{0,2}\n|[a-z_]{1,12} = (\"[^\"\n]{0,12}\"|-?[0-9_]{1,22}|true|\\[|\\{|[0-9x.e+-]{1,8})\n){0,20}"
        ) {
            let _ = lint_str(&text, file());
        }

        #[test]
        fn edits_of_a_valid_file_never_panic(
            cut in 0usize..2000,
            len in 0usize..40,
            insert in "\\PC{0,8}",
        ) {
            let base = valid();
            let mut at = cut.min(base.len());
            while !base.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + len).min(base.len());
            while !base.is_char_boundary(end) {
                end -= 1;
            }
            let text = format!("{}{insert}{}", &base[..at], &base[end..]);
            let diagnostics = lint_str(&text, file());
            for d in &diagnostics {
                prop_assert!(d.line >= 1 && d.col >= 1, "{d}");
            }
            if let Ok(loaded) = load_str(&text, file()) {
                prop_assert!(!loaded.config.beds.is_empty());
            }
        }
    }
}

#[test]
fn uplink_backup_and_fleet_are_absent_by_default() {
    let loaded = load_str(&valid(), file()).expect("valid");
    assert_eq!(loaded.config.uplink, None);
    assert_eq!(loaded.config.backup, None);
    assert_eq!(loaded.config.fleet, None, "no [fleet]: no fleet channel");
}

#[test]
fn the_uplink_section_resolves_paths_and_defaults() {
    let (dir, config) = tls_dir();
    let text = format!(
        "{}\n[uplink]\ncloud = \"https://cloud.example:9443\"\nca = \"edge.crt\"\n\
         key_file = \"keys/sync.pk8\"\nretention_bed_h = 12\n\n[backup]\ndir = \"snapshots\"\nkeep = 3\n",
        valid()
    );
    std::fs::write(&config, &text).expect("write");
    assert_eq!(render_in(dir.path(), &lint(&config)), "");
    let loaded = load(&config).expect("valid");
    let uplink = loaded.config.uplink.expect("uplink");
    assert_eq!(uplink.cloud, ["https://cloud.example:9443"]);
    assert_eq!(uplink.failback_s, 300);
    assert_eq!(uplink.ca, Some(dir.path().join("edge.crt")));
    assert_eq!(uplink.key_file, Some(dir.path().join("keys/sync.pk8")));
    assert_eq!(uplink.batch_events, 1_000);
    assert_eq!(uplink.retention.bed_h, 12);
    assert_eq!(
        uplink.retention.adt_h,
        7 * 24,
        "unset retentions keep the defaults"
    );
    assert_eq!(uplink.retention.audit_h, 365 * 24);
    let backup = loaded.config.backup.expect("backup");
    assert_eq!(backup.dir, dir.path().join("snapshots"));
    assert_eq!((backup.interval_h, backup.keep), (24, 3));
}

#[test]
fn uplink_errors_are_located() {
    let (dir, config) = tls_dir();
    let cases = [
        (
            "cloud = \"ftp://cloud:21\"\n",
            expect![[r#"
                $DIR/edge.toml:43:9: error: `uplink.cloud` must start with https:// (or http:// on loopback), found "ftp://cloud:21"
            "#]],
        ),
        (
            "cloud = \"https://cloud.example\"\nca = \"edge.crt\"\n",
            expect![[r#"
                $DIR/edge.toml:43:9: error: `uplink.cloud` must name a port (HOST:PORT), found "https://cloud.example"
            "#]],
        ),
        (
            "cloud = \"http://127.0.0.1:9443/sync\"\n",
            expect![[r#"
                $DIR/edge.toml:43:9: error: `uplink.cloud` must be a URL of the form https://HOST:PORT with no path, found "http://127.0.0.1:9443/sync"
            "#]],
        ),
        (
            "cloud = \"https://cloud.example:9443\"\n",
            expect![[r#"
                $DIR/edge.toml:43:9: error: `uplink.cloud` is https but `uplink.ca` is not given: name the PEM file of the CA that signed the cloud's certificate
            "#]],
        ),
        (
            "cloud = \"http://127.0.0.1:9443\"\nca = \"missing.pem\"\nbatch_events = 5000\nretention_adt_h = 0\n",
            expect![[r#"
                $DIR/edge.toml:44:6: error: `uplink.ca` file "missing.pem" does not exist (looked for $DIR/missing.pem)
                $DIR/edge.toml:45:16: error: `uplink.batch_events` must be between 1 and 1000, found 5000
                $DIR/edge.toml:46:19: error: `uplink.retention_adt_h` must be between 1 and 87600, found 0
            "#]],
        ),
        (
            "batch_events = 10\n",
            expect![[r#"
                $DIR/edge.toml:42:1: error: missing required key `cloud` in [uplink]
            "#]],
        ),
        (
            "cloud = \"http://10.0.0.5:9443\"\n",
            expect![[r#"
                $DIR/edge.toml:43:9: error: `uplink.cloud` must be https:// to reach another machine (PHI crosses networks only inside TLS); plain http:// is only for loopback (127.0.0.0/8, [::1], localhost), found "http://10.0.0.5:9443"
            "#]],
        ),
        (
            "cloud = \"http://cloud.example:9443\"\n",
            expect![[r#"
                $DIR/edge.toml:43:9: error: `uplink.cloud` must be https:// to reach another machine (PHI crosses networks only inside TLS); plain http:// is only for loopback (127.0.0.0/8, [::1], localhost), found "http://cloud.example:9443"
            "#]],
        ),
        (
            "cloud = [\"http://127.0.0.1:9443\", \"http://10.0.0.6:9443\", \"http://127.0.0.1:9443\", 7, \"\"]\nfailback_s = 0\n",
            expect![[r#"
                $DIR/edge.toml:43:35: error: `uplink.cloud` must be https:// to reach another machine (PHI crosses networks only inside TLS); plain http:// is only for loopback (127.0.0.0/8, [::1], localhost), found "http://10.0.0.6:9443"
                $DIR/edge.toml:43:59: error: `uplink.cloud` lists "http://127.0.0.1:9443" twice
                $DIR/edge.toml:43:84: error: `uplink.cloud` must hold only URLs, found integer
                $DIR/edge.toml:43:87: error: `uplink.cloud` must not be empty
                $DIR/edge.toml:44:14: error: `uplink.failback_s` must be between 1 and 86400, found 0
            "#]],
        ),
        (
            "cloud = []\n",
            expect![[r#"
                $DIR/edge.toml:43:9: error: `uplink.cloud` is empty: name the cloud's address
            "#]],
        ),
        (
            "cloud = 9443\n",
            expect![[r#"
                $DIR/edge.toml:43:9: error: `uplink.cloud` must be a URL or an array of URLs, found integer
            "#]],
        ),
        (
            "cloud = [\"http://127.0.0.1:9443\", \"https://cloud-dr.example:9443\"]\n",
            expect![[r#"
                $DIR/edge.toml:43:35: error: `uplink.cloud` is https but `uplink.ca` is not given: name the PEM file of the CA that signed the cloud's certificate
            "#]],
        ),
        (
            "cloud = \"http://127.0.0.1.example:9443\"\n",
            expect![[r#"
                $DIR/edge.toml:43:9: error: `uplink.cloud` must be https:// to reach another machine (PHI crosses networks only inside TLS); plain http:// is only for loopback (127.0.0.0/8, [::1], localhost), found "http://127.0.0.1.example:9443"
            "#]],
        ),
    ];
    for (body, expected) in cases {
        let text = format!("{}\n[uplink]\n{body}", valid());
        std::fs::write(&config, &text).expect("write");
        expected.assert_eq(&render_in(dir.path(), &lint(&config)));
    }
}

#[test]
fn plain_http_uplinks_are_for_loopback_only() {
    for cloud in [
        "http://127.0.0.1:9443",
        "http://127.8.9.10:9443",
        "http://[::1]:9443",
        "http://localhost:9443",
        "http://LOCALHOST:9443/",
    ] {
        let text = format!("{}\n[uplink]\ncloud = \"{cloud}\"\n", valid());
        let loaded = load_str(&text, file()).unwrap_or_else(|e| panic!("{cloud}: {e}"));
        assert_eq!(loaded.config.uplink.expect("uplink").cloud, [cloud]);
    }
    let text = format!(
        "{}\n[uplink]\ncloud = [\"http://127.0.0.1:9443\", \"http://localhost:9444\"]\nfailback_s = 30\n",
        valid()
    );
    let uplink = load_str(&text, file()).unwrap().config.uplink.unwrap();
    assert_eq!(
        (uplink.cloud, uplink.failback_s),
        (
            vec![
                "http://127.0.0.1:9443".to_owned(),
                "http://localhost:9444".to_owned()
            ],
            30
        )
    );
    for cloud in [
        "http://10.0.0.5:9443",
        "http://0.0.0.0:9443",
        "http://[::]:9443",
        "http://[::ffff:10.0.0.5]:9443",
        "http://192.168.1.20:9443",
        "http://localhost.example:9443",
    ] {
        let text = format!("{}\n[uplink]\ncloud = \"{cloud}\"\n", valid());
        let e = load_str(&text, file()).expect_err(cloud).to_string();
        assert!(
            e.contains("`uplink.cloud` must be https:// to reach another machine"),
            "{cloud}: {e}"
        );
    }
}

/// [`tls_dir`] with the cloud's fleet public key `fleet.pub` too.
fn fleet_dir() -> (tempfile::TempDir, PathBuf) {
    let (dir, config) = tls_dir();
    std::fs::write(dir.path().join("fleet.pub"), "").expect("fleet.pub");
    (dir, config)
}

#[test]
fn a_loopback_mqtt_fleet_takes_the_defaults() {
    let (dir, config) = fleet_dir();
    let text = format!(
        "{}\n[fleet]\nbroker = \"mqtt://127.0.0.1\"\ncommand_key = \"fleet.pub\"\n",
        valid()
    );
    std::fs::write(&config, &text).expect("write");
    assert_eq!(render_in(dir.path(), &lint(&config)), "");
    let fleet = load(&config).expect("valid").config.fleet.expect("fleet");
    assert_eq!(
        fleet,
        FleetSection {
            broker: FleetBroker {
                tls: false,
                host: "127.0.0.1".to_owned(),
                port: 1883,
            },
            ca: None,
            client_cert: None,
            client_key: None,
            keepalive_s: DEFAULT_FLEET_KEEPALIVE_S,
            telemetry_s: DEFAULT_FLEET_TELEMETRY_S,
            command_key: dir.path().join("fleet.pub"),
        }
    );
    assert_eq!((fleet.keepalive_s, fleet.telemetry_s), (30, 60));
    assert_eq!(fleet.broker.to_string(), "mqtt://127.0.0.1:1883");

    for (broker, shown) in [
        ("mqtt://[::1]", "mqtt://[::1]:1883"),
        ("mqtt://[::1]:11883/", "mqtt://[::1]:11883"),
        ("mqtt://localhost:1884", "mqtt://localhost:1884"),
        ("mqtt://127.8.9.10", "mqtt://127.8.9.10:1883"),
    ] {
        let text = format!(
            "{}\n[fleet]\nbroker = \"{broker}\"\ncommand_key = \"fleet.pub\"\n",
            valid()
        );
        std::fs::write(&config, &text).expect("write");
        let fleet = load(&config)
            .unwrap_or_else(|e| panic!("{broker}: {e}"))
            .config
            .fleet
            .expect("fleet");
        assert_eq!(fleet.broker.to_string(), shown);
    }
}

#[test]
fn an_mqtts_fleet_resolves_its_tls_files() {
    let (dir, config) = fleet_dir();
    std::fs::create_dir(dir.path().join("keys")).expect("keys/");
    std::fs::write(dir.path().join("keys/fleet.pub"), "").expect("keys/fleet.pub");
    let text = format!(
        "{}\n[fleet]\nbroker = \"mqtts://fleet.example\"\nca = \"edge.crt\"\n\
         client_cert = \"edge.crt\"\nclient_key = \"edge.key\"\nkeepalive_s = 120\n\
         telemetry_s = 300\ncommand_key = \"keys/fleet.pub\"\n",
        valid()
    );
    std::fs::write(&config, &text).expect("write");
    assert_eq!(render_in(dir.path(), &lint(&config)), "");
    let fleet = load(&config).expect("valid").config.fleet.expect("fleet");
    assert_eq!(
        fleet,
        FleetSection {
            broker: FleetBroker {
                tls: true,
                host: "fleet.example".to_owned(),
                port: 8883,
            },
            ca: Some(dir.path().join("edge.crt")),
            client_cert: Some(dir.path().join("edge.crt")),
            client_key: Some(dir.path().join("edge.key")),
            keepalive_s: 120,
            telemetry_s: 300,
            command_key: dir.path().join("keys/fleet.pub"),
        }
    );
    assert_eq!(fleet.broker.to_string(), "mqtts://fleet.example:8883");

    let text = format!(
        "{}\n[fleet]\nbroker = \"mqtts://10.20.0.7:8884\"\nca = \"edge.crt\"\n\
         command_key = \"fleet.pub\"\n",
        valid()
    );
    std::fs::write(&config, &text).expect("write");
    let fleet = load(&config).expect("valid").config.fleet.expect("fleet");
    assert_eq!(
        (
            fleet.broker.to_string(),
            fleet.client_cert,
            fleet.client_key
        ),
        ("mqtts://10.20.0.7:8884".to_owned(), None, None),
        "the client certificate is optional"
    );
}

#[test]
fn fleet_errors_are_located() {
    let (dir, config) = fleet_dir();
    let cases = [
        (
            "broker = \"mqtt://fleet.example:1883\"\ncommand_key = \"fleet.pub\"\n",
            expect![[r#"
                $DIR/edge.toml:43:10: error: `fleet.broker` must be mqtts:// to reach another machine (fleet telemetry and commands cross networks only inside TLS); plain mqtt:// is only for loopback (127.0.0.0/8, [::1], localhost), found "mqtt://fleet.example:1883"
            "#]],
        ),
        (
            "broker = \"mqtt://10.0.0.5\"\ncommand_key = \"fleet.pub\"\n",
            expect![[r#"
                $DIR/edge.toml:43:10: error: `fleet.broker` must be mqtts:// to reach another machine (fleet telemetry and commands cross networks only inside TLS); plain mqtt:// is only for loopback (127.0.0.0/8, [::1], localhost), found "mqtt://10.0.0.5"
            "#]],
        ),
        (
            "broker = \"mqtts://fleet.example:8883\"\ncommand_key = \"fleet.pub\"\n",
            expect![[r#"
                $DIR/edge.toml:43:10: error: `fleet.broker` is mqtts but `fleet.ca` is not given: name the PEM file of the CA that signed the broker's certificate
            "#]],
        ),
        (
            "broker = \"mqtts://fleet.example\"\nca = \"edge.crt\"\ncommand_key = \"missing.pub\"\n",
            expect![[r#"
                $DIR/edge.toml:45:15: error: `fleet.command_key` file "missing.pub" does not exist (looked for $DIR/missing.pub)
            "#]],
        ),
        (
            "broker = \"mqtt://localhost\"\ncommand_key = \"not-a-file\"\nkeepalive_s = 2\ntelemetry_s = 86401\n",
            expect![[r#"
                $DIR/edge.toml:44:15: error: `fleet.command_key` file "not-a-file" is a directory, not a file (looked for $DIR/not-a-file)
                $DIR/edge.toml:45:15: error: `fleet.keepalive_s` must be between 5 and 3600, found 2
                $DIR/edge.toml:46:15: error: `fleet.telemetry_s` must be between 5 and 86400, found 86401
            "#]],
        ),
        (
            "broker = \"mqtt://localhost\"\ncommand_key = \"fleet.pub\"\nkeepalive_s = 3601\n",
            expect![[r#"
                $DIR/edge.toml:45:15: error: `fleet.keepalive_s` must be between 5 and 3600, found 3601
            "#]],
        ),
        (
            "keepalive_s = 60\n",
            expect![[r#"
                $DIR/edge.toml:42:1: error: missing required key `broker` in [fleet]
                $DIR/edge.toml:42:1: error: missing required key `command_key` in [fleet]
            "#]],
        ),
        (
            "broker = \"mqtt://127.0.0.1:1883\"\nca = \"edge.crt\"\nclient_cert = \"edge.crt\"\nclient_key = \"edge.key\"\ncommand_key = \"fleet.pub\"\n",
            expect![[r#"
                $DIR/edge.toml:44:1: error: `fleet.ca` is only for an mqtts:// broker, but `fleet.broker` is plain mqtt://: remove it, or use mqtts://
                $DIR/edge.toml:45:1: error: `fleet.client_cert` is only for an mqtts:// broker, but `fleet.broker` is plain mqtt://: remove it, or use mqtts://
                $DIR/edge.toml:46:1: error: `fleet.client_key` is only for an mqtts:// broker, but `fleet.broker` is plain mqtt://: remove it, or use mqtts://
            "#]],
        ),
        (
            "broker = \"mqtts://fleet.example\"\nca = \"edge.crt\"\nclient_cert = \"edge.crt\"\ncommand_key = \"fleet.pub\"\n",
            expect![[r#"
                $DIR/edge.toml:45:1: error: `fleet.client_cert` is given without `fleet.client_key`: a client certificate needs its key: give both, or neither for no client certificate
            "#]],
        ),
        (
            "broker = \"tcp://fleet.example:1883\"\ncommand_key = \"fleet.pub\"\n",
            expect![[r#"
                $DIR/edge.toml:43:10: error: `fleet.broker` must start with mqtts:// (or mqtt:// on loopback), found "tcp://fleet.example:1883"
            "#]],
        ),
        (
            "broker = \"mqtts://:8883\"\ncommand_key = \"fleet.pub\"\n",
            expect![[r#"
                $DIR/edge.toml:43:10: error: `fleet.broker` must be a URL of the form mqtts://HOST[:PORT] with no path, found "mqtts://:8883"
            "#]],
        ),
        (
            "broker = \"mqtts://fleet.example:0\"\ncommand_key = \"fleet.pub\"\n",
            expect![[r#"
                $DIR/edge.toml:43:10: error: `fleet.broker` must be a URL of the form mqtts://HOST[:PORT] with no path, found "mqtts://fleet.example:0"
            "#]],
        ),
        (
            "broker = \"mqtts://fleet.example:8883/edge\"\ncommand_key = \"fleet.pub\"\n",
            expect![[r#"
                $DIR/edge.toml:43:10: error: `fleet.broker` must be a URL of the form mqtts://HOST[:PORT] with no path, found "mqtts://fleet.example:8883/edge"
            "#]],
        ),
        (
            "broker = \"mqtt://localhost?client=edge-1\"\ncommand_key = \"fleet.pub\"\n",
            expect![[r#"
                $DIR/edge.toml:43:10: error: `fleet.broker` must be a URL of the form mqtts://HOST[:PORT] with no path, found "mqtt://localhost?client=edge-1"
            "#]],
        ),
    ];
    for (body, expected) in cases {
        let text = format!("{}\n[fleet]\n{body}", valid());
        std::fs::write(&config, &text).expect("write");
        expected.assert_eq(&render_in(dir.path(), &lint(&config)));
    }
}

#[test]
fn the_broker_url_is_strict() {
    let (_dir, config) = fleet_dir();
    for broker in [
        "mqtt://10.0.0.5:1883",
        "mqtt://0.0.0.0",
        "mqtt://[::]",
        "mqtt://[::ffff:127.0.0.1]",
        "mqtt://localhost.example",
        "mqtts://fleet.example:65536",
        "mqtts://fleet.example:+8883",
        "mqtts://fleet.example:",
        "mqtts://user@fleet.example",
        "mqtts://fleet.example#x",
        "mqtts://[fleet.example]:8883",
        "mqtts://[::1",
        "mqtts://",
        "MQTTS://fleet.example",
        "https://fleet.example:8883",
        "ssl://fleet.example:8883",
        "fleet.example:8883",
    ] {
        let text = format!(
            "{}\n[fleet]\nbroker = \"{broker}\"\nca = \"edge.crt\"\ncommand_key = \"fleet.pub\"\n",
            valid()
        );
        std::fs::write(&config, &text).expect("write");
        let found = lint(&config);
        assert!(
            found.len() == 1 && found[0].message.starts_with("`fleet.broker` must "),
            "{broker}: {found:?}"
        );
        assert!(load(&config).is_err(), "{broker}");
    }
}

#[test]
fn unknown_fleet_keys_are_errors_for_lint_and_warnings_for_load() {
    let (dir, config) = fleet_dir();
    let text = format!(
        "{}\n[fleet]\nbroker = \"mqtt://127.0.0.1\"\ncommand_key = \"fleet.pub\"\ntopic = \"hms/edge-1\"\n",
        valid()
    );
    std::fs::write(&config, &text).expect("write");
    expect![[r#"
        $DIR/edge.toml:45:1: error: unknown key `topic` in [fleet]; expected one of: broker, ca, client_cert, client_key, keepalive_s, telemetry_s, command_key
    "#]]
    .assert_eq(&render_in(dir.path(), &lint(&config)));
    let loaded = load(&config).expect("unknown keys do not stop loading");
    expect![[r#"
        $DIR/edge.toml:45:1: warning: unknown key `topic` in [fleet]; expected one of: broker, ca, client_cert, client_key, keepalive_s, telemetry_s, command_key
    "#]]
    .assert_eq(&render_in(dir.path(), &loaded.warnings));
    assert!(loaded.config.fleet.is_some());
}

#[test]
fn the_inference_section_defaults_and_resolves_paths() {
    let (dir, config) = tls_dir();
    std::fs::write(&config, valid()).expect("write");
    let c = load(&config).expect("valid").config;
    assert_eq!(c.inference.models, dir.path().join("models"));
    assert_eq!(c.inference.library, None);
    assert!(!c.inference.cuda);
    assert!(!c.inference.cuda_tf32, "TF32 is off unless asked");
    assert_eq!((c.inference.timeout_ms, c.inference.refresh_s), (250, 300));
    let text = format!(
        "{}\n[inference]\nmodels = \"../set\"\nlibrary = \"lib/libonnxruntime.so\"\ncuda = true\ntimeout_ms = 100\n",
        valid()
    );
    std::fs::write(&config, &text).expect("write");
    let c = load(&config).expect("valid").config;
    assert!(c.inference.cuda);
    assert!(!c.inference.cuda_tf32, "cuda alone leaves TF32 off");
    std::fs::write(
        &config,
        text.replace("cuda = true\n", "cuda = true\ncuda_tf32 = true\n"),
    )
    .expect("write");
    let c = load(&config).expect("valid").config;
    assert!(c.inference.cuda && c.inference.cuda_tf32);
    assert_eq!(c.inference.cuda_min_rows, 4096, "the measured default");
    std::fs::write(
        &config,
        text.replace("cuda = true\n", "cuda = true\ncuda_min_rows = 64\n"),
    )
    .expect("write");
    assert_eq!(
        load(&config).expect("valid").config.inference.cuda_min_rows,
        64
    );
    std::fs::write(&config, &text).expect("write");
    let c = load(&config).expect("valid").config;
    assert_eq!(c.inference.models, dir.path().join("../set"));
    assert_eq!(
        c.inference.library,
        Some(dir.path().join("lib/libonnxruntime.so"))
    );
    assert!(c.inference.cuda);
    assert_eq!(c.inference.timeout_ms, 100);
    let text = format!(
        "{}\n[inference]\ncuda = \"yes\"\ntimeout_ms = 0\nrefresh_s = 1\n",
        valid()
    );
    std::fs::write(&config, &text).expect("write");
    expect![[r#"
        $DIR/edge.toml:43:8: error: `inference.cuda` must be true or false, found string
        $DIR/edge.toml:44:14: error: `inference.timeout_ms` must be between 1 and 60000, found 0
        $DIR/edge.toml:45:13: error: `inference.refresh_s` must be between 10 and 86400, found 1
    "#]]
    .assert_eq(&render_in(dir.path(), &lint(&config)));
    let text = format!(
        "{}\n[inference]\ncuda = true\ncuda_tf32 = 0\ntf32 = true\ncuda_min_rows = 0\n",
        valid()
    );
    std::fs::write(&config, &text).expect("write");
    expect![[r#"
        $DIR/edge.toml:44:13: error: `inference.cuda_tf32` must be true or false, found integer
        $DIR/edge.toml:45:1: error: unknown key `tf32` in [inference]; expected one of: models, library, cuda, cuda_tf32, cuda_min_rows, timeout_ms, refresh_s
        $DIR/edge.toml:46:17: error: `inference.cuda_min_rows` must be between 1 and 16777216, found 0
    "#]]
    .assert_eq(&render_in(dir.path(), &lint(&config)));
}

#[test]
fn the_time_zone_is_an_iana_name() {
    let c = load_str(&valid(), file()).expect("valid").config;
    assert_eq!(c.node.timezone.iana_name(), Some("Europe/Warsaw"));
    let text = valid().replace("\"Europe/Warsaw\"", "\"America/New_York\"");
    assert_eq!(
        load_str(&text, file()).expect("valid").config.node.timezone,
        jiff::tz::TimeZone::get("America/New_York").unwrap()
    );
    let text = valid().replace("\"Europe/Warsaw\"", "\"UTC\"");
    check(&text, expect![[""]]);
    assert_eq!(
        load_str(&text, file()).expect("valid").config.node.timezone,
        jiff::tz::TimeZone::UTC
    );
}

#[test]
fn an_unknown_time_zone_is_an_error_with_a_hint() {
    let text = valid().replace("\"Europe/Warsaw\"", "\"Europe/Warsw\"");
    check(
        &text,
        expect![[r#"
            hospital.toml:5:12: error: `node.timezone` is not a time zone: "Europe/Warsw"; expected an IANA time zone name, e.g. "Europe/Warsaw", "America/New_York" or "UTC"; did you mean "Europe/Warsaw"?
        "#]],
    );
    let err = load_str(&text, file()).expect_err("an unknown zone stops loading");
    assert_eq!(err.errors().count(), 1);
    // A city alone, or an offset, is not a zone name; the city gets a hint.
    check(
        &valid().replace("\"Europe/Warsaw\"", "\"new york\""),
        expect![[r#"
            hospital.toml:5:12: error: `node.timezone` is not a time zone: "new york"; expected an IANA time zone name, e.g. "Europe/Warsaw", "America/New_York" or "UTC"; did you mean "America/New_York"?
        "#]],
    );
    check(
        &valid().replace("\"Europe/Warsaw\"", "\"+01:00\""),
        expect![[r#"
            hospital.toml:5:12: error: `node.timezone` is not a time zone: "+01:00"; expected an IANA time zone name, e.g. "Europe/Warsaw", "America/New_York" or "UTC"
        "#]],
    );
    check(
        &valid().replace("\"Europe/Warsaw\"", "1"),
        expect![[r#"
            hospital.toml:5:12: error: `node.timezone` must be a string, found integer
        "#]],
    );
}

#[test]
fn a_missing_time_zone_is_utc_with_a_warning() {
    let text = valid().replace("timezone = \"Europe/Warsaw\"\n", "");
    let expected = expect![[r#"
        hospital.toml:1:1: warning: missing key `timezone` in [node]; HL7 times without an offset are read as UTC. Set the hospital's IANA time zone, e.g. timezone = "Europe/Warsaw"
    "#]];
    expected.assert_eq(&render(&lint_str(&text, file())));
    let loaded = load_str(&text, file()).expect("a file without the key still loads");
    expected.assert_eq(&render(&loaded.warnings));
    assert_eq!(loaded.config.node.timezone, jiff::tz::TimeZone::UTC);
}

#[test]
fn hl7_managed_points_of_care_are_a_list_of_names() {
    let loaded = load_str(&valid(), file()).expect("valid");
    assert!(loaded.config.hl7.managed_points_of_care.is_empty());
    let text = format!(
        "{}\n[hl7]\nmanaged_points_of_care = [\"ED\", \"OR\"]\n",
        valid()
    );
    let loaded = load_str(&text, file()).expect("valid");
    assert_eq!(loaded.config.hl7.managed_points_of_care, ["ED", "OR"]);
    // A bare string, an empty name and an unknown key are errors with their line.
    for (body, needle) in [
        (
            "managed_points_of_care = \"ED\"",
            "hl7.managed_points_of_care",
        ),
        ("managed_points_of_care = [\"\"]", "empty string"),
        ("managed_point_of_care = [\"ED\"]", "managed_point_of_care"),
    ] {
        let text = format!("{}\n[hl7]\n{body}\n", valid());
        let diags = lint_str(&text, file());
        let shown = render(&diags);
        assert!(shown.contains(needle), "{body}: {shown}");
        assert!(shown.contains("error"), "{body}: {shown}");
    }
}

#[test]
fn mllp_allow_lists_are_address_blocks_checked_entry_by_entry() {
    let block = |s: &str| s.parse::<firmware_config::Cidr>();
    let lan = block("10.1.2.0/24").unwrap();
    assert!(lan.contains("10.1.2.77".parse().unwrap()));
    assert!(!lan.contains("10.1.3.1".parse().unwrap()));
    // An IPv4 peer seen on a dual-stack socket.
    assert!(lan.contains("::ffff:10.1.2.9".parse().unwrap()));
    assert!(
        block("0.0.0.0/0")
            .unwrap()
            .contains("192.0.2.1".parse().unwrap())
    );
    assert!(
        block("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap())
    );
    assert!(
        !block("fd00::/8")
            .unwrap()
            .contains("10.1.2.1".parse().unwrap())
    );
    assert!(block("10.1.2.3/24").unwrap_err().contains("host bits"));
    assert!(block("10.1.2.0/33").unwrap_err().contains("0 to 32"));
    let text = with_mllp("allow = [\"10.1.2.0/24\", \"nowhere\", 7]\n");
    let shown = render(&lint_str(&text, file()));
    assert!(
        shown.contains("`mllp.allow`: \"nowhere\" is not an IP address"),
        "{shown}"
    );
    assert!(shown.contains("each entry must be a string"), "{shown}");
    // Mutual TLS needs TLS; a frame that could never reach the cloud is refused.
    let shown = render(&lint_str(&with_mllp("client_ca = \"ca.pem\"\n"), file()));
    assert!(shown.contains("`mllp.client_ca` needs TLS"), "{shown}");
    let shown = render(&lint_str(&with_mllp("max_frame_bytes = 4194304\n"), file()));
    assert!(shown.contains("mllp.max_frame_bytes"), "{shown}");
    assert!(shown.contains("2064384"), "{shown}");
}

/// One valid operating room (lines 41 to 46 when appended to [`valid`]).
const OR_ROOM: &str = r#"
[[or_room]]
id = "OR-1"
name = "Theatre 1"
suite = "MAIN-OR"
hl7 = { facility = "DGH", point_of_care = "OR", room = "OR-1", bed = "" }
"#;

#[test]
fn operating_rooms_are_optional() {
    let c = load_str(&valid(), file()).expect("valid").config;
    assert!(c.or_rooms.is_empty());
    assert!(c.or_room(&OrRoomId::new("OR-1").unwrap()).is_none());
}

#[test]
fn an_operating_room_loads_with_its_name_defaulting_to_its_id() {
    // An OR room may share an id with a bed: they are different namespaces.
    let text = format!(
        "{}{OR_ROOM}{}",
        valid(),
        r#"
[[or_room]]
id = "3W-301-A"
suite = "MAIN-OR"
hl7 = { facility = "DGH", point_of_care = "OR", room = "", bed = "7" }
"#
    );
    check(&text, expect![[""]]);
    let loaded = load_str(&text, file()).expect("valid");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.or_rooms.len(), 2);
    let or1 = c.or_room(&OrRoomId::new("OR-1").unwrap()).expect("OR-1");
    assert_eq!(or1.name, "Theatre 1");
    assert_eq!(or1.suite, "MAIN-OR");
    assert_eq!(
        or1.hl7,
        Hl7Location {
            facility: "DGH".into(),
            point_of_care: "OR".into(),
            room: "OR-1".into(),
            bed: String::new(),
        }
    );
    assert_eq!(or1.hl7.to_string(), "DGH^OR^OR-1^");
    let second = &c.or_rooms[1];
    assert_eq!(second.id.as_str(), "3W-301-A");
    assert_eq!(second.name, "3W-301-A", "the name defaults to the id");
    assert_eq!(second.hl7.to_string(), "DGH^OR^^7");
    assert!(c.or_room(&OrRoomId::new("OR-9").unwrap()).is_none());
}

#[test]
fn an_operating_room_needs_a_room_or_a_bed_in_its_hl7_location() {
    check(
        &format!(
            "{}{}",
            valid(),
            OR_ROOM.replace("room = \"OR-1\"", "room = \"\"")
        ),
        expect![[r#"
            hospital.toml:46:7: error: `or_room.hl7.room` and `or_room.hl7.bed` must not both be empty: an operating room's location needs a room or a bed
        "#]],
    );
    check(
        &format!(
            "{}{}",
            valid(),
            OR_ROOM
                .replace("facility = \"DGH\"", "facility = \"\"")
                .replace("room = \"OR-1\", bed = \"\"", "room = \"OR~1\", bed = \"\"")
        ),
        expect![[r#"
            hospital.toml:46:20: error: `or_room.hl7.facility` must not be empty
            hospital.toml:46:53: error: `or_room.hl7.room` must not contain '~': it is an HL7 delimiter or a control character
        "#]],
    );
}

#[test]
fn operating_room_keys_are_checked() {
    let text = format!(
        "{}{}{}",
        valid(),
        OR_ROOM.replace("suite = \"MAIN-OR\"\n", ""),
        r#"
[[or_room]]
id = "OR 2"
name = ""
suite = "MAIN OR"
theatre = true

[[or_room]]
id = "OR-3"
suite = 3
hl7 = "DGH^OR^OR-3^"
"#
    );
    check(
        &text,
        expect![[r#"
            hospital.toml:42:1: error: missing required key `suite` in [[or_room]]
            hospital.toml:47:1: error: missing required key `hl7` in [[or_room]]
            hospital.toml:48:6: error: invalid or_room id "OR 2": id contains ' '; only letters, digits, dot, underscore, colon and hyphen are allowed
            hospital.toml:49:8: error: `or_room.name` must not be empty
            hospital.toml:50:9: error: invalid suite id "MAIN OR": id contains ' '; only letters, digits, dot, underscore, colon and hyphen are allowed
            hospital.toml:51:1: error: unknown key `theatre` in [[or_room]]; expected one of: id, name, suite, hl7
            hospital.toml:55:9: error: `or_room.suite` must be a string, found integer
            hospital.toml:56:7: error: `or_room.hl7` must be a table, found string
        "#]],
    );
}

#[test]
fn unknown_operating_room_keys_are_errors_for_lint_and_warnings_for_load() {
    let text = format!(
        "{}{}",
        valid(),
        OR_ROOM.replace(
            "suite = \"MAIN-OR\"",
            "suite = \"MAIN-OR\"\nlaminar_flow = true"
        )
    );
    check(
        &text,
        expect![[r#"
            hospital.toml:46:1: error: unknown key `laminar_flow` in [[or_room]]; expected one of: id, name, suite, hl7
        "#]],
    );
    let loaded = load_str(&text, file()).expect("unknown keys do not stop loading");
    expect![[r#"
        hospital.toml:46:1: warning: unknown key `laminar_flow` in [[or_room]]; expected one of: id, name, suite, hl7
    "#]]
    .assert_eq(&render(&loaded.warnings));
    assert_eq!(loaded.config.or_rooms.len(), 1);
}

#[test]
fn duplicate_operating_room_ids_name_the_first_definition() {
    let text = format!(
        "{}{OR_ROOM}{}",
        valid(),
        OR_ROOM.replace("room = \"OR-1\"", "room = \"OR-2\"")
    );
    check(
        &text,
        expect![[r#"
            hospital.toml:49:6: error: duplicate or_room id "OR-1" (first defined at line 43)
        "#]],
    );
}

#[test]
fn an_hl7_location_serves_one_operating_room() {
    let text = format!(
        "{}{OR_ROOM}{}",
        valid(),
        OR_ROOM.replace("id = \"OR-1\"", "id = \"OR-2\"")
    );
    check(
        &text,
        expect![[r#"
            hospital.toml:52:7: error: HL7 location DGH^OR^OR-1^ is already mapped to or_room "OR-1" at line 46
        "#]],
    );
}

#[test]
fn an_operating_room_cannot_take_a_beds_hl7_location() {
    let text = format!(
        "{}{}",
        valid(),
        OR_ROOM.replace(
            "point_of_care = \"OR\", room = \"OR-1\", bed = \"\"",
            "point_of_care = \"3W\", room = \"301\", bed = \"A\""
        )
    );
    check(
        &text,
        expect![[r#"
            hospital.toml:46:7: error: HL7 location DGH^3W^301^A is already mapped to bed "3W-301-A" at line 40
        "#]],
    );
}

#[test]
fn the_coding_section_has_defaults_and_checked_limits() {
    let (dir, config) = tls_dir();
    std::fs::write(&config, valid()).expect("write");
    let c = load(&config).expect("valid").config;
    assert_eq!(
        (c.coding.max_text_chars, c.coding.history_days),
        (4_000, 365)
    );
    let text = format!(
        "{}\n[coding]\nmax_text_chars = 500\nhistory_days = 90\n",
        valid()
    );
    std::fs::write(&config, &text).expect("write");
    let c = load(&config).expect("valid").config;
    assert_eq!((c.coding.max_text_chars, c.coding.history_days), (500, 90));
    let text = format!(
        "{}\n[coding]\nmax_text_chars = 0\nhistory_days = 4000\nlimit = 1\n",
        valid()
    );
    std::fs::write(&config, &text).expect("write");
    expect![[r#"
        $DIR/edge.toml:43:18: error: `coding.max_text_chars` must be between 1 and 1000000, found 0
        $DIR/edge.toml:44:16: error: `coding.history_days` must be between 1 and 3650, found 4000
        $DIR/edge.toml:45:1: error: unknown key `limit` in [coding]; expected one of: max_text_chars, history_days
    "#]]
    .assert_eq(&render_in(dir.path(), &lint(&config)));
}

#[test]
fn bundles_name_their_trusted_keys_and_take_the_defaults() {
    let (dir, config) = tls_dir();
    std::fs::create_dir(dir.path().join("keys")).expect("keys/");
    std::fs::write(dir.path().join("keys/bundle.pub"), [7u8; 32]).expect("bundle.pub");
    std::fs::write(dir.path().join("keys/old.pub"), [8u8; 32]).expect("old.pub");
    let text = format!(
        "{}\n[bundles]\ntrusted_keys = [\"keys/bundle.pub\", \"keys/old.pub\"]\n",
        valid()
    );
    std::fs::write(&config, &text).expect("write");
    assert_eq!(render_in(dir.path(), &lint(&config)), "");
    let b = load(&config)
        .expect("valid")
        .config
        .bundles
        .expect("bundles");
    assert_eq!(
        b,
        BundlesSection {
            trusted_keys: vec![
                dir.path().join("keys/bundle.pub"),
                dir.path().join("keys/old.pub")
            ],
            probation_s: DEFAULT_BUNDLE_PROBATION_S,
            allow_unsigned_models: false,
        }
    );
    assert_eq!(b.probation_s, 60);
    let text = format!(
        "{}\n[bundles]\ntrusted_keys = [\"keys/bundle.pub\"]\nprobation_s = 5\nallow_unsigned_models = true\n",
        valid()
    );
    std::fs::write(&config, &text).expect("write");
    let b = load(&config)
        .expect("valid")
        .config
        .bundles
        .expect("bundles");
    assert_eq!((b.probation_s, b.allow_unsigned_models), (5, true));
    assert!(
        load(&config.with_file_name("none.toml")).is_err(),
        "a missing file is an error"
    );
    let absent = load(&repo_file("demo-hospital.toml")).expect("demo").config;
    assert_eq!(absent.bundles, None, "absent: no bundles");
}

#[test]
fn bad_bundle_keys_are_errors_at_the_value() {
    let (dir, config) = tls_dir();
    std::fs::write(dir.path().join("short.pub"), [1u8; 31]).expect("short.pub");
    std::fs::write(dir.path().join("good.pub"), [1u8; 32]).expect("good.pub");
    for (body, says) in [
        ("trusted_keys = []", "`bundles.trusted_keys` is empty"),
        (
            "probation_s = 60",
            "missing required key `trusted_keys` in [bundles]",
        ),
        ("trusted_keys = \"good.pub\"", "array of public key files"),
        (
            "trusted_keys = [\"missing.pub\"]",
            "\"missing.pub\" does not exist",
        ),
        (
            "trusted_keys = [\"short.pub\"]",
            "is 31 bytes; a bundle public key file holds the raw 32 bytes",
        ),
        (
            "trusted_keys = [\"good.pub\"]\nprobation_s = 2",
            "probation_s",
        ),
        (
            "trusted_keys = [\"good.pub\"]\nallow_unsigned_models = 1",
            "true or false",
        ),
        ("trusted_keys = [\"good.pub\"]\nkeys = 1", "keys"),
    ] {
        let text = format!("{}\n[bundles]\n{body}\n", valid());
        std::fs::write(&config, &text).expect("write");
        let out = render_in(dir.path(), &lint(&config));
        assert!(out.contains(says), "{body}: {out}");
        assert!(out.contains("error"), "{body}: {out}");
    }
}
