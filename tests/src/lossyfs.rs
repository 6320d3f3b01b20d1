//! `lossyfs`: an in-memory FUSE filesystem for tests that simulates a power
//! cut, losing every write that was not made durable by `fsync`/`fdatasync`,
//! the way a real disk loses its volatile write cache.
//!
//! The test process mounts it itself ([`LossyFs::mount`]), runs the code under
//! test against it (typically a child process such as `hms-edge`, which it
//! then SIGKILLs), calls [`LossyFs::power_cut`] and checks what survived.
//!
//! # The model
//!
//! - Every regular file has a **current** content (what reads see) and a
//!   **durable** content. `write`, truncation (`setattr` with a size) and
//!   `fallocate` change the current content only. `fsync` on the file,
//!   `datasync` or not, copies current into durable. `flush` and `release`
//!   (`close(2)`) make nothing durable. Sizes reported by `stat` are those of
//!   the current content.
//! - Every directory has **current** entries and **durable** entries. The
//!   namespace operations (`create`/`mknod`, `mkdir`, `unlink`, `rmdir`,
//!   `rename`, `symlink`, `link`) change the current entries of the
//!   directories involved; `fsyncdir` (an `fsync` on an open directory, which
//!   is how SQLite syncs the directory after creating its WAL or journal)
//!   copies that directory's current entries into its durable ones. A file
//!   whose entry never became durable does not exist after a power cut, even
//!   if its data was synced. A rename touching two directories is only
//!   durable in each directory once that directory is synced (so a power
//!   cut can leave both names, or neither, as on a filesystem without a
//!   journal). The root directory (the mount point) always exists.
//! - [`LossyFs::power_cut`] first freezes the filesystem (every later request
//!   fails with `EIO`, and nothing more becomes durable), unmounts it, then
//!   atomically replaces every file's current content by its durable one and
//!   every directory's entries by its durable entries, drops whatever is no
//!   longer reachable from the root, and mounts again at the same place, so
//!   the kernel's page cache and dentry cache hold nothing from before. Open
//!   file handles from before are void (the processes that held them are
//!   expected to be dead: unmounting fails, and the power cut with it, while
//!   a file on the mount is still open).
//! - Metadata other than sizes and names (mode, owner, times) is kept as is
//!   and not subject to loss. A directory that a power cut would make
//!   reachable under two names (possible only after unsynced cross-directory
//!   renames) keeps the first name in breadth-first, name order; the other
//!   entry is dropped.
//!
//! # What is and is not implemented
//!
//! Regular files, directories, symbolic links and hard links. No device
//! nodes, FIFOs or sockets, no extended attributes, no permission checks
//! (the tests run as root), and no POSIX locking: the kernel then does
//! local locking, which is what SQLite needs on one machine. Entry and
//! attribute TTLs are zero (the kernel always asks) and files are not opened
//! with `direct_io`, so writable shared `mmap` works (SQLite maps its `-shm`
//! file with `MAP_SHARED`). Contents are kept in 4 KiB pages shared
//! copy-on-write between the current and the durable versions, so an
//! `fsync` costs a pointer per page, not a copy of the file.
//!
//! # Operation log
//!
//! [`LossyFs::ops`] lists what happened, with paths relative to the mount
//! root (the root itself is the empty path): [`Op::Write`], [`Op::Truncate`],
//! [`Op::Allocate`], [`Op::Sync`], [`Op::SyncDir`], the namespace changes
//! [`Op::Create`], [`Op::Remove`], [`Op::Rename`], and [`Op::PowerCut`].
//! [`LossyFs::op_count`] counts the operations logged since the mount or the
//! last [`LossyFs::clear_ops`]; [`LossyFs::ops_since`] returns those after
//! such a mark. The log keeps the latest [`OP_LOG_CAPACITY`] entries.
//!
//! # Mounting
//!
//! `fuser` is used without the C libfuse: it opens `/dev/fuse` and calls
//! `mount(2)` itself, which needs root (or `CAP_SYS_ADMIN`); the setuid
//! helper `fusermount3` it falls back to otherwise is not expected to be
//! installed. A power cut unmounts with `umount(8)` (util-linux), so that a
//! busy mount fails without tearing the session down; the final unmount (on
//! drop) uses `umount(2)` through `fuser`, falling back to a lazy
//! `umount -l`. [`available`] tells whether all this works here.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use std::io::Write;
//!
//! let mut fs = hms_e2e::lossyfs::LossyFs::mount(std::path::Path::new("/tmp/mnt"))?;
//! let mut file = std::fs::File::create(fs.path().join("a"))?;
//! file.write_all(b"volatile")?;
//! drop(file);
//! fs.power_cut()?;
//! // The directory was never synced: the file is gone.
//! assert!(!fs.path().join("a").exists());
//! # Ok(())
//! # }
//! ```

