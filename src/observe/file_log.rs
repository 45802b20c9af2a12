//! `file-log`: one JSON line per request, appended by a writer thread so the request path
//! never waits on the disk.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::plugins::FileLogConfig;

/// Lines queued per file before new ones are dropped (and counted) instead of blocking.
const QUEUE: usize = 65_536;

/// A log file's writer handle, shared by every plugin instance with the same path.
#[derive(Debug)]
pub struct FileLogSink {
    path: PathBuf,
    reopen: bool,
    tx: Mutex<Option<SyncSender<Msg>>>,
    dropped: AtomicU64,
}

enum Msg {
    Line(Arc<crate::observe::log::LogJob>),
    Flush(SyncSender<()>),
}

/// Sinks by (path, reopen), so a config reload keeps writing through the same thread.
type Registry = Mutex<HashMap<(PathBuf, bool), Arc<FileLogSink>>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Validates the config (Kong's rules for `path`) and returns the shared sink.
pub fn compile(c: &FileLogConfig) -> Result<Arc<FileLogSink>, Vec<(String, String)>> {
    let mut errors = Vec::new();
    if c.path.trim() != c.path || c.path.is_empty() {
        errors.push(("config.path".into(), "not a valid filename".into()));
    }
    if c.path.chars().any(|ch| "*&%\\`".contains(ch)) {
        errors.push(("config.path".into(), "not a valid filename".into()));
    }
    if c.custom_fields_by_lua
        .as_ref()
        .map(|m| !m.is_empty())
        .unwrap_or(false)
    {
        errors.push((
            "config.custom_fields_by_lua".into(),
            "custom_fields_by_lua is not supported by tollgate (there is no Lua runtime)".into(),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let key = (PathBuf::from(&c.path), c.reopen);
    let mut reg = match registry().lock() {
        Ok(r) => r,
        Err(p) => p.into_inner(),
    };
    Ok(reg
        .entry(key)
        .or_insert_with(|| {
            Arc::new(FileLogSink {
                path: PathBuf::from(&c.path),
                reopen: c.reopen,
                tx: Mutex::new(None),
                dropped: AtomicU64::new(0),
            })
        })
        .clone())
}

impl FileLogSink {
    /// Queues one record (written as a line); never blocks.
    pub fn write(&self, line: Arc<crate::observe::log::LogJob>) {
        let tx = self.sender();
        let Some(tx) = tx else { return };
        match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(path = %self.path.display(), dropped = n, "file-log queue full; records dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                if let Ok(mut g) = self.tx.lock() {
                    *g = None;
                }
            }
        }
    }

    /// Waits until every queued line is written (shutdown and tests).
    pub fn flush(&self) {
        let Some(tx) = self.sender() else { return };
        let (done_tx, done_rx) = sync_channel(1);
        if tx.send(Msg::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv();
        }
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn sender(&self) -> Option<SyncSender<Msg>> {
        let mut g = self.tx.lock().ok()?;
        if g.is_none() {
            let (tx, rx) = sync_channel(QUEUE);
            let path = self.path.clone();
            let reopen = self.reopen;
            let spawned = std::thread::Builder::new()
                .name("file-log".into())
                .spawn(move || writer(path, reopen, rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the file-log writer");
                return None;
            }
            *g = Some(tx);
        }
        g.clone()
    }

    /// Flushes every sink (called on shutdown).
    pub fn flush_all() {
        let sinks: Vec<Arc<FileLogSink>> = match registry().lock() {
            Ok(r) => r.values().cloned().collect(),
            Err(_) => return,
        };
        for s in sinks {
            s.flush();
        }
    }
}

fn open(path: &PathBuf) -> Option<File> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o644);
    }
    match o.open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "file-log cannot open its file");
            None
        }
    }
}

/// Bytes gathered before one `write` system call.
const WRITE_AT: usize = 32 * 1024;

fn writer(path: PathBuf, reopen: bool, rx: Receiver<Msg>) {
    let mut file: Option<File> = None;
    // The writer wakes at its pace, not per line, and formats lines straight into one
    // reused buffer that it writes out every WRITE_AT bytes and at the end of each turn.
    let mut queued = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(2 * WRITE_AT);
    let (mut written, mut seen) = (Vec::new(), 0);
    let (mut pace, mut took) = (super::Pace::new(), 0);
    loop {
        pace.sleep(took);
        let closed = super::take_queued(&rx, &mut queued);
        took = queued.len();
        let mut aside = crate::server::busy_poll::StepAside::new();
        for msg in queued.drain(..) {
            match msg {
                Msg::Line(job) => {
                    buf = job.append_line(buf);
                    buf.push(b'\n');
                    written.push(job);
                    if reopen || buf.len() >= WRITE_AT {
                        write_out(&path, reopen, &mut file, &mut buf);
                    }
                    aside.tick();
                }
                Msg::Flush(done) => {
                    write_out(&path, reopen, &mut file, &mut buf);
                    let _ = done.send(());
                }
            }
        }
        write_out(&path, reopen, &mut file, &mut buf);
        crate::observe::log::give_back(&mut written, &mut seen);
        if closed {
            return;
        }
    }
}

/// Appends `buf` to the file (opened now if it is not, or reopened every time when
/// `reopen`), then empties `buf`; a failed write is logged and the file reopened next time.
fn write_out(path: &PathBuf, reopen: bool, file: &mut Option<File>, buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    if file.is_none() || reopen {
        *file = open(path);
    }
    if let Some(f) = file.as_mut() {
        if let Err(e) = f.write_all(buf) {
            tracing::error!(path = %path.display(), error = %e, "file-log write failed");
            *file = None;
        }
    }
    buf.clear();
}
