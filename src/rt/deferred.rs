//! A background thread prepared when a config compiles and started only when that config
//! goes into service, so `tollgate validate`, a rejected Admin API write or a reload that
//! does not compile start nothing.

use std::sync::Mutex;

type Body = Box<dyn FnOnce() + Send>;

/// A named thread body, run at most once, on [`Deferred::start`].
pub struct Deferred {
    name: &'static str,
    body: Mutex<Option<Body>>,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("name", &self.name)
            .finish()
    }
}

impl Deferred {
    /// A thread called `name` that will run `body`.
    pub fn new(name: &'static str, body: impl FnOnce() + Send + 'static) -> Deferred {
        Deferred {
            name,
            body: Mutex::new(Some(Box::new(body))),
        }
    }

    /// Whether [`Deferred::start`] ran.
    pub fn started(&self) -> bool {
        match self.body.lock() {
            Ok(g) => g.is_none(),
            Err(p) => p.into_inner().is_none(),
        }
    }

    /// Starts the thread; later calls do nothing. Err: the system would not start it.
    pub fn start(&self) -> Result<(), String> {
        let body = match self.body.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        let Some(body) = body else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name(self.name.into())
            .spawn(body)
            .map(|_| ())
            .map_err(|e| format!("{} thread: {e}", self.name))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn runs_once_and_only_when_started() {
        let runs = Arc::new(AtomicU32::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let r = runs.clone();
        let d = Deferred::new("test-deferred", move || {
            r.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(());
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing runs before start");
        d.start().unwrap();
        d.start().unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
