//! One process per data dir.
//!
//! A process that owns a data dir (`hms-edge run`, `hms-edge restore`)
//! holds an exclusive advisory lock on `data_dir/hms-edge.lock` for as long
//! as it runs; the kernel releases it when the process ends, however it
//! ends. A second owner is refused at once with [`DataDirLocked`], naming
//! the holder's pid (which the owner writes into the file), before it opens
//! anything. Commands that are safe beside the owner do not take it:
//! `token create` (SQLite serialises writers of `auth.sqlite`), `backup`
//! and `verify` (read-only snapshots), `sync keygen` (creates new files
//! only) and `models install`/`rollback` (an atomic switch the owner picks
//! up; they lock the model directory among themselves instead).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// File name of the lock inside the data dir.
pub const LOCK_FILE: &str = "hms-edge.lock";

/// The data dir is owned by another process (or another owner in this one).
#[derive(Debug, thiserror::Error)]
#[error(
    "the data dir {} is in use by another hms-edge process{}: stop it first, or give this one \
     another data dir",
    dir.display(),
    holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
)]
pub struct DataDirLocked {
    /// The data dir.
    pub dir: PathBuf,
    /// The pid the holder wrote, when it could be read.
    pub holder: Option<u32>,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it.
    #[error(transparent)]
    Locked(#[from] DataDirLocked),
    /// The lock file could not be created or locked.
    #[error("locking {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
}

impl DataDirLock {
    /// Takes the exclusive lock of `dir` (creating the dir and the lock file
    /// when needed) without waiting, and records this process's pid in it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(DataDirLocked {
                    dir: dir.to_owned(),
                    holder: text.trim().parse().ok(),
                }
                .into());
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // The pid is for the message a second owner gets; not durable state.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { file })
    }

    /// [`DataDirLock::acquire`] for callers that report with `anyhow`: a
    /// refusal stays a [`DataDirLocked`] (the CLI exits with its own code).
    pub fn take(dir: &Path) -> anyhow::Result<DataDirLock> {
        match Self::acquire(dir) {
            Ok(l) => Ok(l),
            Err(LockError::Locked(l)) => Err(l.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Releases the lock now (dropping it does the same).
    pub fn release(self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_with_the_holders_pid_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first owner");
        match DataDirLock::acquire(dir.path()) {
            Err(LockError::Locked(l)) => {
                assert_eq!(l.holder, Some(std::process::id()));
                assert!(
                    l.to_string().contains("in use by another hms-edge process"),
                    "{l}"
                );
            }
            other => panic!("a second owner was not refused: {other:?}"),
        }
        first.release();
        let again = DataDirLock::acquire(dir.path()).expect("free again");
        drop(again);
        DataDirLock::acquire(dir.path()).expect("dropping releases too");
    }

    #[test]
    fn a_data_dir_that_cannot_hold_a_lock_file_is_an_io_error_not_a_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").expect("write");
        match DataDirLock::acquire(&file) {
            Err(LockError::Io { .. }) => {}
            other => panic!("expected an IO error, got {other:?}"),
        }
    }
}
