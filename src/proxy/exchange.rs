//! One request as it passes from phase to phase: its log record (plain data, which the log
//! sinks read) and what the phases leave for the log phase to do (quota charges to settle).

use std::ops::{Deref, DerefMut};
use std::time::Instant;

use crate::observe::log::{RequestId, RequestLog};
use crate::plugins::ai_rate_limiting::Charge;

/// A request's record and pending work. It reads as its record (`Deref`), since nearly
/// every step of the request path fills in the record.
#[derive(Debug)]
pub struct Exchange {
    /// Boxed: the exchange moves with the request through every layer of the handler
    /// (arguments, futures' states, the log phase), and the record is most of a kilobyte.
    pub record: Box<RequestLog>,
    /// Token quotas owed this request's usage once the answer is complete.
    pub charges: Vec<Charge>,
    /// `ai-semantic-cache` missed: the answer the client gets, stored once complete.
    pub cache: Option<Box<super::cached::Pending>>,
}

impl Exchange {
    /// A new request's exchange.
    pub fn new(request_id: RequestId, started: Instant) -> Exchange {
        Exchange {
            record: Box::new(RequestLog::new(request_id, started)),
            charges: Vec::new(),
            cache: None,
        }
    }
}

impl Deref for Exchange {
    type Target = RequestLog;
    fn deref(&self) -> &RequestLog {
        &self.record
    }
}

impl DerefMut for Exchange {
    fn deref_mut(&mut self) -> &mut RequestLog {
        &mut self.record
    }
}