use std::cmp::min;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

/// How many operations the log keeps; older ones are dropped first.
pub const OP_LOG_CAPACITY: usize = 100_000;

/// Entry and attribute time-to-live: zero, so the kernel always asks.
const TTL: Duration = Duration::ZERO;
/// Inode numbers are never reused, so one generation is enough.
const GENERATION: Generation = Generation(0);
/// The root directory's inode number.
const ROOT: u64 = 1;
/// Page size of file contents (and the block size reported).
const PAGE: usize = 4096;
/// Largest file size accepted (`EFBIG` above).
const MAX_FILE_SIZE: u64 = 16 << 30;
/// Longest name accepted (`ENAMETOOLONG` above).
const MAX_NAME: usize = 255;
/// Bound on path reconstruction (guards against a cycle in the name hints).
const MAX_DEPTH: usize = 4096;
/// Capacity reported by `statfs`, in pages.
const CAPACITY_PAGES: u64 = 16 << 20;
/// File type bits of a mode, and the regular-file type (`<sys/stat.h>`).
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
/// `fallocate` mode flag that leaves the file size alone (`<linux/falloc.h>`).
const FALLOC_FL_KEEP_SIZE: i32 = 1;

/// One logged operation; paths are relative to the mount root (the root
/// itself is the empty path). A file's path is the one it had when the
/// operation happened (for a file already unlinked: its last name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `len` bytes written at `offset` (volatile until a [`Op::Sync`]).
    Write {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    /// The file's size set to `size` (truncate or extend).
    Truncate { path: PathBuf, size: u64 },
    /// `fallocate` of `len` bytes at `offset` that may extend the file.
    Allocate {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    /// `fsync`/`fdatasync` of a file: its content is now durable.
    Sync { path: PathBuf },
    /// `fsync` of a directory: its entries are now durable.
    SyncDir { path: PathBuf },
    /// A new name: file, directory, symbolic link or hard link.
    Create { path: PathBuf },
    /// A name removed (`unlink`, `rmdir`).
    Remove { path: PathBuf },
    /// A name moved.
    Rename { from: PathBuf, to: PathBuf },
    /// [`LossyFs::power_cut`] happened here.
    PowerCut,
}

/// An in-memory lossy filesystem mounted at [`LossyFs::path`]; unmounted on
/// drop. See the [module documentation](self) for the model.
pub struct LossyFs {
    mountpoint: PathBuf,
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
}

impl fmt::Debug for LossyFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LossyFs")
            .field("mountpoint", &self.mountpoint)
            .field("mounted", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl LossyFs {
    /// Mounts an empty lossy filesystem on `mountpoint` (an existing empty
    /// directory). The root directory takes the mount point's mode and owner.
    pub fn mount(mountpoint: &Path) -> io::Result<LossyFs> {
        let mountpoint = mountpoint.canonicalize().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("mount point {}: {e}", mountpoint.display()),
            )
        })?;
        let meta = fs::metadata(&mountpoint)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("mount point {} is not a directory", mountpoint.display()),
            ));
        }
        if fs::read_dir(&mountpoint)?.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                format!("mount point {} is not empty", mountpoint.display()),
            ));
        }
        let perm = u16::try_from(meta.mode() & 0o7777).unwrap_or(0o755);
        let state = Arc::new(Mutex::new(State::new(perm, meta.uid(), meta.gid())));
        let session = spawn(&mountpoint, &state)?;
        Ok(LossyFs {
            mountpoint,
            state,
            session: Some(session),
        })
    }

    /// The mount point (canonical).
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Simulates a power cut: drops everything that was not made durable and
    /// remounts (see the [module documentation](self)). Every process with a
    /// file open on the mount must be dead by now; if the mount is still
    /// busy this fails and nothing is lost.
    pub fn power_cut(&mut self) -> io::Result<()> {
        self.lock().frozen = true;
        let mut ended = Ok(());
        if let Some(session) = self.session.take() {
            if let Err(e) = unmount(&self.mountpoint, false) {
                self.session = Some(session);
                self.lock().frozen = false;
                return Err(e);
            }
            // The kernel aborted the connection, so the session thread ends;
            // joining also drops fuser's own handle on the old mount.
            ended = session.join();
        }
        {
            let mut state = self.lock();
            state.revert();
            state.frozen = false;
            state.log.push(Op::PowerCut);
        }
        self.session = Some(spawn(&self.mountpoint, &self.state)?);
        ended.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("lossyfs session before the power cut: {e}"),
            )
        })
    }

    /// The retained operations logged since the mount or [`LossyFs::clear_ops`].
    pub fn ops(&self) -> Vec<Op> {
        self.lock().log.ops.iter().cloned().collect()
    }

    /// How many operations were logged since the mount or
    /// [`LossyFs::clear_ops`] (not capped); a mark for [`LossyFs::ops_since`].
    pub fn op_count(&self) -> usize {
        self.lock().log.total
    }

    /// The operations logged after `mark` (an earlier [`LossyFs::op_count`]),
    /// as far as the log still holds them.
    pub fn ops_since(&self, mark: usize) -> Vec<Op> {
        let state = self.lock();
        let log = &state.log;
        let first = log.total - log.ops.len();
        log.ops
            .iter()
            .skip(mark.saturating_sub(first))
            .cloned()
            .collect()
    }

    /// Empties the operation log and restarts [`LossyFs::op_count`] at zero.
    pub fn clear_ops(&self) {
        let mut state = self.lock();
        state.log.ops.clear();
        state.log.total = 0;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for LossyFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take()
            && session.umount_and_join().is_err()
        {
            // Still busy (a process holds a file open): detach it lazily so
            // the mount point is free; the kernel ends the session when the
            // last file is closed.
            let _ = unmount(&self.mountpoint, true);
        }
    }
}

