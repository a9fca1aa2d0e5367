//! One writer per audit directory.
//!
//! Two odgw processes appending to the same directory would both number
//! records from the same `seq` and chain them from the same hash, and the
//! second one's start-up repair could cut the first one's line in half: the
//! trail would be broken for good. So the writer holds an exclusive advisory
//! lock (`flock`) on [`LOCK_FILE`] in the directory for as long as it runs,
//! and a second writer refuses to start. The kernel drops the lock when the
//! process ends, however it ends, so a crash never leaves the directory
//! claimed. Readers (`odgw audit verify`/`query`, the console) take no lock.

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::Path,
    time::{Duration, Instant},
};

use crate::AuditError;

/// The lock file's name: no `.jsonl`, so it is never taken for a segment.
pub const LOCK_FILE: &str = "writer.lock";

/// How long a writer waits for the claim before refusing: long enough for
/// a writer being replaced in the same process (a restart in tests) to
/// finish closing, short enough that a second odgw fails its start quickly.
const CLAIM_WAIT: Duration = Duration::from_secs(3);

/// Polling interval while waiting for the claim.
const CLAIM_POLL: Duration = Duration::from_millis(25);

/// The exclusive claim on one audit directory; released when dropped.
#[derive(Debug)]
pub(crate) struct DirClaim {
    _file: File,
}

impl DirClaim {
    /// Claims `dir` for this writer, waiting up to [`CLAIM_WAIT`] for another
    /// writer to let go; then [`AuditError::InUse`]. The file records this
    /// process's id, for the message another process gets.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, AuditError> {
        let path = dir.join(LOCK_FILE);
        let io = |e| AuditError::io(format!("opening {}", path.display()), e);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        // Owner-only, like the segments beside it.
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(io)?;
        let deadline = Instant::now() + CLAIM_WAIT;
        loop {
            match try_lock(&file) {
                Ok(true) => break,
                Ok(false) if Instant::now() < deadline => std::thread::sleep(CLAIM_POLL),
                Ok(false) => {
                    return Err(AuditError::InUse {
                        dir: dir.to_path_buf(),
                        holder: holder_pid(&mut file),
                    })
                }
                Err(e) => return Err(AuditError::io(format!("locking {}", path.display()), e)),
            }
        }
        // Only the holder writes. A process refused in the moment between
        // the truncation and the write reports no pid, which is all.
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .map_err(|e| AuditError::io(format!("writing {}", path.display()), e))?;
        Ok(Self { _file: file })
    }
}

/// Takes the exclusive lock if it is free; `Ok(false)` if another open file
/// (in this process or another) holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The process id the current holder wrote, if readable.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_second_claim_is_refused_naming_the_holder_and_a_released_one_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirClaim::acquire(dir.path()).unwrap();
        let started = Instant::now();
        let refused = DirClaim::acquire(dir.path()).unwrap_err();
        assert!(started.elapsed() >= CLAIM_WAIT, "{:?}", started.elapsed());
        match &refused {
            AuditError::InUse { dir: d, holder } => {
                assert_eq!(d, dir.path());
                assert_eq!(*holder, Some(std::process::id()));
            }
            other => panic!("{other:?}"),
        }
        let message = refused.to_string();
        assert!(message.contains("in use by another odgw"), "{message}");
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );

        drop(first);
        DirClaim::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_claim_let_go_while_waiting_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirClaim::acquire(dir.path()).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(first);
        });
        DirClaim::acquire(dir.path()).unwrap();
        release.join().unwrap();
    }
}
