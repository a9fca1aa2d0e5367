//! Log lines to stderr in batches.
//!
//! Every forwarded request logs one access line. Written one by one, each is
//! a `write(2)` on the request's path (about 2 µs of kernel time per request
//! on the load-test machine, for a file or journal behind stderr). Here INFO
//! and below are appended to a buffer that a background thread writes out
//! [`GATHER`] after the first line of a batch arrives, so under load one
//! system call carries many lines. WARN and ERROR lines are written at once,
//! after everything buffered before them, so problems are never held back and
//! the order of lines is kept. [`flush`] writes what is left before exit.
//!
//! What can be lost: on `kill -9` or a power cut, at most the last
//! [`GATHER`] of INFO lines. The audit trail, not the log, is the durable
//! record of requests.

use std::{
    io::{self, Write},
    sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock},
    thread,
    time::Duration,
};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long the background thread waits after the first line of a batch,
/// so that lines arriving meanwhile share its write.
const GATHER: Duration = Duration::from_millis(20);

/// Buffered bytes beyond which the appending thread writes the batch itself:
/// if stderr is slower than the logging, callers slow down instead of the
/// buffer growing without bound (as they would with unbuffered writes).
const MAX_PENDING: usize = 1 << 20;

/// The batching writer used by the process-wide subscriber.
static STDERR: OnceLock<Batched> = OnceLock::new();

/// The process-wide batching stderr writer, started on first use.
pub fn stderr() -> &'static Batched {
    STDERR.get_or_init(|| {
        let batched = Batched::new(Box::new(io::stderr()));
        batched.spawn_flusher();
        batched
    })
}

/// Writes out buffered lines now; call before the process exits.
pub fn flush() {
    if let Some(batched) = STDERR.get() {
        let _ = batched.flush();
    }
}

/// A line buffer in front of a sink, shared by the appenders and the thread
/// that writes batches out. Cheap to clone.
#[derive(Clone)]
pub struct Batched {
    shared: Arc<Shared>,
}

struct Shared {
    /// Lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// Signalled when `pending` stops being empty.
    arrived: Condvar,
    /// Held across every write to the sink, so batches leave in the order
    /// they were taken. Lock order: `output`, then `pending`.
    output: Mutex<Output>,
}

struct Output {
    sink: Box<dyn Write + Send>,
    /// The previous batch's buffer, reused for the next one.
    spare: Vec<u8>,
}

impl Batched {
    /// A batching writer in front of `sink`. Nothing is written in the
    /// background until [`Batched::spawn_flusher`].
    pub fn new(sink: Box<dyn Write + Send>) -> Self {
        Self {
            shared: Arc::new(Shared {
                pending: Mutex::new(Vec::new()),
                arrived: Condvar::new(),
                output: Mutex::new(Output {
                    sink,
                    spare: Vec::new(),
                }),
            }),
        }
    }

    /// Starts the thread that writes each batch [`GATHER`] after its first
    /// line. Without it (if the thread cannot be started), lines wait for
    /// [`Batched::flush`], a WARN/ERROR line or [`MAX_PENDING`].
    pub fn spawn_flusher(&self) {
        let shared = Arc::clone(&self.shared);
        let started = thread::Builder::new()
            .name("odgw-log".into())
            .spawn(move || loop {
                shared.wait_for_lines();
                thread::sleep(GATHER);
                let _ = shared.write_out(&[]);
            });
        if let Err(e) = started {
            // Degrade to writing through: nothing waits in the buffer.
            eprintln!("odgw: cannot start the log writer thread ({e}); logging unbuffered");
            let _ = self.flush();
        }
    }

    /// Writes every buffered line to the sink.
    pub fn flush(&self) -> io::Result<()> {
        self.shared.write_out(&[])
    }

    fn append(&self, line: &[u8]) -> io::Result<()> {
        let mut pending = lock(&self.shared.pending);
        let first = pending.is_empty();
        pending.extend_from_slice(line);
        let full = pending.len() >= MAX_PENDING;
        drop(pending);
        if full {
            return self.shared.write_out(&[]);
        }
        // Only the line that starts a batch wakes the writer thread: a
        // notify is a system call, and under load the others ride along.
        if first {
            self.shared.arrived.notify_one();
        }
        Ok(())
    }
}