/// Whether a lossy filesystem can be mounted here: `Ok` after mounting,
/// writing, reading back and unmounting one in a temporary directory, or the
/// reason it cannot.
pub fn available() -> Result<(), String> {
    static PROBE: AtomicU64 = AtomicU64::new(0);
    let dev = Path::new("/dev/fuse");
    if !dev.exists() {
        return Err(
            "/dev/fuse does not exist (the fuse kernel module is not loaded, or the device is \
             not exposed to this container)"
                .to_owned(),
        );
    }
    if let Err(e) = fs::OpenOptions::new().read(true).write(true).open(dev) {
        return Err(format!("cannot open /dev/fuse: {e}"));
    }
    let dir = std::env::temp_dir().join(format!(
        "lossyfs-probe-{}-{}",
        std::process::id(),
        PROBE.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = || -> Result<(), String> {
        let lossy = LossyFs::mount(&dir).map_err(|e| e.to_string())?;
        let file = lossy.path().join("probe");
        let used = || -> io::Result<Vec<u8>> {
            fs::write(&file, b"probe")?;
            let back = fs::read(&file)?;
            fs::remove_file(&file)?;
            Ok(back)
        };
        match used() {
            Ok(back) if back == b"probe" => Ok(()),
            Ok(_) => Err("the probe mount read back something else than was written".to_owned()),
            Err(e) => Err(format!("using the probe mount at {}: {e}", dir.display())),
        }
    };
    let result = probe();
    let _ = fs::remove_dir(&dir);
    result
}

/// Mounts a session serving `state` on `mountpoint`.
fn spawn(mountpoint: &Path, state: &Arc<Mutex<State>>) -> io::Result<BackgroundSession> {
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("lossyfs".to_owned())];
    let server = Server {
        state: Arc::clone(state),
    };
    fuser::spawn_mount(server, mountpoint, &config).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::NotFound {
            " (mount(2) was refused, probably for want of root or CAP_SYS_ADMIN, and the \
             fallback helper fusermount3 is not installed)"
        } else {
            ""
        };
        io::Error::new(
            e.kind(),
            format!("mounting FUSE on {}: {e}{hint}", mountpoint.display()),
        )
    })
}

/// Runs `umount(8)` on `path` (internal only: no `umount.fuse` helper), lazily
/// if asked; retries a little while the mount is busy.
fn unmount(path: &Path, lazy: bool) -> io::Result<()> {
    let mut last = String::new();
    for attempt in 0..10 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut command = Command::new("umount");
        command.arg("-i");
        if lazy {
            command.arg("-l");
        }
        let output = command
            .arg(path)
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("running umount: {e}")))?;
        if output.status.success() {
            return Ok(());
        }
        last = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    }
    Err(io::Error::other(format!(
        "umount {} failed ({last}); is a process still holding a file open there?",
        path.display()
    )))
}

/// A file's content: 4 KiB pages shared copy-on-write between versions.
/// Bytes of the last page beyond `len` are zero.
#[derive(Clone, Default)]
struct Data {
    len: u64,
    pages: Vec<Arc<[u8; PAGE]>>,
}

