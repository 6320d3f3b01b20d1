//! `hms-cloud` as a process: enrolment with residency, configuration errors,
//! serving over HTTP and HTTPS, DR keys and enrolment, operator tokens, a
//! primary replicating to its replica, and EMPI training refusals.

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
