//! [`FileAuditLog`]: one writer thread, group commit, hash chain, rotation,
//! crash recovery.
//!
//! `append` hands its draft and a reply channel to the writer thread. The
//! writer takes everything queued (group commit), seals the drafts into
//! chained records, writes them with one `pwrite` and one `fdatasync`, and
//! only then answers every waiter. A failed batch is cut off the segment
//! again, so failed records use no `seq` and the chain has no holes.
//! A dedicated OS thread (not a tokio task) owns the file because every
//! operation on it blocks.
//!
//! The writer thread's time is the group-commit cycle everyone waits on, so
//! appenders serialize their draft's fields themselves (`Pending::members`)
//! and the writer only adds `seq`, `ts`, `prev_hash` and `hash` around those
//! bytes, hashing and writing each record with one serialization.

use std::{
    fs::{DirBuilder, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc, Arc, Condvar, Mutex, MutexGuard,
    },
    thread,
    time::Duration,
};

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::{
    claim::DirClaim,
    record::{format_ts, seal_into, GENESIS_HASH},
    segment::{inspect_tail, list_segments, segment_name},
    AnnouncedRecords, Announcement, AuditError, AuditSink, RecordDraft, RecordKind,
};

/// Default size at which a segment is closed and a new one started.
pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 64 << 20;

/// Most drafts sealed into one batch (one write, one fsync).
const MAX_BATCH: usize = 1024;

/// Group commit under load: when a record arrives within [`BUSY_GAP`] of the
/// previous batch while other requests have announced records
/// ([`AuditSink::announce`]), the writer waits for those records, at most
/// [`LINGER`], so one fdatasync serves them all instead of a handful. Each
/// fdatasync costs kernel work (block layer, inode update, a device kick)
/// that otherwise dominated the audited path's CPU. A lone request, a
/// record whose siblings have all arrived, or a batch led by an intent
/// record (its request waits on it) is written at once. A request stays
/// announced through its pacing wait and its Open Dental round trip, so
/// under steady load with a slow upstream most batches wait the full
/// `LINGER`: the price is bounded, at most `LINGER` added to a request's
/// latency, for fewer fsyncs.
const LINGER: Duration = Duration::from_micros(250);

/// Gap between batches below which the writer considers itself busy.
const BUSY_GAP: Duration = Duration::from_millis(2);

/// How often an unhealthy writer with nothing to do checks whether the disk
/// is writable again, so `/readyz` recovers without traffic.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

const PROBE_FILE: &str = ".odgw-audit-probe";

/// How the audit log is stored and how long a request may wait for it.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Directory of the segments (`audit.path`); created 0700 if missing.
    pub dir: PathBuf,
    /// A segment is closed once it reaches this size (one batch may overshoot).
    pub segment_max_bytes: u64,
    /// How long `append` waits for durability before [`AuditError::Timeout`]
    /// (`audit.write_timeout`).
    pub write_timeout: Duration,
    /// `audit.fail_closed`; read by the layers, not by the log itself.
    pub fail_closed: bool,
}

impl AuditSettings {
    /// Settings with SPEC defaults: 64 MiB segments, 2 s timeout, fail closed.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_max_bytes: DEFAULT_SEGMENT_MAX_BYTES,
            write_timeout: Duration::from_secs(2),
            fail_closed: true,
        }
    }
}

/// The durable, hash-chained audit log in a directory of JSON Lines
/// segments. Cheap to clone; all clones share one writer thread.
///
/// Records are durable (fdatasync) before [`AuditSink::append`] returns
/// `Ok`. On open, the chain continues from the last complete record; a torn
/// last line is moved into a `*.torn` file beside the segments.
#[derive(Debug, Clone)]
pub struct FileAuditLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    sender: Mutex<Option<mpsc::Sender<Command>>>,
    /// The writer thread, joined by [`FileAuditLog::flush_and_close`] so that
    /// its claim on the directory is gone when that returns, even after a
    /// panic in the thread.
    thread: Mutex<Option<thread::JoinHandle<()>>>,
    write_timeout: Duration,
    state: Arc<WriterState>,
}

/// What the writer thread and the handles both see.
#[derive(Debug)]
struct WriterState {
    healthy: AtomicBool,
    batches: AtomicU64,
    records: AtomicU64,
    /// Time spent in successful batch writes (write + fdatasync), in µs.
    write_micros: AtomicU64,
    /// Appends handed to the writer and not yet answered.
    pending: AtomicUsize,
    fail_writes: AtomicBool,
    hold: Mutex<bool>,
    hold_changed: Condvar,
    /// Requests whose record is still to come (for the linger decision).
    announced: Arc<AnnouncedRecords>,
}