impl Data {
    fn set_len(&mut self, len: u64) -> Result<(), Errno> {
        if len > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let new_len = usize::try_from(len).map_err(|_| Errno::EFBIG)?;
        let pages = new_len.div_ceil(PAGE);
        if len < self.len {
            self.pages.truncate(pages);
            let tail = new_len % PAGE;
            if tail != 0
                && let Some(last) = self.pages.last_mut()
            {
                Arc::make_mut(last)[tail..].fill(0);
            }
        } else if pages > self.pages.len() {
            self.pages.resize(pages, Arc::new([0; PAGE]));
        }
        self.len = len;
        Ok(())
    }

    fn read(&self, offset: u64, size: u32) -> Vec<u8> {
        if offset >= self.len {
            return Vec::new();
        }
        let end = min(self.len, offset.saturating_add(u64::from(size)));
        // Both are at most MAX_FILE_SIZE, which fits in usize (set_len checked).
        let (mut pos, end) = (offset as usize, end as usize);
        let mut out = Vec::with_capacity(end - pos);
        while pos < end {
            let at = pos % PAGE;
            let n = min(PAGE - at, end - pos);
            out.extend_from_slice(&self.pages[pos / PAGE][at..at + n]);
            pos += n;
        }
        out
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        if end > self.len {
            self.set_len(end)?;
        }
        let mut pos = offset as usize;
        let mut rest = data;
        while !rest.is_empty() {
            let at = pos % PAGE;
            let n = min(PAGE - at, rest.len());
            Arc::make_mut(&mut self.pages[pos / PAGE])[at..at + n].copy_from_slice(&rest[..n]);
            pos += n;
            rest = &rest[n..];
        }
        Ok(())
    }
}

enum Kind {
    File {
        current: Data,
        durable: Data,
    },
    Dir {
        current: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
    Symlink {
        target: OsString,
    },
}

struct Inode {
    kind: Kind,
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    crtime: SystemTime,
    /// Current directory entries naming this inode (the root counts as one).
    nlink: u32,
    /// The kernel's lookup count (`forget` lowers it).
    lookups: u64,
    /// Where it was last named, for paths in the log.
    parent: u64,
    name: OsString,
}

impl Inode {
    fn new(kind: Kind, perm: u16, uid: u32, gid: u32, parent: u64, name: OsString) -> Inode {
        let now = SystemTime::now();
        Inode {
            kind,
            perm,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            nlink: 1,
            lookups: 0,
            parent,
            name,
        }
    }

    fn file_type(&self) -> FileType {
        match self.kind {
            Kind::File { .. } => FileType::RegularFile,
            Kind::Dir { .. } => FileType::Directory,
            Kind::Symlink { .. } => FileType::Symlink,
        }
    }
}

struct OpLog {
    ops: VecDeque<Op>,
    total: usize,
}

impl OpLog {
    fn push(&mut self, op: Op) {
        if self.ops.len() == OP_LOG_CAPACITY {
            self.ops.pop_front();
        }
        self.ops.push_back(op);
        self.total += 1;
    }
}

/// What a `setattr` request changes.
struct AttrChange {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
}

/// Everything the mounted sessions and the handle share.
struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    next_fh: u64,
    log: OpLog,
    /// Set from the start of a power cut until the remount: requests fail.
    frozen: bool,
}

