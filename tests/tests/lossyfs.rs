//! Self-tests of the power-loss simulation filesystem (`hms_e2e::lossyfs`):
//! unsynced file data and unsynced directory entries are lost at a power
//! cut, synced ones survive, and SQLite in WAL mode keeps every acknowledged
//! commit with `synchronous=FULL` but loses committed rows with `NORMAL` and
//! `OFF`, which proves the harness catches a missing fsync.
//!
//! The SQLite writer runs in a child process (this test binary again, running
//! only `sqlite_writer_child`) that is SIGKILLed after its last commit, so the
//! connection never closes cleanly (a clean close checkpoints and syncs).
//!
//! Mounting needs `/dev/fuse` and root: where that is impossible the tests
//! print `SKIPPED: …` and pass, unless `CI=true`, where they fail.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use hms_e2e::lossyfs::{self, LossyFs, Op};
use rusqlite::{Connection, params};

/// A mounted lossy filesystem on a fresh temporary directory; unmounts
/// (field order) before the directory is removed, also when a test fails.
struct Mounted {
    fs: LossyFs,
    _dir: tempfile::TempDir,
}

/// Mounts a lossy filesystem, or says why not (`SKIPPED:` outside CI).
fn mount(test: &str) -> Option<Mounted> {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = AVAILABLE.get_or_init(lossyfs::available) {
        hms_e2e::skip::skip(test, &format!("FUSE cannot be mounted here: {why}"));
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("lossyfs-{test}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temporary mount point");
    let fs = LossyFs::mount(dir.path()).expect("mount lossyfs");
    Some(Mounted { fs, _dir: dir })
}

impl Mounted {
    fn path(&self, name: &str) -> PathBuf {
        self.fs.path().join(name)
    }

    fn power_cut(&mut self) {
        self.fs.power_cut().expect("power cut");
    }
}

fn sync_dir(dir: &Path) {
    File::open(dir)
        .expect("open directory")
        .sync_all()
        .expect("fsync directory");
}

/// Creates (or replaces) `path` with `data` and fsyncs the file, not its directory.
fn write_synced(path: &Path, data: &[u8]) {
    let mut file = File::create(path).expect("create file");
    file.write_all(data).expect("write");
    file.sync_all().expect("fsync file");
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for writing")
}

#[test]
fn unsynced_file_data_is_lost_and_synced_data_survives() {
    let Some(mut m) = mount("data") else { return };
    let root = m.fs.path().to_owned();
    let f = m.path("f");

    // The entry is made durable, the data is not.
    File::create(&f)
        .expect("create")
        .write_all(b"volatile")
        .expect("write");
    sync_dir(&root);
    assert_eq!(read(&f), b"volatile");
    m.power_cut();
    assert_eq!(read(&f), b"", "unsynced data survived the power cut");

    // sync_all (fsync) makes it durable.
    let mut file = open_rw(&f);
    file.write_all(b"hello").expect("write");
    file.sync_all().expect("fsync");
    drop(file);
    m.power_cut();
    assert_eq!(read(&f), b"hello");

    // sync_data (fdatasync) too.
    let mut file = OpenOptions::new().append(true).open(&f).expect("open");
    file.write_all(b" world").expect("append");
    file.sync_data().expect("fdatasync");
    drop(file);
    m.power_cut();
    assert_eq!(read(&f), b"hello world");

    // A later unsynced overwrite and append are lost; the synced part stays.
    let mut file = open_rw(&f);
    file.write_all(b"HELLO").expect("overwrite");
    file.seek(SeekFrom::End(0)).expect("seek");
    file.write_all(b", and more").expect("append");
    drop(file);
    assert_eq!(read(&f), b"HELLO world, and more");
    m.power_cut();
    assert_eq!(read(&f), b"hello world");

    // So is an unsynced truncation; a synced one stays.
    open_rw(&f).set_len(2).expect("truncate");
    m.power_cut();
    assert_eq!(read(&f), b"hello world");
    let file = open_rw(&f);
    file.set_len(5).expect("truncate");
    file.sync_all().expect("fsync");
    drop(file);
    m.power_cut();
    assert_eq!(read(&f), b"hello");
    assert_eq!(fs::metadata(&f).expect("stat").len(), 5);

    let ops = m.fs.ops();
    assert_eq!(
        ops.iter().filter(|op| **op == Op::PowerCut).count(),
        6,
        "{ops:?}"
    );
    assert!(ops.contains(&Op::Truncate {
        path: "f".into(),
        size: 5
    }));
}

#[test]
fn directory_entries_need_a_directory_sync() {
    let Some(mut m) = mount("names") else { return };
    let root = m.fs.path().to_owned();
    let (a, b) = (m.path("a"), m.path("b"));

    // Synced data, unsynced entry: the file is gone.
    write_synced(&a, b"a");
    m.power_cut();
    assert!(!a.exists(), "a file whose entry was never synced survived");

    // With the directory synced it survives.
    write_synced(&a, b"a");
    sync_dir(&root);
    m.power_cut();
    assert_eq!(read(&a), b"a");

    // An unsynced rename is undone; a synced one stays.
    fs::rename(&a, &b).expect("rename");
    m.power_cut();
    assert!(a.exists() && !b.exists(), "unsynced rename survived");
    fs::rename(&a, &b).expect("rename");
    sync_dir(&root);
    m.power_cut();
    assert!(!a.exists(), "synced rename lost its source removal");
    assert_eq!(read(&b), b"a");

    // An unsynced unlink is undone; a synced one stays.
    fs::remove_file(&b).expect("unlink");
    m.power_cut();
    assert_eq!(read(&b), b"a", "unsynced unlink survived");
    fs::remove_file(&b).expect("unlink");
    sync_dir(&root);
    m.power_cut();
    assert!(!b.exists(), "synced unlink was undone");

    // Subdirectories follow the same rule, each for its own entries.
    let d = m.path("d");
    fs::create_dir(&d).expect("mkdir");
    m.power_cut();
    assert!(!d.exists(), "unsynced mkdir survived");
    fs::create_dir(&d).expect("mkdir");
    sync_dir(&root);
    write_synced(&d.join("x"), b"x");
    m.power_cut();
    assert!(d.is_dir());
    assert!(
        !d.join("x").exists(),
        "entry in an unsynced subdirectory survived"
    );
    write_synced(&d.join("x"), b"x");
    sync_dir(&d);
    m.power_cut();
    assert_eq!(read(&d.join("x")), b"x");

    let ops = m.fs.ops();
    assert!(ops.contains(&Op::SyncDir { path: "".into() }), "{ops:?}");
    assert!(ops.contains(&Op::SyncDir { path: "d".into() }), "{ops:?}");
    assert!(ops.contains(&Op::Sync { path: "d/x".into() }));
}

/// Set by the parent for the child process that runs `sqlite_writer_child`.
const CHILD_ENV: &str = "LOSSYFS_SQLITE_WRITER";
/// Prefix of the child's protocol lines on stdout.
const CHILD_SAYS: &str = "lossyfs-writer:";
/// Rows the child commits, one transaction each.
const ROWS: u32 = 200;

/// Not a test of its own: the SQLite writer run by the SQLite tests in a
/// child process (this binary again), which returns at once otherwise. It
/// commits `ROWS` single-row transactions, acknowledges each on stdout once
/// committed, then waits to be SIGKILLed; it never closes its connection.
#[test]
fn sqlite_writer_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut spec = spec.split('\n');
    let (Some(db), Some(synchronous)) = (spec.next(), spec.next()) else {
        panic!("bad {CHILD_ENV}");
    };
    let conn = Connection::open(db).expect("open database");
    conn.execute_batch(&format!("PRAGMA synchronous={synchronous}"))
        .expect("set synchronous");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    let mut out = std::io::stdout().lock();
    for id in 0..ROWS {
        conn.execute(
            "INSERT INTO msg(id, body) VALUES (?1, ?2)",
            params![id, format!("message {id}: {}", "x".repeat(300))],
        )
        .expect("insert");
        writeln!(out, "{CHILD_SAYS} acked {id}").expect("stdout");
        out.flush().expect("stdout");
    }
    writeln!(out, "{CHILD_SAYS} done").expect("stdout");
    out.flush().expect("stdout");
    // Wait for SIGKILL. Should the parent die instead, stdin closes: exit
    // without running destructors, so the connection is not closed cleanly.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    std::process::exit(101);
}

