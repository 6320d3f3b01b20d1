//! API tokens through the real `hms-edge` binary: `token create` with an
//! expiry, `token list` (never the secret), `token revoke` while the
//! appliance runs (refused within about a second, the live stream ended),
//! unique names, expired tokens refused like unknown ones, and every
//! creation and revocation in the log as an audit event, exactly once.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hms_e2e::client::Conn;

use crate::support::{Proc, bin, hospital_toml, run_cli};

fn write_config(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("hospital.toml");
    std::fs::write(&file, hospital_toml(&dir.join("data"), &[("3W", 4, 2)])).unwrap();
    file
}

/// Runs `hms-edge token ARGS… --data-dir DATA` as the login `ops-alice`.
fn token_cli(data: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("USER", "ops-alice")
        .env_remove("SUDO_USER")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The token on the last line of a successful `token create`.
fn created(out: &(i32, String, String)) -> String {
    assert_eq!(out.0, 0, "{}{}", out.1, out.2);
    out.1.lines().last().unwrap().trim().to_owned()
}

/// `token list --json` as objects.
fn listed(data: &Path, all: bool) -> Vec<serde_json::Value> {
    let mut args = vec!["list", "--json"];
    if all {
        args.push("--all");
    }
    let (code, out, err) = token_cli(data, &args);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Asks `GET /api/v1/units` with `token` until the status is `want` or the
/// deadline passes; returns the reply and when it came.
async fn until_status(
    addr: std::net::SocketAddr,
    token: &str,
    want: u16,
    deadline: Duration,
) -> (hms_e2e::client::Reply, Instant) {
    let start = Instant::now();
    let mut c = Conn::connect(addr, Some(token)).await.unwrap();
    loop {
        let r = c.get("/api/v1/units").await.unwrap();
        if r.status == want {
            return (r, Instant::now());
        }
        assert!(
            start.elapsed() < deadline,
            "still {} after {deadline:?}, wanted {want}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The token-audit events of a stopped appliance's log: (kind, actor kind,
/// actor id, body).
fn token_events(data: &Path) -> Vec<(String, String, String, serde_json::Value)> {
    let conn = rusqlite::Connection::open(data.join("edge.sqlite")).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT kind, stream, actor_kind, actor_id, body FROM events
             WHERE kind LIKE 'audit.token_%' ORDER BY seq",
        )
        .unwrap();
    stmt.query_map([], |r| {
        let stream: String = r.get(1)?;
        assert_eq!(stream, "audit");
        let body: String = r.get(4)?;
        Ok((
            r.get(0)?,
            r.get(2)?,
            r.get(3)?,
            serde_json::from_str(&body).unwrap(),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_created_listed_used_and_revoked_while_the_appliance_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let data = dir.path().join("data");
    let proc = Proc::start(&config, &[]);

    // Created with an expiry; it works at once.
    let out = token_cli(
        &data,
        &[
            "create",
            "--role",
            "viewer",
            "--name",
            "kiosk-3W",
            "--expires",
            "90d",
        ],
    );
    let kiosk = created(&out);
    assert!(kiosk.starts_with("hms_"), "{}", out.1);
    assert!(
        out.1
            .starts_with("created viewer token for \"kiosk-3W\", expires 20"),
        "{}",
        out.1
    );
    let (r, _) = until_status(proc.addr, &kiosk, 200, Duration::from_secs(5)).await;
    assert_eq!(r.status, 200);

    // Names are unique: a second kiosk-3W is bad usage, and nothing is made.
    let (code, out, err) = token_cli(&data, &["create", "--role", "admin", "--name", "kiosk-3W"]);
    assert_eq!(code, 64, "{out}{err}");
    assert!(
        err.contains("a token named \"kiosk-3W\" exists already"),
        "{err}"
    );
    assert!(!out.contains("hms_"), "{out}");
    // Bad expiries are bad usage too.
    for bad in ["90", "0h", "2w", "2020-01-01T00:00:00Z"] {
        let (code, _, err) = token_cli(
            &data,
            &[
                "create",
                "--role",
                "viewer",
                "--name",
                "x",
                "--expires",
                bad,
            ],
        );
        assert_eq!(code, 64, "{bad}: {err}");
        assert!(err.contains("--expires"), "{err}");
    }
    let other = created(&token_cli(
        &data,
        &["create", "--role", "nurse", "--name", "nurse-ward-3"],
    ));

    // The list: every column, never a secret; the first use is written
    // within a poll of the appliance.
    let start = Instant::now();
    let kiosk_row = loop {
        let rows = listed(&data, false);
        let row = rows
            .iter()
            .find(|r| r["name"] == "kiosk-3W")
            .unwrap()
            .clone();
        if row["last_used"].is_string() {
            break row;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{row}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(kiosk_row["role"], "viewer");
    assert_eq!(kiosk_row["status"], "active");
    let created_at = hms_domain::Timestamp::parse_rfc3339(kiosk_row["created"].as_str().unwrap())
        .unwrap()
        .as_millis();
    let expires_at = hms_domain::Timestamp::parse_rfc3339(kiosk_row["expires"].as_str().unwrap())
        .unwrap()
        .as_millis();
    assert!(
        (expires_at - created_at - 90 * 86_400_000).abs() <= 1_000,
        "{kiosk_row}"
    );
    let (code, table, _) = token_cli(&data, &["list"]);
    assert_eq!(code, 0);
    let mut lines = table.lines();
    let head: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        head.iter().map(|c| c.trim()).collect::<Vec<_>>(),
        ["NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED", "STATUS"]
    );
    let kiosk_line = lines.find(|l| l.starts_with("kiosk-3W ")).unwrap();
    assert!(
        kiosk_line.contains(" viewer ") && kiosk_line.ends_with(" active"),
        "{table}"
    );
    let nurse_line = table
        .lines()
        .find(|l| l.starts_with("nurse-ward-3 "))
        .unwrap();
    assert!(nurse_line.contains(" never "), "{table}");
    for secret in [&kiosk, &other] {
        assert!(!table.contains(&secret[4..]), "{table}");
        let (_, json, _) = token_cli(&data, &["list", "--json", "--all"]);
        assert!(!json.contains(&secret[4..]), "{json}");
    }

    // A live stream opened with the token ends when it is revoked.
    let mut stream = std::net::TcpStream::connect(proc.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /api/v1/stream HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {kiosk}\r\n\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("event: hello") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }

    // Revoked while the appliance runs: refused within about a second.
    let (code, out, err) = token_cli(&data, &["revoke", "kiosk-3W"]);
    let revoked_at = Instant::now();
    assert_eq!(
        (code, out.trim()),
        (0, "revoked token \"kiosk-3W\""),
        "{err}"
    );
    let (refused, at) = until_status(proc.addr, &kiosk, 401, Duration::from_secs(5)).await;
    let took = at - revoked_at;
    assert!(
        took < Duration::from_millis(1_500),
        "refused only after {took:?}"
    );
    // Refused like an unknown token.
    let mut anon = Conn::connect(proc.addr, Some("hms_not-a-token"))
        .await
        .unwrap();
    let unknown = anon.get("/api/v1/units").await.unwrap();
    assert_eq!(unknown.status, 401);
    assert_eq!(refused.body, unknown.body);
    assert_eq!(
        refused.content_type.as_deref(),
        Some("application/problem+json")
    );
    // The stream ended (its chunked body closed).
    let ended = loop {
        if String::from_utf8_lossy(&seen).contains("\r\n0\r\n\r\n") {
            break true;
        }
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    assert!(
        ended,
        "the stream went on: {}",
        String::from_utf8_lossy(&seen)
    );
    // The other token still works.
    let (r, _) = until_status(proc.addr, &other, 200, Duration::from_secs(5)).await;
    assert_eq!(r.status, 200);

    // Revoking again changes nothing; an unknown name is bad usage.
    let (code, out, _) = token_cli(&data, &["revoke", "--name", "kiosk-3W"]);
    assert_eq!(
        (code, out.trim()),
        (0, "token \"kiosk-3W\" was revoked already")
    );
    let (code, _, err) = token_cli(&data, &["revoke", "nobody"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no token is named \"nobody\""), "{err}");
    let (code, _, _) = token_cli(&data, &["revoke"]);
    assert_eq!(code, 64);
    // Listed only with --all.
    assert!(listed(&data, false).iter().all(|r| r["name"] != "kiosk-3W"));
    let row = listed(&data, true)
        .into_iter()
        .find(|r| r["name"] == "kiosk-3W")
        .unwrap();
    assert_eq!(row["status"], "revoked");
    assert!(row["revoked"].is_string(), "{row}");
    // Rotated under the same name: the new token works, the old one stays
    // refused.
    let rotated = created(&token_cli(
        &data,
        &["create", "--role", "viewer", "--name", "kiosk-3W"],
    ));
    let (r, _) = until_status(proc.addr, &rotated, 200, Duration::from_secs(5)).await;
    assert_eq!(r.status, 200);
    let mut old = Conn::connect(proc.addr, Some(&kiosk)).await.unwrap();
    assert_eq!(old.get("/api/v1/units").await.unwrap().status, 401);

    // An expired token is refused like an unknown one.
    let short = created(&token_cli(
        &data,
        &[
            "create",
            "--role",
            "viewer",
            "--name",
            "short-lived",
            "--expires",
            "3s",
        ],
    ));
    let mut c = Conn::connect(proc.addr, Some(&short)).await.unwrap();
    assert_eq!(c.get("/api/v1/units").await.unwrap().status, 200);
    let (expired, _) = until_status(proc.addr, &short, 401, Duration::from_secs(10)).await;
    assert_eq!(expired.body, unknown.body);
    let row = listed(&data, false)
        .into_iter()
        .find(|r| r["name"] == "short-lived")
        .unwrap();
    assert_eq!(row["status"], "expired");

    // Every creation and revocation is an audit event, who and what, never
    // the token; the log still verifies.
    let exit = proc.terminate();
    assert!(exit.success(), "{exit:?}");
    let events = token_events(&data);
    let summary: Vec<(String, String, String, String)> = events
        .iter()
        .map(|(kind, actor_kind, actor, body)| {
            (
                kind.clone(),
                format!("{actor_kind}:{actor}"),
                body["name"].as_str().unwrap().to_owned(),
                body["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let row = |k: &str, n: &str, r: &str| {
        (
            k.to_owned(),
            "user:cli:ops-alice".to_owned(),
            n.to_owned(),
            r.to_owned(),
        )
    };
    assert_eq!(
        summary,
        vec![
            row("audit.token_created", "kiosk-3W", "viewer"),
            row("audit.token_created", "nurse-ward-3", "nurse"),
            row("audit.token_revoked", "kiosk-3W", "viewer"),
            row("audit.token_created", "kiosk-3W", "viewer"),
            row("audit.token_created", "short-lived", "viewer"),
        ]
    );
    // The list shows the expiry to the second; the event to the millisecond.
    let recorded =
        hms_domain::Timestamp::parse_rfc3339(events[0].3["expires_at"].as_str().unwrap())
            .unwrap()
            .as_millis();
    assert_eq!(recorded / 1_000, expires_at / 1_000);
    for (_, _, _, body) in &events {
        let text = body.to_string();
        for secret in [&kiosk, &other, &rotated, &short] {
            assert!(!text.contains(&secret[4..]), "{text}");
        }
    }
    let (code, out, err) = run_cli(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn token_changes_made_while_the_appliance_is_stopped_are_audited_once_at_its_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let data = dir.path().join("data");
    // On a fresh data dir, before the first start.
    created(&token_cli(
        &data,
        &["create", "--role", "admin", "--name", "night-admin"],
    ));
    let (code, _, err) = token_cli(&data, &["revoke", "night-admin"]);
    assert_eq!(code, 0, "{err}");
    created(&token_cli(
        &data,
        &["create", "--role", "viewer", "--name", "kiosk-4E"],
    ));
    let kinds = |data: &Path| -> Vec<String> {
        token_events(data)
            .into_iter()
            .map(|(kind, _, _, body)| format!("{kind} {}", body["name"].as_str().unwrap()))
            .collect()
    };
    let want = vec![
        "audit.token_created night-admin",
        "audit.token_revoked night-admin",
        "audit.token_created kiosk-4E",
    ];
    // Recorded at the next start, once however often it starts.
    for round in 0..2 {
        let proc = Proc::start(&config, &[]);
        let exit = proc.terminate();
        assert!(exit.success(), "{exit:?}");
        assert_eq!(kinds(&data), want, "round {round}");
    }
    // A new auth.sqlite (as after a restore: tokens are not restored)
    // numbers its changes from 1 again; they are recorded all the same.
    for f in ["auth.sqlite", "auth.sqlite-wal", "auth.sqlite-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }
    created(&token_cli(
        &data,
        &["create", "--role", "viewer", "--name", "kiosk-5N"],
    ));
    let proc = Proc::start(&config, &[]);
    assert!(proc.terminate().success());
    let mut want = want;
    want.push("audit.token_created kiosk-5N");
    assert_eq!(kinds(&data), want);
    let changes: Vec<u64> = token_events(&data)
        .iter()
        .map(|(_, _, _, b)| b["change"].as_u64().unwrap())
        .collect();
    assert_eq!(changes, [1, 2, 3, 1]);
}