impl State {
    fn new(perm: u16, uid: u32, gid: u32) -> State {
        let root = Inode::new(
            Kind::Dir {
                current: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
            perm,
            uid,
            gid,
            ROOT,
            OsString::new(),
        );
        State {
            inodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            next_fh: 1,
            log: OpLog {
                ops: VecDeque::new(),
                total: 0,
            },
            frozen: false,
        }
    }

    fn live(&self) -> Result<(), Errno> {
        if self.frozen { Err(Errno::EIO) } else { Ok(()) }
    }

    fn inode(&self, ino: u64) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match &self.inode(dir)?.kind {
            Kind::Dir { current, .. } => Ok(current),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match &mut self.inodes.get_mut(&dir).ok_or(Errno::ENOENT)?.kind {
            Kind::Dir { current, .. } => Ok(current),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn child(&self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.inode(ino)?;
        let (size, nlink) = match &node.kind {
            Kind::File { current, .. } => (current.len, node.nlink),
            Kind::Symlink { target } => (target.len() as u64, node.nlink),
            Kind::Dir { current, .. } => {
                let subdirs = current
                    .values()
                    .filter(|c| {
                        self.inodes
                            .get(c)
                            .is_some_and(|n| matches!(n.kind, Kind::Dir { .. }))
                    })
                    .count();
                let nlink = if node.nlink == 0 {
                    0
                } else {
                    u32::try_from(subdirs).unwrap_or(u32::MAX).saturating_add(2)
                };
                (PAGE as u64, nlink)
            }
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.atime,
            mtime: node.mtime,
            ctime: node.ctime,
            crtime: node.crtime,
            kind: node.file_type(),
            perm: node.perm,
            nlink,
            uid: node.uid,
            gid: node.gid,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    /// The path of `ino` relative to the root, from the name hints.
    fn path_of(&self, ino: u64) -> PathBuf {
        let mut names = Vec::new();
        let mut at = ino;
        for _ in 0..MAX_DEPTH {
            if at == ROOT {
                break;
            }
            let Some(node) = self.inodes.get(&at) else {
                break;
            };
            names.push(node.name.as_os_str());
            at = node.parent;
        }
        names.iter().rev().collect()
    }

    fn child_path(&self, dir: u64, name: &OsStr) -> PathBuf {
        self.path_of(dir).join(name)
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        self.live()?;
        let ino = self.child(parent, name)?;
        let attr = self.attr(ino)?;
        if let Some(node) = self.inodes.get_mut(&ino) {
            node.lookups += 1;
        }
        Ok(attr)
    }

    fn forget(&mut self, ino: u64, n: u64) {
        if let Some(node) = self.inodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
            self.maybe_free(ino);
        }
    }

    /// Adds a new inode named `name` in `parent`, counted as looked up once.
    fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        perm: u16,
        req: &Request,
    ) -> Result<FileAttr, Errno> {
        self.live()?;
        if name.len() > MAX_NAME {
            return Err(Errno::ENAMETOOLONG);
        }
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut node = Inode::new(kind, perm, req.uid(), req.gid(), parent, name.to_owned());
        node.lookups = 1;
        self.inodes.insert(ino, node);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.touch(parent);
        let path = self.child_path(parent, name);
        self.log.push(Op::Create { path });
        self.attr(ino)
    }

    fn link(&mut self, ino: u64, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        self.live()?;
        if matches!(self.inode(ino)?.kind, Kind::Dir { .. }) {
            return Err(Errno::EPERM);
        }
        if name.len() > MAX_NAME {
            return Err(Errno::ENAMETOOLONG);
        }
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        if let Some(node) = self.inodes.get_mut(&ino) {
            node.nlink += 1;
            node.lookups += 1;
            node.ctime = SystemTime::now();
        }
        self.touch(parent);
        let path = self.child_path(parent, name);
        self.log.push(Op::Create { path });
        self.attr(ino)
    }

    /// `unlink` (`dir == false`) or `rmdir` (`dir == true`).
    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        self.live()?;
        let ino = self.child(parent, name)?;
        match (&self.inode(ino)?.kind, dir) {
            (Kind::Dir { current, .. }, true) if !current.is_empty() => {
                return Err(Errno::ENOTEMPTY);
            }
            (Kind::Dir { .. }, true) => {}
            (Kind::Dir { .. }, false) => return Err(Errno::EISDIR),
            (_, true) => return Err(Errno::ENOTDIR),
            (_, false) => {}
        }
        let path = self.child_path(parent, name);
        self.entries_mut(parent)?.remove(name);
        self.touch(parent);
        self.unlinked(ino);
        self.log.push(Op::Remove { path });
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        self.live()?;
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return Err(Errno::EINVAL);
        }
        if new_name.len() > MAX_NAME {
            return Err(Errno::ENAMETOOLONG);
        }
        let ino = self.child(parent, name)?;
        let moving_dir = matches!(self.inode(ino)?.kind, Kind::Dir { .. });
        let replaced = self.entries(new_parent)?.get(new_name).copied();
        if let Some(target) = replaced {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            if target == ino {
                return Ok(());
            }
            match (&self.inode(target)?.kind, moving_dir) {
                (Kind::Dir { current, .. }, true) if !current.is_empty() => {
                    return Err(Errno::ENOTEMPTY);
                }
                (Kind::Dir { .. }, true) => {}
                (Kind::Dir { .. }, false) => return Err(Errno::EISDIR),
                (_, true) => return Err(Errno::ENOTDIR),
                (_, false) => {}
            }
        }
        let from = self.child_path(parent, name);
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(new_parent)?
            .insert(new_name.to_owned(), ino);
        if let Some(node) = self.inodes.get_mut(&ino) {
            node.parent = new_parent;
            node.name = new_name.to_owned();
            node.ctime = SystemTime::now();
        }
        self.touch(parent);
        self.touch(new_parent);
        if let Some(target) = replaced {
            self.unlinked(target);
        }
        let to = self.child_path(new_parent, new_name);
        self.log.push(Op::Rename { from, to });
        Ok(())
    }

    /// One current name of `ino` is gone.
    fn unlinked(&mut self, ino: u64) {
        if let Some(node) = self.inodes.get_mut(&ino) {
            node.nlink = node.nlink.saturating_sub(1);
            node.ctime = SystemTime::now();
        }
        self.maybe_free(ino);
    }

    /// Updates a directory's times after its entries changed.
    fn touch(&mut self, dir: u64) {
        if let Some(node) = self.inodes.get_mut(&dir) {
            let now = SystemTime::now();
            node.mtime = now;
            node.ctime = now;
        }
    }

    /// Forgets inodes that nothing can reach any more: no current name, no
    /// kernel reference, and no durable entry a power cut could bring back.
    fn maybe_free(&mut self, ino: u64) {
        let mut work = vec![ino];
        while let Some(ino) = work.pop() {
            if ino == ROOT {
                continue;
            }
            let Some(node) = self.inodes.get(&ino) else {
                continue;
            };
            if node.nlink > 0 || node.lookups > 0 || self.durably_named(ino) {
                continue;
            }
            if let Some(Inode {
                kind: Kind::Dir { current, durable },
                ..
            }) = self.inodes.remove(&ino)
            {
                work.extend(durable.values());
                work.extend(current.values());
            }
        }
    }

    fn durably_named(&self, ino: u64) -> bool {
        self.inodes.values().any(|node| match &node.kind {
            Kind::Dir { durable, .. } => durable.values().any(|&c| c == ino),
            _ => false,
        })
    }

    fn setattr(&mut self, ino: u64, change: AttrChange) -> Result<FileAttr, Errno> {
        let AttrChange {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        } = change;
        self.live()?;
        let path = self.path_of(ino);
        let node = self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let now = SystemTime::now();
        if let Some(size) = size {
            match &mut node.kind {
                Kind::File { current, .. } => current.set_len(size)?,
                Kind::Dir { .. } => return Err(Errno::EISDIR),
                Kind::Symlink { .. } => return Err(Errno::EINVAL),
            }
            node.mtime = now;
        }
        if let Some(mode) = mode {
            node.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = uid {
            node.uid = uid;
        }
        if let Some(gid) = gid {
            node.gid = gid;
        }
        let at = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => now,
        };
        if let Some(t) = atime {
            node.atime = at(t);
        }
        if let Some(t) = mtime {
            node.mtime = at(t);
        }
        node.ctime = now;
        if let Some(size) = size {
            self.log.push(Op::Truncate { path, size });
        }
        self.attr(ino)
    }

    fn file_mut(&mut self, ino: u64) -> Result<(&mut Data, &mut Data), Errno> {
        match &mut self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?.kind {
            Kind::File { current, durable } => Ok((current, durable)),
            Kind::Dir { .. } => Err(Errno::EISDIR),
            Kind::Symlink { .. } => Err(Errno::EINVAL),
        }
    }

    fn open(&mut self, ino: u64) -> Result<FileHandle, Errno> {
        self.live()?;
        self.file_mut(ino)?;
        let fh = self.next_fh;
        self.next_fh += 1;
        Ok(FileHandle(fh))
    }

    fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        self.live()?;
        match &self.inode(ino)?.kind {
            Kind::File { current, .. } => Ok(current.read(offset, size)),
            Kind::Dir { .. } => Err(Errno::EISDIR),
            Kind::Symlink { .. } => Err(Errno::EINVAL),
        }
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        self.live()?;
        let written = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        self.file_mut(ino)?.0.write(offset, data)?;
        if let Some(node) = self.inodes.get_mut(&ino) {
            let now = SystemTime::now();
            node.mtime = now;
            node.ctime = now;
        }
        let path = self.path_of(ino);
        self.log.push(Op::Write {
            path,
            offset,
            len: data.len() as u64,
        });
        Ok(written)
    }

