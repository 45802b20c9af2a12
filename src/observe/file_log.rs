//! `file-log`: one JSON line per request. The request's log phase formats the line while
//! its record is still in the core's cache and appends it to the file's pending buffer; a
//! writer thread takes that buffer at its pace and writes it out, so the request path never
//! waits on the disk. (Formatting on the writer thread read every record back cold, which
//! cost more than the formatting itself, and kept each record alive until then.)

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::plugins::nullable;

/// The `file-log` plugin config.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLogConfig {
    pub path: String,
    #[serde(default, deserialize_with = "nullable")]
    pub reopen: bool,
    pub custom_fields_by_lua: Option<serde_json::Map<String, Value>>,
}

/// Bytes of lines waiting for the writer before new lines are dropped (and counted)
/// instead of growing without bound: ~25,000 lines of a typical AI request.
const PENDING_MAX: usize = 64 * 1024 * 1024;

/// A log file's writer handle, shared by every plugin instance with the same path.
#[derive(Debug)]
pub struct FileLogSink {
    shared: Arc<Shared>,
    /// Set once the writer thread runs: the per-line check is then one load, no lock.
    writer: AtomicBool,
    starting: Mutex<()>,
}

/// What the request threads and the writer share.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    reopen: bool,
    /// Lines appended by requests, each ending in `\n`.
    pending: Mutex<Vec<u8>>,
    /// The open file and the buffer being written; held while writing, so a flush and
    /// the writer's turn never interleave their lines.
    out: Mutex<Output>,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Output {
    file: Option<File>,
    writing: Vec<u8>,
}

/// Sinks by (path, reopen), so a config reload keeps writing through the same thread.
type Registry = Mutex<HashMap<(PathBuf, bool), Arc<FileLogSink>>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A lock whose holder panicked still guards consistent bytes (at worst a cut line).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
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
    Ok(lock(registry())
        .entry(key)
        .or_insert_with(|| {
            Arc::new(FileLogSink {
                shared: Arc::new(Shared {
                    path: PathBuf::from(&c.path),
                    reopen: c.reopen,
                    pending: Mutex::new(Vec::new()),
                    out: Mutex::new(Output::default()),
                    dropped: AtomicU64::new(0),
                }),
                writer: AtomicBool::new(false),
                starting: Mutex::new(()),
            })
        })
        .clone())
}

impl FileLogSink {
    /// Queues one formatted record (`line`, without its newline); never blocks on the disk.
    pub fn write(&self, line: &[u8]) {
        self.start_writer();
        let s = &self.shared;
        let mut pending = lock(&s.pending);
        if pending.len() + line.len() >= PENDING_MAX {
            drop(pending);
            let n = s.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::error!(path = %s.path.display(), dropped = n, "file-log writer behind; records dropped");
            }
            return;
        }
        pending.extend_from_slice(line);
        pending.push(b'\n');
    }

    /// Writes every queued line now (shutdown and tests).
    pub fn flush(&self) {
        self.shared.write_pending();
    }

    /// Records dropped: the writer fell `PENDING_MAX` bytes behind, or the file could not be written.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Starts the writer thread the first time a line comes.
    fn start_writer(&self) {
        if self.writer.load(Ordering::Acquire) {
            return;
        }
        let _starting = lock(&self.starting);
        if self.writer.load(Ordering::Acquire) {
            return;
        }
        let shared = Arc::downgrade(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("file-log".into())
            .spawn(move || writer(shared));
        match spawned {
            Ok(_) => self.writer.store(true, Ordering::Release),
            // Lines still queue up to the bound, and `flush` writes them.
            Err(e) => tracing::error!(error = %e, "cannot start the file-log writer"),
        }
    }

    /// Flushes every sink (called on shutdown).
    pub fn flush_all() {
        let sinks: Vec<Arc<FileLogSink>> = lock(registry()).values().cloned().collect();
        for s in sinks {
            s.flush();
        }
    }
}

/// Bytes per `write` system call: the writer offers the core to the proxy between them.
const WRITE_AT: usize = 32 * 1024;

/// Above this, the buffer a turn wrote from is given back to the allocator after a burst.
const KEEP_CAPACITY: usize = 4 * 1024 * 1024;