impl WriterState {
    fn hold_guard(&self) -> MutexGuard<'_, bool> {
        self.hold.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
enum Command {
    Append(Pending),
    Close(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Pending {
    /// The draft's canonical JSON members, serialized by the appender.
    members: Vec<u8>,
    /// An intent record: its request cannot go on (nor append the record it
    /// announced) until this one is durable, so waiting for announced
    /// records would only delay it.
    blocks_its_request: bool,
    reply: oneshot::Sender<Result<u64, AuditError>>,
}

impl FileAuditLog {
    /// Opens (or creates) the log in `settings.dir`, repairs a torn tail,
    /// and starts the writer thread. Fails if the directory cannot be used
    /// or the last record before any torn tail is corrupt.
    pub async fn open(settings: AuditSettings) -> Result<Self, AuditError> {
        if settings.segment_max_bytes == 0 {
            return Err(AuditError::Settings(
                "segment_max_bytes must be above 0".into(),
            ));
        }
        if settings.write_timeout.is_zero() {
            return Err(AuditError::Settings("write_timeout must be above 0".into()));
        }
        let state = Arc::new(WriterState {
            healthy: AtomicBool::new(false),
            batches: AtomicU64::new(0),
            records: AtomicU64::new(0),
            write_micros: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            fail_writes: AtomicBool::new(false),
            hold: Mutex::new(false),
            hold_changed: Condvar::new(),
            announced: Arc::default(),
        });
        let writer_state = Arc::clone(&state);
        let recover_settings = settings.clone();
        let writer =
            tokio::task::spawn_blocking(move || Writer::recover(recover_settings, writer_state))
                .await
                .map_err(|e| AuditError::io("recovering the audit log", io::Error::other(e)))??;
        let (sender, receiver) = mpsc::channel();
        state.healthy.store(true, Ordering::SeqCst);
        let thread = thread::Builder::new()
            .name("odgw-audit-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| AuditError::io("starting the audit writer", e))?;
        Ok(Self {
            shared: Arc::new(Shared {
                sender: Mutex::new(Some(sender)),
                thread: Mutex::new(Some(thread)),
                write_timeout: settings.write_timeout,
                state,
            }),
        })
    }

    /// Writes out everything already queued, syncs, and stops the writer.
    /// Later appends fail with [`AuditError::Closed`]. Idempotent.
    pub async fn flush_and_close(&self) {
        let sender = self
            .shared
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.shared.state.healthy.store(false, Ordering::SeqCst);
        if let Some(sender) = sender {
            let (ack, done) = oneshot::channel();
            if sender.send(Command::Close(ack)).is_ok() {
                // An error only means the writer already stopped.
                let _ = done.await;
            }
        }
        let thread = self
            .shared
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            // The thread is done or finishing; joining takes it (and its
            // directory claim) down for good. A panic in it was already
            // reported by the panic hook.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Number of batches committed (one write and one fdatasync each), for
    /// metrics and for tests of group commit.
    pub fn batches(&self) -> u64 {
        self.shared.state.batches.load(Ordering::Relaxed)
    }

    /// Number of records made durable since open.
    pub fn records(&self) -> u64 {
        self.shared.state.records.load(Ordering::Relaxed)
    }

    /// Seconds spent writing and syncing committed batches, in total: divided
    /// by [`FileAuditLog::batches`] it is the mean durable-write latency.
    pub fn write_seconds(&self) -> f64 {
        self.shared.state.write_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Appends handed to the writer and not yet answered.
    pub fn pending(&self) -> usize {
        self.shared.state.pending.load(Ordering::SeqCst)
    }

    /// **Test seam.** While `true`, every batch fails as a disk error would
    /// (half the batch is written, then the write errors), so tests can check
    /// rollback, fail-closed behaviour and recovery. Not for production use.
    pub fn fail_writes(&self, fail: bool) {
        self.shared.state.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// **Test seam.** While `true`, the writer takes no new batch, so a test
    /// can queue many appends and watch them commit together. Not for
    /// production use.
    pub fn hold_writes(&self, hold: bool) {
        let state = &self.shared.state;
        *state.hold_guard() = hold;
        state.hold_changed.notify_all();
    }

    fn sender(&self) -> Result<mpsc::Sender<Command>, AuditError> {
        self.shared
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(AuditError::Closed)
    }
}

#[async_trait]
impl AuditSink for FileAuditLog {
    async fn append(&self, draft: RecordDraft) -> Result<u64, AuditError> {
        let sender = self.sender()?;
        let members = draft.to_members();
        let blocks_its_request = draft.kind == RecordKind::Intent;
        // Not needed while waiting for the fsync; free it on this thread.
        drop(draft);
        let (reply, answer) = oneshot::channel();
        let state = &self.shared.state;
        state.pending.fetch_add(1, Ordering::SeqCst);
        if sender
            .send(Command::Append(Pending {
                members,
                blocks_its_request,
                reply,
            }))
            .is_err()
        {
            state.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(AuditError::Closed);
        }
        match tokio::time::timeout(self.shared.write_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AuditError::Closed),
            Err(_) => {
                // A writer that cannot finish in time is as bad as one that
                // fails: report it until a batch succeeds again.
                state.healthy.store(false, Ordering::SeqCst);
                Err(AuditError::Timeout)
            }
        }
    }

    fn is_healthy(&self) -> bool {
        self.shared.state.healthy.load(Ordering::SeqCst)
    }

    fn announce(&self) -> Announcement {
        Announcement::on(&self.shared.state.announced)
    }
}

/// The segment being written.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// `None` after a failure: reopened (and cut back to `durable_len`)
    /// before the next write.
    file: Option<File>,
    /// Bytes known to be on disk; everything past it belongs to failed
    /// batches.
    durable_len: u64,
    /// The directory entry of a new segment is synced before first use.
    dir_synced: bool,
}

/// State owned by the writer thread.
#[derive(Debug)]
struct Writer {
    dir: PathBuf,
    segment_max_bytes: u64,
    current: Option<Segment>,
    next_seq: u64,
    last_hash: String,
    /// Milliseconds since the epoch of the latest `ts` handed out; `ts`
    /// never goes backwards so segment names can index time.
    last_ts_ms: i128,
    state: Arc<WriterState>,
    /// This writer's exclusive claim on `dir`; released at shutdown, before
    /// the close is acknowledged.
    claim: Option<DirClaim>,
}

impl Writer {
    fn recover(settings: AuditSettings, state: Arc<WriterState>) -> Result<Self, AuditError> {
        let dir = settings.dir;
        create_dir(&dir)?;
        // Before anything is read or repaired: a second writer must not
        // "repair" the line the first is writing.
        let claim = DirClaim::acquire(&dir)?;
        let mut writer = Self {
            dir,
            segment_max_bytes: settings.segment_max_bytes,
            current: None,
            next_seq: 1,
            last_hash: GENESIS_HASH.to_owned(),
            last_ts_ms: 0,
            state,
            claim: Some(claim),
        };
        let mut segments = list_segments(&writer.dir)?;
        while let Some(segment) = segments.pop() {
            let tail = inspect_tail(&segment.path)?;
            if let Some(torn) = &tail.torn {
                move_torn_aside(&writer.dir, &segment.path, torn, tail.complete_len)?;
            }
            let Some(last) = tail.last else {
                // Empty (a crash right after creating it, or it held only the
                // torn line): nothing to keep, and its name would claim a
                // first ts the next record may not have.
                std::fs::remove_file(&segment.path).map_err(|e| {
                    AuditError::io(format!("removing {}", segment.path.display()), e)
                })?;
                sync_dir(&writer.dir)?;
                tracing::info!(file = %segment.path.display(), "removed empty audit segment");
                continue;
            };
            if last.compute_hash() != last.hash {
                tracing::warn!(seq = last.seq, file = %segment.path.display(),
                    "last audit record does not match its hash; continuing the chain from it, run `odgw audit verify`");
            }
            writer.next_seq = last.seq + 1;
            writer.last_hash = last.hash.clone();
            writer.last_ts_ms = match last.timestamp() {
                Ok(ts) => ts.unix_timestamp_nanos() / 1_000_000,
                Err(_) => 0,
            };
            if tail.complete_len < writer.segment_max_bytes {
                writer.current = Some(Segment {
                    path: segment.path,
                    file: None,
                    durable_len: tail.complete_len,
                    dir_synced: true,
                });
            }
            break;
        }
        // Open (or create) the file now so a broken directory fails at start.
        if let Some(segment) = writer.current.as_mut() {
            segment.file = Some(reopen(segment)?);
        }
        Ok(writer)
    }

    fn run(mut self, receiver: mpsc::Receiver<Command>) {
        let mut last_commit: Option<std::time::Instant> = None;
        loop {
            let first = if self.state.healthy.load(Ordering::SeqCst) {
                match receiver.recv() {
                    Ok(command) => command,
                    Err(mpsc::RecvError) => break,
                }
            } else {
                match receiver.recv_timeout(PROBE_INTERVAL) {
                    Ok(command) => command,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.probe();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            self.wait_while_held();
            if last_commit.is_some_and(|at| at.elapsed() < BUSY_GAP)
                && matches!(&first, Command::Append(p) if !p.blocks_its_request)
                && self.state.announced.outstanding() > 0
            {
                // Waiting on the announcements (not on the channel) lets
                // appenders queue without waking this thread for each record.
                self.state
                    .announced
                    .wait_for_none(std::time::Instant::now() + LINGER);
            }
            let mut batch = Vec::new();
            let mut close = None;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append(pending) => batch.push(pending),
                    Command::Close(ack) => {
                        close = Some(ack);
                        break;
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = receiver.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit(batch);
                last_commit = Some(std::time::Instant::now());
            }
            if let Some(ack) = close {
                self.shutdown();
                let _ = ack.send(());
                return;
            }
        }
        self.shutdown();
    }

    fn wait_while_held(&self) {
        let mut held = self.state.hold_guard();
        while *held {
            held = self
                .state
                .hold_changed
                .wait(held)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn commit(&mut self, batch: Vec<Pending>) {
        let state = Arc::clone(&self.state);
        let answered = batch.len();
        // A waiter that gave up (timeout) already answered its client with
        // 503; writing its record now would describe a response never sent.
        let (members, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .filter(|p| !p.reply.is_closed())
            .map(|p| (p.members, p.reply))
            .unzip();
        if members.is_empty() {
            state.pending.fetch_sub(answered, Ordering::SeqCst);
            return;
        }
        let now_ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let ts_ms = now_ms.max(self.last_ts_ms);
        self.last_ts_ms = ts_ms;
        let ts_at = OffsetDateTime::from_unix_timestamp_nanos(ts_ms * 1_000_000)
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
        let ts = format_ts(ts_at);

        let mut buf = Vec::with_capacity(members.iter().map(|m| m.len() + 256).sum());
        let mut hash = self.last_hash.clone();
        let first_seq = self.next_seq;
        for (i, fields) in members.iter().enumerate() {
            hash = seal_into(&mut buf, first_seq + i as u64, &ts, fields, &hash);
        }
        let count = replies.len() as u64;
        let started = std::time::Instant::now();
        match self.write_durably(&buf, ts_at) {
            Ok(()) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                state.write_micros.fetch_add(micros, Ordering::Relaxed);
                self.next_seq += count;
                self.last_hash = hash;
                state.batches.fetch_add(1, Ordering::Relaxed);
                state.records.fetch_add(count, Ordering::Relaxed);
                if !state.healthy.swap(true, Ordering::SeqCst) {
                    tracing::info!("audit writes succeed again");
                }
                state.pending.fetch_sub(answered, Ordering::SeqCst);
                for (i, reply) in replies.into_iter().enumerate() {
                    let _ = reply.send(Ok(first_seq + i as u64));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = count, "audit batch could not be made durable");
                state.healthy.store(false, Ordering::SeqCst);
                state.pending.fetch_sub(answered, Ordering::SeqCst);
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(AuditError::WriteFailed(message.clone())));
                }
            }
        }
        if self
            .current
            .as_ref()
            .is_some_and(|s| s.durable_len >= self.segment_max_bytes)
        {
            // Rotate: the next batch creates a segment named by its first seq.
            self.current = None;
        }
    }

    /// Writes `buf` at the durable end of the current segment and syncs it.
    /// On failure the segment is cut back to its durable length.
    fn write_durably(&mut self, buf: &[u8], ts: OffsetDateTime) -> io::Result<()> {
        self.ensure_writable(ts)?;
        let fail = self.state.fail_writes.load(Ordering::SeqCst);
        let Some(segment) = self.current.as_mut() else {
            return Err(io::Error::other("no current segment"));
        };
        let Some(file) = segment.file.as_ref() else {
            return Err(io::Error::other("segment not open"));
        };
        let result = if fail {
            // Leave a partial batch behind, as a full disk would, so the
            // rollback below is exercised.
            file.write_all_at(&buf[..buf.len() / 2], segment.durable_len)
                .and_then(|()| Err(io::Error::other("injected write failure")))
        } else {
            file.write_all_at(buf, segment.durable_len)
                .and_then(|()| file.sync_data())
        };
        match result {
            Ok(()) => {
                segment.durable_len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = file.set_len(segment.durable_len) {
                    tracing::warn!(error = %cut, "could not cut a failed audit batch; will retry on reopen");
                }
                // After a failed write or fsync the kernel's view of the page
                // cache cannot be trusted: start over from a fresh handle.
                segment.file = None;
                Err(e)
            }
        }
    }

    fn ensure_writable(&mut self, ts: OffsetDateTime) -> io::Result<()> {
        if self.current.is_none() {
            let path = self.dir.join(segment_name(self.next_seq, ts));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            tracing::debug!(file = %path.display(), "new audit segment");
            self.current = Some(Segment {
                path,
                file: Some(file),
                durable_len: 0,
                dir_synced: false,
            });
        }
        let Some(segment) = self.current.as_mut() else {
            return Err(io::Error::other("no current segment"));
        };
        if segment.file.is_none() {
            segment.file = Some(reopen(segment).map_err(|e| io::Error::other(e.to_string()))?);
        }
        if !segment.dir_synced {
            File::open(&self.dir)?.sync_all()?;
            segment.dir_synced = true;
        }
        Ok(())
    }

    /// Checks, without writing a record, that the directory takes writes.
    fn probe(&mut self) {
        let result = (|| -> io::Result<()> {
            if self.state.fail_writes.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected write failure"));
            }
            if let Some(segment) = self.current.as_mut() {
                if segment.file.is_none() {
                    segment.file =
                        Some(reopen(segment).map_err(|e| io::Error::other(e.to_string()))?);
                }
            }
            let path = self.dir.join(PROBE_FILE);
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(&[b'\n'; 4096])?;
            file.sync_data()?;
            drop(file);
            std::fs::remove_file(&path)
        })();
        match result {
            Ok(()) => {
                tracing::info!("audit directory writable again");
                self.state.healthy.store(true, Ordering::SeqCst);
            }
            Err(e) => tracing::debug!(error = %e, "audit probe failed"),
        }
    }

    fn shutdown(&mut self) {
        if let Some(file) = self.current.as_mut().and_then(|s| s.file.take()) {
            if let Err(e) = file.sync_all() {
                tracing::warn!(error = %e, "final audit sync failed");
            }
        }
        self.state.healthy.store(false, Ordering::SeqCst);
        self.claim = None;
    }
}

/// Opens a segment for writing and cuts off anything past its durable end.
fn reopen(segment: &Segment) -> Result<File, AuditError> {
    let ctx = |e| AuditError::io(format!("opening {}", segment.path.display()), e);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment.path)
        .map_err(ctx)?;
    let len = file.metadata().map_err(ctx)?.len();
    if len < segment.durable_len {
        return Err(AuditError::Corrupt {
            file: segment.path.clone(),
            detail: format!(
                "segment is {len} bytes but {} were written durably; it was truncated outside odgw",
                segment.durable_len
            ),
        });
    }
    if len > segment.durable_len {
        file.set_len(segment.durable_len).map_err(ctx)?;
        file.sync_data().map_err(ctx)?;
    }
    Ok(file)
}

fn create_dir(dir: &Path) -> Result<(), AuditError> {
    let ctx = |e| AuditError::io(format!("creating {}", dir.display()), e);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(ctx)?;
    let meta = std::fs::metadata(dir).map_err(ctx)?;
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.mode() & 0o777),
            "audit directory is accessible to other users; 0700 is expected");
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(format!("syncing {}", dir.display()), e))
}

/// Saves a torn tail beside the segments and cuts it off the segment.
fn move_torn_aside(dir: &Path, segment: &Path, torn: &[u8], keep: u64) -> Result<(), AuditError> {
    let stem = segment
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("audit");
    let stamp = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let aside = dir.join(format!("{stem}.{stamp}.torn"));
    let ctx = |what: &str, path: &Path, e| AuditError::io(format!("{what} {}", path.display()), e);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&aside)
        .map_err(|e| ctx("creating", &aside, e))?;
    file.write_all(torn)
        .map_err(|e| ctx("writing", &aside, e))?;
    file.sync_all().map_err(|e| ctx("syncing", &aside, e))?;
    let seg = OpenOptions::new()
        .write(true)
        .open(segment)
        .map_err(|e| ctx("opening", segment, e))?;
    seg.set_len(keep)
        .map_err(|e| ctx("truncating", segment, e))?;
    seg.sync_all().map_err(|e| ctx("syncing", segment, e))?;
    sync_dir(dir)?;
    tracing::warn!(
        segment = %segment.display(),
        torn_file = %aside.display(),
        bytes = torn.len(),
        "moved a torn audit line aside; the chain continues from the last complete record"
    );
    Ok(())
}