    fn fallocate(&mut self, ino: u64, offset: u64, len: u64, mode: i32) -> Result<(), Errno> {
        self.live()?;
        if mode & !FALLOC_FL_KEEP_SIZE != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        let (current, _) = self.file_mut(ino)?;
        if mode & FALLOC_FL_KEEP_SIZE != 0 {
            return Ok(());
        }
        let end = offset.checked_add(len).ok_or(Errno::EFBIG)?;
        if end > current.len {
            current.set_len(end)?;
        }
        let path = self.path_of(ino);
        self.log.push(Op::Allocate { path, offset, len });
        Ok(())
    }

    /// `fsync` of a file (or, should the kernel send one, of a directory).
    fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        self.live()?;
        match &mut self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?.kind {
            Kind::File { current, durable } => *durable = current.clone(),
            Kind::Dir { .. } => return self.fsyncdir(ino),
            Kind::Symlink { .. } => return Ok(()),
        }
        let path = self.path_of(ino);
        self.log.push(Op::Sync { path });
        Ok(())
    }

    fn fsyncdir(&mut self, ino: u64) -> Result<(), Errno> {
        self.live()?;
        let dropped: Vec<u64> = match &mut self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?.kind {
            Kind::Dir { current, durable } => {
                let old = std::mem::replace(durable, current.clone());
                old.into_values().collect()
            }
            _ => return Err(Errno::ENOTDIR),
        };
        for child in dropped {
            self.maybe_free(child);
        }
        let path = self.path_of(ino);
        self.log.push(Op::SyncDir { path });
        Ok(())
    }

    /// `.`, `..` and the current entries, with their inode numbers and types.
    fn listing(&self, ino: u64) -> Result<Vec<(u64, FileType, OsString)>, Errno> {
        self.live()?;
        let parent = self.inode(ino)?.parent;
        let mut list = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (parent, FileType::Directory, OsString::from("..")),
        ];
        for (name, child) in self.entries(ino)? {
            let kind = self.inode(*child)?.file_type();
            list.push((*child, kind, name.clone()));
        }
        Ok(list)
    }

    fn used_pages(&self) -> u64 {
        self.inodes
            .values()
            .map(|node| match &node.kind {
                Kind::File { current, .. } => current.pages.len() as u64,
                _ => 1,
            })
            .sum()
    }

    /// The power cut proper: durable becomes current, and what is no longer
    /// reachable from the root is dropped. Names and counts are rebuilt.
    fn revert(&mut self) {
        for node in self.inodes.values_mut() {
            match &mut node.kind {
                Kind::File { current, durable } => *current = durable.clone(),
                Kind::Dir { current, durable } => *current = durable.clone(),
                Kind::Symlink { .. } => {}
            }
            node.nlink = 0;
            node.lookups = 0;
        }
        let mut reachable = HashSet::from([ROOT]);
        let mut queue = VecDeque::from([ROOT]);
        while let Some(dir) = queue.pop_front() {
            let entries: Vec<(OsString, u64)> = match self.inodes.get(&dir).map(|n| &n.kind) {
                Some(Kind::Dir { current, .. }) => {
                    current.iter().map(|(n, i)| (n.clone(), *i)).collect()
                }
                _ => Vec::new(),
            };
            let mut duplicates = Vec::new();
            for (name, child) in entries {
                let Some(node) = self.inodes.get_mut(&child) else {
                    duplicates.push(name);
                    continue;
                };
                let is_dir = matches!(node.kind, Kind::Dir { .. });
                let first = reachable.insert(child);
                if is_dir && !first {
                    duplicates.push(name);
                    continue;
                }
                node.nlink += 1;
                if first {
                    node.parent = dir;
                    node.name = name;
                }
                if is_dir {
                    queue.push_back(child);
                }
            }
            if let Some(Inode {
                kind: Kind::Dir { current, durable },
                ..
            }) = self.inodes.get_mut(&dir)
            {
                for name in duplicates {
                    current.remove(&name);
                    durable.remove(&name);
                }
            }
        }
        self.inodes.retain(|ino, _| reachable.contains(ino));
        if let Some(root) = self.inodes.get_mut(&ROOT) {
            root.nlink = 1;
            root.parent = ROOT;
        }
    }
}