impl Shared {
    /// Swaps the pending lines out and writes them; the bytes written.
    fn write_pending(&self) -> usize {
        let mut out = lock(&self.out);
        let out = &mut *out;
        std::mem::swap(&mut *lock(&self.pending), &mut out.writing);
        let n = out.writing.len();
        if n == 0 {
            return 0;
        }
        if out.file.is_none() || self.reopen {
            out.file = open(&self.path);
        }
        let mut aside = crate::rt::busy_poll::StepAside::new();
        let mut done = 0;
        for chunk in whole_lines(&out.writing, WRITE_AT) {
            let Some(f) = out.file.as_mut() else { break };
            if let Err(e) = f.write_all(chunk) {
                tracing::error!(path = %self.path.display(), error = %e, "file-log write failed");
                out.file = None;
                break;
            }
            done += chunk.len();
            aside.tick();
        }
        if done < n {
            // Lines a failed open or write could not save are counted, not silently lost;
            // the file is opened again on the next turn.
            let lost = out.writing[done..].iter().filter(|b| **b == b'\n').count();
            self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
        }
        out.writing.clear();
        if out.writing.capacity() > KEEP_CAPACITY {
            out.writing = Vec::new();
        }
        n
    }
}

/// `buf` in pieces of about `at` bytes that end at line ends: a line is never split across
/// two `write` calls, so other writers appending to the same file (another node, logrotate's
/// copy) and readers tailing it never see half of one. A line longer than `at` is one piece.
fn whole_lines(buf: &[u8], at: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = if rest.len() <= at {
            rest.len()
        } else {
            match memchr::memrchr(b'\n', &rest[..at]) {
                Some(i) => i + 1,
                None => memchr::memchr(b'\n', &rest[at..]).map_or(rest.len(), |i| at + i + 1),
            }
        };
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
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

/// The writer wakes at its pace, not per line, and writes what the requests appended.
/// With `reopen` the file is opened again for every turn's write (Kong reopens per
/// request; a turn is at most 10 ms of requests, so a rotated file is let go as promptly).
fn writer(shared: Weak<Shared>) {
    let (mut pace, mut took) = (super::Pace::new(), 0);
    loop {
        pace.sleep(took);
        let Some(s) = shared.upgrade() else { return };
        took = s.write_pending();
    }
}

thread_local! {
    /// The buffer a request thread formats file-log lines in, kept between requests.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A line buffer larger than this (a record with logged payloads) is not kept.
const LINE_KEEP: usize = 256 * 1024;

/// The record as file-log's JSON line, formatted into this thread's reused buffer; give
/// it back with [`recycle_line`] once written.
pub fn format_line(
    record: &crate::observe::log::RequestLog,
    entities: &crate::config::entities::Entities,
) -> Vec<u8> {
    let mut buf = LINE.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buf.clear();
    record.append_to(entities, buf)
}

/// Keeps a line's buffer for this thread's next record (unless a large payload grew it).
pub fn recycle_line(line: Vec<u8>) {
    if line.capacity() <= LINE_KEEP {
        LINE.with(|b| *b.borrow_mut() = line);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn pieces_end_at_line_ends() {
        let buf = b"aaaa\nbb\ncccccccccc\nd\n";
        let pieces: Vec<&[u8]> = whole_lines(buf, 8).collect();
        assert_eq!(
            pieces,
            [&b"aaaa\nbb\n"[..], b"cccccccccc\n", b"d\n"],
            "a line longer than the piece size stays whole"
        );
        assert_eq!(
            whole_lines(b"x\ny", 1).collect::<Vec<_>>(),
            [&b"x\n"[..], b"y"]
        );
        assert_eq!(whole_lines(b"", 8).count(), 0);
    }

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("tollgate-file-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn sink(path: &std::path::Path, reopen: bool) -> Arc<FileLogSink> {
        compile(&FileLogConfig {
            path: path.to_string_lossy().into_owned(),
            reopen,
            custom_fields_by_lua: None,
        })
        .unwrap()
    }

    #[test]
    fn lines_arrive_whole_and_in_order() {
        let d = dir("order");
        let path = d.join("a.log");
        let s = sink(&path, false);
        for i in 0..500 {
            s.write(format!("{{\"n\":{i}}}").as_bytes());
        }
        s.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 500);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(*l, format!("{{\"n\":{i}}}"));
        }
        assert_eq!(s.dropped(), 0);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn lines_that_cannot_be_written_are_counted() {
        let d = dir("unwritable");
        let path = d.join("missing-dir").join("a.log");
        let s = sink(&path, false);
        s.write(b"{\"n\":1}");
        s.write(b"{\"n\":2}");
        s.flush();
        assert_eq!(s.dropped(), 2);
        // Once the directory exists, the next turn opens the file and writes.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        s.write(b"{\"n\":3}");
        s.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":3}\n");
        assert_eq!(s.dropped(), 2);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn reopen_follows_a_rotated_file() {
        let d = dir("reopen");
        let path = d.join("a.log");
        let s = sink(&path, true);
        s.write(b"first");
        s.flush();
        std::fs::rename(&path, d.join("a.log.1")).unwrap();
        s.write(b"second");
        s.flush();
        assert_eq!(
            std::fs::read_to_string(d.join("a.log.1")).unwrap(),
            "first\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
        std::fs::remove_dir_all(d).unwrap();
    }
}