impl Shared {
    fn wait_for_lines(&self) {
        let mut pending = lock(&self.pending);
        while pending.is_empty() {
            pending = self
                .arrived
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Writes everything buffered, then `line`, in one go.
    fn write_out(&self, line: &[u8]) -> io::Result<()> {
        let mut output = lock(&self.output);
        let Output { sink, spare } = &mut *output;
        std::mem::swap(spare, &mut *lock(&self.pending));
        if spare.is_empty() && line.is_empty() {
            return Ok(());
        }
        spare.extend_from_slice(line);
        let written = sink.write_all(spare).and_then(|()| sink.flush());
        spare.clear();
        // A burst may have grown the buffer; do not keep megabytes around.
        spare.shrink_to(64 << 10);
        written
    }
}

impl std::fmt::Debug for Batched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves bytes, not broken invariants.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writer handed to the formatter for one event: it receives the whole
/// formatted line in one `write_all`.
#[derive(Debug)]
pub struct LineWriter<'a> {
    batched: &'a Batched,
    at_once: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        if self.at_once {
            self.batched.shared.write_out(line)?;
        } else {
            self.batched.append(line)?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            batched: self,
            at_once: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            batched: self,
            // Level order: ERROR < WARN < INFO.
            at_once: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A sink that records each write it receives.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorder {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorder {
        fn writes(&self) -> Vec<String> {
            let writes = self.0.lock().unwrap();
            writes
                .iter()
                .map(|w| String::from_utf8(w.clone()).unwrap())
                .collect()
        }
    }

    fn subscriber(batched: &Batched) -> impl tracing::Subscriber {
        tracing_subscriber::fmt()
            .with_writer(batched.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_max_level(Level::INFO)
            .finish()
    }

    #[test]
    fn info_lines_wait_for_a_flush_and_then_leave_in_one_write() {
        let sink = Recorder::default();
        let batched = Batched::new(Box::new(sink.clone()));
        tracing::subscriber::with_default(subscriber(&batched), || {
            tracing::info!("one");
            tracing::info!("two");
            tracing::info!("three");
        });
        assert!(sink.writes().is_empty(), "{:?}", sink.writes());
        batched.flush().unwrap();
        assert_eq!(
            sink.writes(),
            vec![" INFO one\n INFO two\n INFO three\n".to_owned()]
        );
        batched.flush().unwrap();
        assert_eq!(sink.writes().len(), 1, "an empty flush writes nothing");
    }

    #[test]
    fn a_warning_is_written_at_once_after_the_lines_before_it() {
        let sink = Recorder::default();
        let batched = Batched::new(Box::new(sink.clone()));
        tracing::subscriber::with_default(subscriber(&batched), || {
            tracing::info!("before");
            tracing::warn!("trouble");
            assert_eq!(sink.writes(), vec![" INFO before\n WARN trouble\n"]);
            tracing::error!("worse");
            tracing::info!("after");
        });
        assert_eq!(
            sink.writes(),
            vec![" INFO before\n WARN trouble\n", "ERROR worse\n"]
        );
        batched.flush().unwrap();
        assert_eq!(sink.writes()[2], " INFO after\n");
    }

    #[test]
    fn the_flusher_thread_writes_a_lone_line_by_itself() {
        let sink = Recorder::default();
        let batched = Batched::new(Box::new(sink.clone()));
        batched.spawn_flusher();
        tracing::subscriber::with_default(subscriber(&batched), || tracing::info!("alone"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.writes().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.writes(), vec![" INFO alone\n"]);
    }

    #[test]
    fn a_full_buffer_is_written_by_the_appender() {
        let sink = Recorder::default();
        let batched = Batched::new(Box::new(sink.clone()));
        let line = [b'x'; 1000];
        let mut appended = 0;
        while appended + line.len() < MAX_PENDING {
            batched.append(&line).unwrap();
            appended += line.len();
        }
        assert!(sink.writes().is_empty());
        batched.append(&line).unwrap();
        let writes = sink.writes();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].len(), appended + line.len());
    }
}