/// Creates the database in WAL mode with `synchronous=FULL`, closes it
/// cleanly, and checks it survives a power cut (so later losses are the
/// writer's, not the setup's).
fn create_database(m: &mut Mounted, db: &Path) {
    let conn = Connection::open(db).expect("create database");
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .expect("WAL mode");
    assert_eq!(mode, "wal");
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE msg(id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    )
    .expect("schema");
    drop(conn);
    m.power_cut();
    let conn = Connection::open(db).expect("reopen database");
    let rows: u32 = conn
        .query_row("SELECT count(*) FROM msg", [], |r| r.get(0))
        .expect("the table survived the setup's power cut");
    assert_eq!(rows, 0);
}

struct Crash {
    /// Rows the writer acknowledged (committed) before it was killed.
    acked: u32,
    /// Rows found after the power cut, and whether they are exactly `0..n`.
    survived: u32,
    prefix: bool,
    integrity: String,
}

/// Runs the writer child with `synchronous`, SIGKILLs it after its last
/// acknowledgement, cuts the power and counts what survived.
fn crash_writer(m: &mut Mounted, synchronous: &str) -> Crash {
    let db = m.path("hms.db");
    create_database(m, &db);
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "sqlite_writer_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}\n{synchronous}", db.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the writer");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acked = 0;
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            // libtest may have begun the line (`test … ... `): look anywhere in it.
            Ok(line) => match line.split_once(CHILD_SAYS).map(|(_, said)| said.trim()) {
                Some("done") => break,
                Some(ack) if ack.starts_with("acked ") => acked += 1,
                _ => {}
            },
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("the writer did not finish within 60 s ({acked} rows acknowledged)");
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait();
                panic!("the writer ended before it was killed: {status:?}");
            }
        }
    }
    // Child::kill sends SIGKILL: no destructor, no clean close, no checkpoint.
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap the writer");
    m.power_cut();

    let conn = Connection::open(&db).expect("reopen after the power cut");
    let ids: Vec<u32> = conn
        .prepare("SELECT id FROM msg ORDER BY id")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    let survived = u32::try_from(ids.len()).expect("row count");
    let prefix = ids.iter().copied().eq(0..survived);
    Crash {
        acked,
        survived,
        prefix,
        integrity,
    }
}

