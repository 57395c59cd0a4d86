//! Each worker's private directory for its jobs' files, and the clean-up of
//! the directories of workers that are gone.
//!
//! A worker owns `<temp>/vidworker-<id>/` as long as it holds an exclusive
//! lock on `<temp>/vidworker-<id>.lock` (made before the directory). The
//! kernel drops the lock when the process dies, however it dies, so the
//! next worker to start on the machine can tell a dead worker's files from
//! a live one's without relying on process ids, which repeat across
//! container restarts. Two containers sharing a directory never delete each
//! other's files.

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use uuid::Uuid;

const PREFIX: &str = "vidworker-";
const LOCK_SUFFIX: &str = ".lock";

/// This worker's directory; removed when the worker stops.
#[derive(Debug)]
pub(super) struct WorkRoot {
    path: PathBuf,
    lock_path: PathBuf,
    /// Held open (and locked) for the worker's lifetime.
    _lock: File,
}

impl WorkRoot {
    /// Removes what dead workers left in `temp`, then makes this worker's
    /// locked, private (0700) directory.
    pub(super) fn create(temp: &Path) -> io::Result<WorkRoot> {
        remove_dead(temp);
        let id = Uuid::new_v4().simple();
        let lock_path = temp.join(format!("{PREFIX}{id}{LOCK_SUFFIX}"));
        // Made and locked under a name no worker's clean-up looks at, then
        // renamed into place (the lock holds across the rename): another
        // worker starting at the same moment never sees the lock file
        // unlocked, which would make this worker's directory look dead.
        let unlocked = temp.join(format!("{PREFIX}{id}{LOCK_SUFFIX}.new"));
        let lock = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&unlocked)?;
        lock.try_lock().map_err(io::Error::from)?;
        fs::rename(&unlocked, &lock_path)?;
        let path = temp.join(format!("{PREFIX}{id}"));
        DirBuilder::new().mode(0o700).create(&path)?;
        Ok(WorkRoot {
            path,
            lock_path,
            _lock: lock,
        })
    }

    /// The directory jobs make their own directories in.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and its lock.
    pub(super) fn remove(self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            tracing::debug!(error = %e, "cannot remove the working directory");
        }
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Removes the directories of workers whose lock is free (they are gone),
/// and directories that have no lock at all (left by an older version).
fn remove_dead(temp: &Path) {
    let Ok(entries) = fs::read_dir(temp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with(PREFIX)) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(LOCK_SUFFIX) {
            if owner_is_gone(&entry.path()) {
                remove(&temp.join(stem));
                let _ = fs::remove_file(entry.path());
            }
        } else if name.ends_with(".lock.new") {
            // A worker that died between making its lock and naming it.
            if owner_is_gone(&entry.path()) {
                let _ = fs::remove_file(entry.path());
            }
        } else if entry.path().is_dir() && !temp.join(format!("{name}{LOCK_SUFFIX}")).exists() {
            remove(&entry.path());
        }
    }
}

/// Whether nobody holds the lock file's lock. A lock we cannot open or
/// that is held means the owner may be alive.
fn owner_is_gone(lock: &Path) -> bool {
    let Ok(file) = File::open(lock) else { return false };
    match file.try_lock() {
        Ok(()) => true,
        Err(TryLockError::WouldBlock) => false,
        Err(TryLockError::Error(_)) => false,
    }
}

fn remove(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => tracing::info!(dir = %dir.display(), "removed the files of a worker that is gone"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a dead worker's files"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_workers_files_stay_and_a_dead_ones_go() {
        let temp = tempfile::tempdir().expect("temp dir");
        let live = WorkRoot::create(temp.path()).expect("first worker");
        fs::write(live.path().join("original"), b"x").expect("a job's file");
        // A worker that died: its lock file exists but nobody holds it.
        let dead = temp.path().join("vidworker-dead");
        fs::create_dir(&dead).expect("dead dir");
        fs::write(temp.path().join("vidworker-dead.lock"), b"").expect("dead lock");
        // An older version's directory, without a lock.
        let legacy = temp.path().join("vidworker-1234-abcd");
        fs::create_dir(&legacy).expect("legacy dir");

        let second = WorkRoot::create(temp.path()).expect("second worker");
        assert!(live.path().join("original").exists(), "a live worker's files are kept");
        assert!(!dead.exists() && !legacy.exists(), "dead workers' files are removed");
        assert!(second.path().is_dir());
        live.remove();
        second.remove();
        assert_eq!(fs::read_dir(temp.path()).expect("read").count(), 0);
    }
}
