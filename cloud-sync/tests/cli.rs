//! `hms-cloud` as a process: enrolment with residency (and re-keying with
//! `--replace`), configuration errors, serving over HTTP and HTTPS, DR keys
//! and enrolment, operator tokens (scopes, expiry, list, revoke), a primary
//! replicating to its replica, EMPI training refusals, the fleet key
//! and `[fleet]` configuration errors, and the refusals of `promote` and
//! `unfence`.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hms-cloud"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn enroll_and_run_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("cloud.toml");
    std::fs::write(
        &cfg,
        "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n",
    )
    .expect("write");
    let (_, public) = cloud_sync_client::generate_key().expect("key");
    let key = dir.path().join("edge.pub");
    std::fs::write(&key, public).expect("write");
    let c = cfg.to_str().expect("utf8");
    let k = key.to_str().expect("utf8");
    let (code, out, err) = cli(&[
        "enroll",
        "--config",
        c,
        "--hospital",
        "h1",
        "--region",
        "eu-west",
        "--node",
        "edge-1",
        "--public-key",
        k,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli(&[
        "enroll",
        "--config",
        c,
        "--hospital",
        "h2",
        "--region",
        "us-east",
        "--node",
        "edge-1",
        "--public-key",
        k,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("us-east") && err.contains("eu-west"), "{err}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "region = \"eu-west\"\nlisten = 5\ndata_dir = \"d\"\n").expect("write");
    let (code, _, err) = cli(&["run", "--config", bad.to_str().expect("utf8")]);
    assert_eq!(code, 64);
    assert!(err.contains("bad.toml:2:"), "{err}");
    // It serves.
    let running = start(std::path::Path::new(c));
    assert!(
        running
            .ready
            .starts_with("hms-cloud ready http=http://127.0.0.1:"),
        "{}",
        running.ready
    );
}

/// A running `hms-cloud run` (killed on drop) and its ready line.
struct Running {
    _proc: hms_e2e::process::Proc,
    ready: String,
}

fn start(config: &std::path::Path) -> Running {
    let proc = hms_e2e::process::Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_hms-cloud"))
            .args(["run", "--config", config.to_str().expect("utf-8 path")])
            .env("HMS_LOG", "warn"),
    )
    .expect("spawn hms-cloud");
    let rest = proc.line_after("hms-cloud ready ").expect("ready line");
    Running {
        _proc: proc,
        ready: format!("hms-cloud ready {rest}"),
    }
}

#[test]
fn a_dr_pair_with_keys_tokens_and_https_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let s = |name: &str| p(name).to_str().unwrap().to_owned();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(p("replica.crt"), certified.cert.pem()).unwrap();
    std::fs::write(p("replica.key"), certified.signing_key.serialize_pem()).unwrap();

    // The primary's DR key: private 0600, public raw; never overwritten.
    let (code, out, err) = cli(&["keygen", "--out", &s("primary.pk8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read(p("primary.pk8.pub")).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p("primary.pk8"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (code, _, err) = cli(&["keygen", "--out", &s("primary.pk8")]);
    assert_eq!(code, 1);
    assert!(err.contains("exists"), "{err}");

    // The replica: its region's DR peer for eu-west, over HTTPS.
    std::fs::write(
        p("replica.toml"),
        "region = \"eu-central\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"replica\"\n\
         mode = \"replica\"\nallowed_dr_regions = [\"eu-west\"]\n\
         [tls]\ncert = \"replica.crt\"\nkey = \"replica.key\"\n",
    )
    .unwrap();
    let enroll_primary = |config: &str, region: &str| {
        cli(&[
            "enroll-primary",
            "--config",
            config,
            "--region",
            region,
            "--public-key",
            &s("primary.pk8.pub"),
        ])
    };
    let (code, out, err) = enroll_primary(&s("replica.toml"), "eu-west");
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = enroll_primary(&s("replica.toml"), "us-east");
    assert_eq!(code, 1);
    assert!(err.contains("us-east"), "{err}");
    let (code, out, err) = cli(&[
        "token",
        "create",
        "--config",
        &s("replica.toml"),
        "--name",
        "ops",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().starts_with("hmsc_"), "{out}");
    let (code, _, err) = cli(&[
        "token",
        "create",
        "--config",
        &s("replica.toml"),
        "--name",
        "ops",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("exists"), "{err}");
    let replica = start(&p("replica.toml"));
    let port = replica
        .ready
        .trim()
        .strip_prefix("hms-cloud ready https=https://127.0.0.1:")
        .unwrap_or_else(|| panic!("{}", replica.ready));
    let peer = format!("https://localhost:{port}");

    // A primary whose peer is in a region it may not replicate to does not start.
    let primary_cfg = |peer_region: &str| {
        format!(
            "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"primary\"\n\
             allowed_dr_regions = [\"eu-central\"]\n\
             [dr]\npeer = \"{peer}\"\npeer_region = \"{peer_region}\"\n\
             key_file = \"primary.pk8\"\nca = \"replica.crt\"\n"
        )
    };
    std::fs::write(p("bad-primary.toml"), primary_cfg("us-east")).unwrap();
    let (code, _, err) = cli(&["run", "--config", &s("bad-primary.toml")]);
    assert_eq!(code, 64);
    assert!(
        err.contains("residency") && err.contains("us-east"),
        "{err}"
    );
    // Primaries are enrolled on replicas only.
    std::fs::write(p("primary.toml"), primary_cfg("eu-central")).unwrap();
    let (code, _, err) = enroll_primary(&s("primary.toml"), "eu-west");
    assert_eq!(code, 64, "{err}");

    // The primary with an appliance, replicating to the replica.
    let (pkcs8, public) = cloud_sync_client::generate_key().unwrap();
    std::fs::write(p("edge.pub"), public).unwrap();
    let (code, out, err) = cli(&[
        "enroll",
        "--config",
        &s("primary.toml"),
        "--hospital",
        "h1",
        "--region",
        "eu-west",
        "--node",
        "edge-1",
        "--public-key",
        &s("edge.pub"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let primary = start(&p("primary.toml"));
    let addr = primary
        .ready
        .trim()
        .strip_prefix("hms-cloud ready http=")
        .unwrap_or_else(|| panic!("{}", primary.ready))
        .to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = std::time::Duration::from_secs(10);
    let now = || hms_domain::Timestamp::now().as_millis();
    let edge =
        cloud_sync_client::Signer::new(&pkcs8, "h1".parse().unwrap(), "edge-1".parse().unwrap())
            .unwrap();
    let log = cloud_sync::store::conformance::log("h1", 30);
    let batch = hms_domain::sync::SyncBatch {
        hospital: "h1".parse().unwrap(),
        node: "edge-1".parse().unwrap(),
        events: log.clone(),
    };
    let ep = cloud_sync_client::Endpoint::parse(&addr, None).unwrap();
    let pushed = rt
        .block_on(cloud_sync_client::push(&ep, &edge, &batch, now(), t))
        .unwrap();
    assert_eq!(pushed.acked_seq, 30);
    // The replica's copy, read as the primary reads it (its key, node dr:eu-west),
    // over HTTPS trusting the replica's certificate. Replication runs in the
    // primary process: wait until the replica reports the whole log.
    let key = std::fs::read(p("primary.pk8")).unwrap();
    let as_primary =
        cloud_sync_client::Signer::new(&key, "h1".parse().unwrap(), "dr:eu-west".parse().unwrap())
            .unwrap();
    let replica_ep = cloud_sync_client::Endpoint::parse(&peer, Some(&p("replica.crt"))).unwrap();
    let client = cloud_sync_client::Client::new(replica_ep);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let at = rt
            .block_on(client.position(&as_primary, now(), t))
            .unwrap()
            .acked_seq;
        if at == 30 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica stayed at {at}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // What the replica stored is the primary's log, event for event.
    drop(replica);
    drop(primary);
    let mut stored = cloud_sync::store::SqliteRouter::new(&p("replica"))
        .open(&"h1".parse().unwrap())
        .unwrap();
    use cloud_sync::store::HospitalStore;
    assert_eq!(stored.events(1, 100).unwrap(), log);
}

#[test]
fn empi_training_from_the_command_line_says_why_it_cannot_train() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let s = |name: &str| p(name).to_str().unwrap().to_owned();
    let base = "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n";
    std::fs::write(p("cloud.toml"), base).unwrap();
    std::fs::write(p("replica.toml"), format!("{base}mode = \"replica\"\n")).unwrap();
    std::fs::write(p("off.toml"), format!("{base}empi = false\n")).unwrap();
    let train = |config: &str, extra: &[&str]| {
        let mut args = vec!["empi", "train", "--config", config];
        args.extend_from_slice(extra);
        cli(&args)
    };
    // No EMPI here: usage.
    for config in ["replica.toml", "off.toml"] {
        let (code, _, err) = train(&s(config), &[]);
        assert_eq!(code, 64, "{config}: {err}");
        assert!(err.contains("runs no regional EMPI"), "{err}");
    }
    let (code, _, err) = train(&s("cloud.toml"), &["--sample", "10"]);
    assert_eq!(code, 64);
    assert!(err.contains("--sample") && err.contains("1000"), "{err}");
    // A primary that never ran: nothing to train on, and nothing created.
    let (code, _, err) = train(&s("cloud.toml"), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("empi.sqlite is missing"), "{err}");
    assert!(!p("data/empi.sqlite").exists());
    // Three records: too few, said with the numbers.
    {
        let downlink = std::sync::Arc::new(cloud_sync::downlink::Downlink::in_memory().unwrap());
        let empi = cloud_sync::empi::RegionalEmpi::open(&p("data"), downlink).unwrap();
        for (id, given) in [("A-1", "Mary"), ("A-2", "Edith"), ("A-3", "Clara")] {
            let mut r = hms_domain::empi::Record::new("h1", id);
            r.given_name = Some(hms_domain::phi::PersonName::new(given));
            empi.register(&r, "test").unwrap();
        }
    }
    let (code, out, err) = train(&s("cloud.toml"), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("too few records") && err.contains("holds 3") && err.contains("at least 1000"),
        "{err}"
    );
}

#[test]
fn plain_http_off_loopback_is_refused_unless_insecure_http_says_so() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let s = |name: &str| p(name).to_str().unwrap().to_owned();
    let at = |listen: &str| {
        format!("region = \"eu-west\"\nlisten = \"{listen}\"\ndata_dir = \"data\"\n")
    };
    // Refused before anything is opened or bound: exit 64, saying what to do.
    std::fs::write(p("open.toml"), at("10.0.0.5:9443")).unwrap();
    let (code, out, err) = cli(&["run", "--config", &s("open.toml")]);
    assert_eq!(code, 64, "{out}{err}");
    assert!(
        err.contains("listen address 10.0.0.5:9443 is not loopback")
            && err.contains("Configure [tls]")
            && err.contains("insecure_http = true"),
        "{err}"
    );
    assert!(!p("data").exists(), "nothing was created");
    // The command line's address is checked too.
    std::fs::write(p("local.toml"), at("127.0.0.1:0")).unwrap();
    let (code, _, err) = cli(&["run", "--config", &s("local.toml"), "--http", "0.0.0.0:0"]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("listen address 0.0.0.0:0 is not loopback"),
        "{err}"
    );
    // Said explicitly, it serves plain HTTP on every interface.
    std::fs::write(
        p("insecure.toml"),
        format!("{}insecure_http = true\n", at("0.0.0.0:0")),
    )
    .unwrap();
    let running = start(&p("insecure.toml"));
    let port: u16 = running
        .ready
        .trim()
        .strip_prefix("hms-cloud ready http=http://0.0.0.0:")
        .unwrap_or_else(|| panic!("{}", running.ready))
        .parse()
        .unwrap();
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
}

#[test]
fn operator_tokens_with_scopes_are_created_listed_and_revoked_and_re_keying_needs_replace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("cloud.toml");
    std::fs::write(
        &cfg,
        "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hms-cloud"))
            .args(args)
            .env("USER", "ops-bob")
            .env_remove("SUDO_USER")
            .stdin(Stdio::null())
            .output()
            .expect("runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Scopes and an expiry; stdout is the token alone, what it may do on stderr.
    let (code, out, err) = run(&[
        "token",
        "create",
        "--config",
        c,
        "--name",
        "dashboard",
        "--scope",
        "read,empi",
        "--expires",
        "90d",
    ]);
    assert_eq!(code, 0, "{err}");
    let dashboard = out.trim().to_owned();
    assert!(
        dashboard.starts_with("hmsc_") && !dashboard.contains('\n'),
        "{out}"
    );
    assert!(
        err.contains("scopes read,empi") && err.contains("expires 20"),
        "{err}"
    );
    // Without --scope: every scope, as before scopes existed.
    let (code, out, err) = run(&["token", "create", "--config", c, "--name", "root"]);
    assert_eq!(code, 0, "{err}");
    let root = out.trim().to_owned();
    assert!(err.contains("scopes admin (every scope)"), "{err}");
    // Refusals: a live name (exit 1, as before), an unknown scope or a bad
    // expiry (exit 64).
    let (code, _, err) = run(&["token", "create", "--config", c, "--name", "root"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exists already"), "{err}");
    let (code, _, err) = run(&[
        "token", "create", "--config", c, "--name", "x", "--scope", "reed",
    ]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("unknown scope \"reed\""), "{err}");
    let (code, _, err) = run(&[
        "token",
        "create",
        "--config",
        c,
        "--name",
        "x",
        "--expires",
        "soon",
    ]);
    assert_eq!(code, 64, "{err}");
    // The list: names, scopes, times, status; never a token.
    let (code, table, _) = run(&["token", "list", "--config", c]);
    assert_eq!(code, 0);
    assert!(table.starts_with("NAME"), "{table}");
    for head in ["SCOPES", "CREATED", "EXPIRES", "STATUS"] {
        assert!(table.lines().next().unwrap().contains(head), "{table}");
    }
    let line = table.lines().find(|l| l.starts_with("dashboard ")).unwrap();
    assert!(
        line.contains(" read,empi ") && line.ends_with(" active"),
        "{table}"
    );
    let line = table.lines().find(|l| l.starts_with("root ")).unwrap();
    assert!(
        line.contains(" admin ") && line.contains(" never "),
        "{table}"
    );
    for secret in [&dashboard, &root] {
        assert!(!table.contains(&secret[5..]), "{table}");
    }

    // Served: the scopes hold, a revocation takes effect at the next request.
    let running = start(&cfg);
    let addr: std::net::SocketAddr = running
        .ready
        .trim()
        .strip_prefix("hms-cloud ready http=http://")
        .unwrap()
        .parse()
        .unwrap();
    let get = |token: &str, path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nhost: cloud\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        got
    };
    assert!(get(&dashboard, "/api/v1/hospitals").starts_with("HTTP/1.1 200 "));
    let (code, out, err) = run(&["token", "revoke", "--config", c, "dashboard"]);
    assert_eq!(
        (code, out.trim()),
        (0, "revoked token \"dashboard\""),
        "{err}"
    );
    let refused = get(&dashboard, "/api/v1/hospitals");
    assert!(refused.starts_with("HTTP/1.1 401 "), "{refused}");
    let (code, out, _) = run(&["token", "revoke", "--config", c, "--name", "dashboard"]);
    assert_eq!(
        (code, out.trim()),
        (0, "token \"dashboard\" was revoked already")
    );
    let (code, _, err) = run(&["token", "revoke", "--config", c, "nobody"]);
    assert_eq!(code, 1, "{err}");
    let (_, table, _) = run(&["token", "list", "--config", c]);
    assert!(!table.contains("dashboard"), "{table}");
    let (_, json, _) = run(&["token", "list", "--config", c, "--all", "--json"]);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = rows.iter().find(|r| r["name"] == "dashboard").unwrap();
    assert_eq!(row["status"], "revoked");
    assert_eq!(row["scopes"], serde_json::json!(["read", "empi"]));
    drop(running);

    // Re-keying an enrolled appliance from the command line needs --replace.
    let key = |name: &str| {
        let (_, public) = cloud_sync_client::generate_key().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, public).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (old, new) = (key("old.pub"), key("new.pub"));
    let enroll = |k: &str, extra: &[&str]| {
        let mut args = vec![
            "enroll",
            "--config",
            c,
            "--hospital",
            "h1",
            "--region",
            "eu-west",
            "--node",
            "edge-1",
            "--public-key",
            k,
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    assert_eq!(enroll(&old, &[]).0, 0);
    let (code, out, _) = enroll(&old, &[]);
    assert_eq!((code, out.trim()), (0, "h1 is enrolled in eu-west already"));
    let (code, _, err) = enroll(&new, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("enrolled already") && err.contains("--replace"),
        "{err}"
    );
    let (code, out, err) = enroll(&new, &["--replace"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "re-keyed h1 in eu-west (node was edge-1)");
    // Everything above is in the registry's audit, by the login that ran it.
    let db = cloud_sync::store::registry::RegistryDb::open(&dir.path().join("data")).unwrap();
    let audit: Vec<String> = db
        .audit_log()
        .unwrap()
        .into_iter()
        .map(|a| format!("{} {} {}", a.actor, a.action, a.subject))
        .collect();
    assert_eq!(
        audit,
        [
            "cli:ops-bob token_created dashboard",
            "cli:ops-bob token_created root",
            "cli:ops-bob token_revoked dashboard",
            "cli:ops-bob enrolment_created h1",
            "cli:ops-bob enrolment_replaced h1",
        ]
    );
}

#[test]
fn fleet_keygen_makes_a_signing_key_the_cloud_reads_and_never_overwrites_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let s = |name: &str| p(name).to_str().unwrap().to_owned();
    let (code, out, err) = cli(&["fleet", "keygen", "--out", &s("fleet.pk8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("[fleet] key_file") && out.contains("[fleet] command_key"),
        "{out}"
    );
    let public = std::fs::read(p("fleet.pk8.pub")).unwrap();
    assert_eq!(public.len(), 32);
    assert!(out.contains(&hms_domain::event::to_hex(&public)), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p("fleet.pk8"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // What it signs verifies with FILE.pub.
    let key = cloud_sync::fleet::FleetKey::from_pkcs8(&std::fs::read(p("fleet.pk8")).unwrap())
        .expect("a PKCS#8 Ed25519 key");
    assert_eq!(key.public_key(), public);
    // Never overwritten: exit 1, the key unchanged.
    let before = std::fs::read(p("fleet.pk8")).unwrap();
    let (code, _, err) = cli(&["fleet", "keygen", "--out", &s("fleet.pk8")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("fleet.pk8 exists; a key is never replaced silently"),
        "{err}"
    );
    assert_eq!(std::fs::read(p("fleet.pk8")).unwrap(), before);
    assert_eq!(std::fs::read(p("fleet.pk8.pub")).unwrap(), public);

    // `[fleet]` errors stop start-up with exit 64 before anything is bound.
    let base = "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[fleet]\n";
    for (fleet, says) in [
        (
            "broker = \"mqtt://10.0.0.5:1883\"\n",
            "cloud.toml: error: [fleet] broker must be mqtts:// to reach another machine",
        ),
        (
            "broker = \"mqtts://mqtt.example\"\n",
            "cloud.toml: error: [fleet] broker is mqtts:// but ca is not given",
        ),
        ("brokr = \"mqtt://127.0.0.1\"\n", "cloud.toml:5:1: error:"),
        (
            "broker = \"mqtt://127.0.0.1:1883\"\nkey_file = \"fleet.pk8.pub\"\n",
            "[fleet] key_file",
        ),
    ] {
        std::fs::write(p("cloud.toml"), format!("{base}{fleet}")).unwrap();
        let (code, out, err) = cli(&["run", "--config", &s("cloud.toml")]);
        assert_eq!(code, 64, "{fleet}: {out}{err}");
        assert!(err.contains(says), "{fleet}: {err}");
    }
}

#[test]
fn promote_and_unfence_say_why_they_cannot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let primary = dir.path().join("primary.toml");
    std::fs::write(
        &primary,
        "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"p\"\n",
    )
    .expect("write");
    let replica = dir.path().join("replica.toml");
    std::fs::write(
        &replica,
        "region = \"eu-central\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"r\"\n\
         mode = \"replica\"\nallowed_dr_regions = [\"eu-west\"]\n",
    )
    .expect("write");
    let (p, r) = (
        primary.to_str().expect("utf8"),
        replica.to_str().expect("utf8"),
    );
    // A primary is not promoted.
    let (code, _, err) = cli(&["promote", "--config", p]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("only a DR replica"), "{err}");
    // A replica its primary never reported to: nothing to promote.
    let (code, _, err) = cli(&["promote", "--config", r]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing to promote"), "{err}");
    let (code, _, err) = cli(&["promote", "--config", r, "--hospital", "h1"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no enrolment of h1 was replicated here"),
        "{err}"
    );
    // A hospital id that is none.
    let (code, _, err) = cli(&["promote", "--config", r, "--hospital", "no such/id"]);
    assert_eq!(code, 64, "{err}");
    // Unfencing what is not fenced.
    let (code, _, err) = cli(&["unfence", "--config", p, "--hospital", "h1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("h1 is not fenced here"), "{err}");
    let (code, _, err) = cli(&["unfence", "--config", p]);
    assert_eq!(code, 64, "{err}");
}