#[test]
fn sqlite_full_keeps_every_acknowledged_commit() {
    let Some(mut m) = mount("sqlite-full") else {
        return;
    };
    let crash = crash_writer(&mut m, "FULL");
    assert_eq!(crash.acked, ROWS);
    assert_eq!(
        crash.survived, crash.acked,
        "acknowledged rows were lost with synchronous=FULL"
    );
    assert!(crash.prefix, "the surviving rows are not 0..{ROWS}");
    assert_eq!(crash.integrity, "ok");
}

#[test]
fn sqlite_normal_loses_committed_rows() {
    let Some(mut m) = mount("sqlite-normal") else {
        return;
    };
    let crash = crash_writer(&mut m, "NORMAL");
    eprintln!(
        "synchronous=NORMAL: {} of {} acknowledged rows survived, integrity {}",
        crash.survived, crash.acked, crash.integrity
    );
    assert_eq!(crash.acked, ROWS);
    assert!(
        crash.survived < crash.acked,
        "no committed row was lost with synchronous=NORMAL: the harness does not catch a missing fsync"
    );
    assert!(crash.prefix, "the surviving rows are not a prefix");
}

#[test]
fn sqlite_off_loses_committed_rows() {
    let Some(mut m) = mount("sqlite-off") else {
        return;
    };
    let crash = crash_writer(&mut m, "OFF");
    eprintln!(
        "synchronous=OFF: {} of {} acknowledged rows survived, integrity {}",
        crash.survived, crash.acked, crash.integrity
    );
    assert_eq!(crash.acked, ROWS);
    assert!(
        crash.survived < crash.acked,
        "no committed row was lost with synchronous=OFF: the harness does not catch a missing fsync"
    );
    assert!(crash.prefix, "the surviving rows are not a prefix");
}