/// The FUSE side: one per mount, all sharing the same [`State`].
struct Server {
    state: Arc<Mutex<State>>,
}

impl Server {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn new_perm(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

fn empty_dir() -> Kind {
    Kind::Dir {
        current: BTreeMap::new(),
        durable: BTreeMap::new(),
    }
}

fn empty_file() -> Kind {
    Kind::File {
        current: Data::default(),
        durable: Data::default(),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, GENERATION),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for Server {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.lock().lookup(parent.0, name);
        reply_entry(reply, result);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.lock().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = {
            let state = self.lock();
            state.live().and_then(|()| state.attr(ino.0))
        };
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = AttrChange {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        let result = self.lock().setattr(ino.0, change);
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let result = {
            let state = self.lock();
            state.live().and_then(|()| match &state.inode(ino.0)?.kind {
                Kind::Symlink { target } => Ok(target.as_bytes().to_vec()),
                _ => Err(Errno::EINVAL),
            })
        };
        match result {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & S_IFMT != S_IFREG && mode & S_IFMT != 0 {
            reply.error(Errno::EPERM);
            return;
        }
        let result = self
            .lock()
            .create(parent.0, name, empty_file(), new_perm(mode, umask), req);
        reply_entry(reply, result);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self
            .lock()
            .create(parent.0, name, empty_dir(), new_perm(mode, umask), req);
        reply_entry(reply, result);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.lock().remove(parent.0, name, false);
        reply_empty(reply, result);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.lock().remove(parent.0, name, true);
        reply_empty(reply, result);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let kind = Kind::Symlink {
            target: target.as_os_str().to_owned(),
        };
        let result = self.lock().create(parent.0, link_name, kind, 0o777, req);
        reply_entry(reply, result);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self
            .lock()
            .rename(parent.0, name, newparent.0, newname, flags);
        reply_empty(reply, result);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let result = self.lock().link(ino.0, newparent.0, newname);
        reply_entry(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result = self.lock().open(ino.0);
        match result {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.lock().read(ino.0, offset, size);
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self.lock().write(ino.0, offset, data);
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Closing makes nothing durable.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.lock().fsync(ino.0);
        reply_empty(reply, result);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result = {
            let state = self.lock();
            state.live().and_then(|()| state.entries(ino.0).map(|_| ()))
        };
        match result {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.lock().listing(ino.0);
        match result {
            Ok(list) => {
                let skip = usize::try_from(offset).unwrap_or(usize::MAX);
                for (i, (child, kind, name)) in list.into_iter().enumerate().skip(skip) {
                    if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.lock().fsyncdir(ino.0);
        reply_empty(reply, result);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (used, files) = {
            let state = self.lock();
            (state.used_pages(), state.inodes.len() as u64)
        };
        let free = CAPACITY_PAGES.saturating_sub(used);
        reply.statfs(
            CAPACITY_PAGES,
            free,
            free,
            files + 1_000_000,
            1_000_000,
            PAGE as u32,
            MAX_NAME as u32,
            PAGE as u32,
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let result = {
            let mut state = self.lock();
            state
                .create(parent.0, name, empty_file(), new_perm(mode, umask), req)
                .and_then(|attr| Ok((attr, state.open(attr.ino.0)?)))
        };
        match result {
            Ok((attr, fh)) => reply.created(&TTL, &attr, GENERATION, fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result = self.lock().fallocate(ino.0, offset, length, mode);
        reply_empty(reply, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(data: &Data) -> Vec<u8> {
        data.read(0, u32::MAX)
    }

    #[test]
    fn data_writes_across_pages_and_truncates_with_zeroes() {
        let mut data = Data::default();
        data.write(PAGE as u64 - 2, b"abcd").expect("write");
        assert_eq!(data.len, PAGE as u64 + 2);
        assert_eq!(data.pages.len(), 2);
        assert_eq!(data.read(PAGE as u64 - 3, 10), b"\0abcd");
        data.set_len(PAGE as u64 - 1).expect("shrink");
        data.set_len(PAGE as u64 + 2).expect("grow");
        assert_eq!(data.read(PAGE as u64 - 3, 10), b"\0a\0\0\0");
        assert_eq!(bytes(&data).len(), PAGE + 2);
    }

    #[test]
    fn data_versions_share_pages_until_written() {
        let mut current = Data::default();
        current.write(0, &[7; 3 * PAGE]).expect("write");
        let durable = current.clone();
        current.write(PAGE as u64, b"x").expect("overwrite");
        assert!(Arc::ptr_eq(&current.pages[0], &durable.pages[0]));
        assert!(!Arc::ptr_eq(&current.pages[1], &durable.pages[1]));
        assert_eq!(durable.read(PAGE as u64, 1), [7]);
        assert_eq!(current.read(PAGE as u64, 1), *b"x");
    }

    #[test]
    fn op_log_keeps_the_latest_entries_and_counts_all() {
        let mut log = OpLog {
            ops: VecDeque::new(),
            total: 0,
        };
        for _ in 0..OP_LOG_CAPACITY + 5 {
            log.push(Op::PowerCut);
        }
        assert_eq!(log.ops.len(), OP_LOG_CAPACITY);
        assert_eq!(log.total, OP_LOG_CAPACITY + 5);
    }
}