/// The operations logged while one more row is committed.
fn commit_ops(m: &Mounted, conn: &Connection, id: u32) -> Vec<Op> {
    let mark = m.fs.op_count();
    conn.execute("INSERT INTO msg(id, body) VALUES (?1, 'x')", params![id])
        .expect("insert");
    m.fs.ops_since(mark)
}

#[test]
fn op_log_shows_the_wal_synced_after_its_writes_only_with_full() {
    let Some(mut m) = mount("oplog") else { return };
    let db = m.path("hms.db");
    create_database(&mut m, &db);
    let conn = Connection::open(&db).expect("open");
    let wal = PathBuf::from("hms.db-wal");
    let is_wal_write = |op: &Op| matches!(op, Op::Write { path, .. } if *path == wal);
    let is_wal_sync = |op: &Op| matches!(op, Op::Sync { path } if *path == wal);

    conn.execute_batch("PRAGMA synchronous=FULL").expect("FULL");
    // The first commit also creates the WAL; look at a later, ordinary one.
    commit_ops(&m, &conn, 0);
    let ops = commit_ops(&m, &conn, 1);
    let last_write = ops
        .iter()
        .rposition(is_wal_write)
        .unwrap_or_else(|| panic!("no write to the WAL in a FULL commit: {ops:?}"));
    let first_write = ops.iter().position(is_wal_write).unwrap_or(last_write);
    let sync = ops
        .iter()
        .rposition(is_wal_sync)
        .unwrap_or_else(|| panic!("no sync of the WAL in a FULL commit: {ops:?}"));
    assert!(
        sync > last_write,
        "the WAL was written after its last sync in a FULL commit: {ops:?}"
    );
    assert!(
        !ops[first_write..last_write].iter().any(is_wal_sync),
        "a FULL commit of one row synced the WAL between its writes: {ops:?}"
    );

    conn.execute_batch("PRAGMA synchronous=OFF").expect("OFF");
    let ops = commit_ops(&m, &conn, 2);
    assert!(
        ops.iter().any(is_wal_write),
        "no write to the WAL in an OFF commit: {ops:?}"
    );
    assert!(
        !ops.iter()
            .any(|op| matches!(op, Op::Sync { .. } | Op::SyncDir { .. })),
        "an OFF commit synced: {ops:?}"
    );
}

#[test]
fn power_cut_refuses_while_a_file_is_open_and_drop_still_unmounts() {
    let Some(mut m) = mount("busy") else { return };
    let f = m.path("f");
    let mut file = File::create(&f).expect("create");
    file.write_all(b"volatile").expect("write");
    let err =
        m.fs.power_cut()
            .expect_err("a power cut with a file still open should fail");
    assert!(err.to_string().contains("umount"), "{err}");
    drop(file);
    assert_eq!(read(&f), b"volatile", "a refused power cut lost data");
    assert!(!m.fs.ops().contains(&Op::PowerCut));
    m.power_cut();
    assert!(!f.exists());

    // Dropping the handle with a file still open detaches the mount lazily.
    let root = m.fs.path().to_owned();
    let file = File::create(m.path("g")).expect("create");
    drop(m.fs);
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&format!(" {} ", root.display())),
        "still mounted after drop: {mounts}"
    );
    drop(file);
}
