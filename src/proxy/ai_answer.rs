//! An AI route's upstream answer on its way to the client, in one of the forms of
//! [`AnswerMode`]: passed through for native clients, rebuilt (chat as a text completion
//! or a Response object, a provider's dialect as OpenAI's), checked and passed as it is,
//! refused as not the stream that was asked for, or streamed through the mappers.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::config::plugins::RouteType;
use crate::error::{ErrorShape, GatewayError};
use crate::gateway::{Gateway, Snapshot};
use crate::llm::stream::{Dialect, Mapper, SseObserver};
use crate::llm::target::Target;
use crate::llm::{self, openai, responses};
use crate::net::upstream::Incoming;
use crate::observe::log::HeaderCopy;
use crate::plugins::ai_sanitizer_filter::{self, Filter};
use crate::proxy::exchange::Exchange;
use crate::proxy::response::{Feedback, Finish, ProxyBody};

use super::ai::{bridged_answer, chat_answer, messages_answer, Bridge};
use super::answer::{
    answer_filtered, buffered_response, json_answer, kong_error, not_a_stream, note_answer,
    sse_dialect, transformation_error,
};
use super::unix_seconds;

/// The forms an AI route's answer takes.
enum AnswerMode {
    /// A native client's own API: the provider's answer as it is, usage read for the log.
    Native,
    /// A chat answer rebuilt as a `text_completion` (completions on chat-only dialects).
    Completions,
    /// A chat answer rebuilt as a Response object (the Responses bridge).
    Responses,
    /// A chat answer rebuilt as a Message object, an error in Anthropic's shape (Messages
    /// clients on other providers).
    Messages,
    /// A provider's own answer or error, rewritten whole into OpenAI's shape.
    Translated,
    /// An OpenAI-shaped answer: its shape checked and its usage read, bytes unchanged.
    Checked,
    /// A stream was asked for and a whole body came: an error event.
    NotAStream,
    /// Streamed (or passed through untouched), observed on the way.
    Streamed,
}

/// What the upstream answered, and what the request decided about answering it.
pub(super) struct UpstreamAnswer<'a> {
    pub gw: &'a Gateway,
    pub target: &'a Target,
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The answer's body, read from its connection (taken once).
    pub body: Option<Incoming>,
    pub read_timeout: Duration,
    /// The model the upstream was asked for.
    pub model: Option<String>,
    /// What the upstream was sent (for answers and streams that do not name the model).
    pub request: &'a Bytes,
    pub bridge: Option<Bridge>,
    /// What a Message object echoes, when the request was translated from Messages.
    pub messages: Option<Arc<llm::messages::Meta>>,
    /// The error shape the client parses.
    pub shape: ErrorShape,
    pub capture: Option<Vec<u8>>,
    pub feedback: Option<Feedback>,
    pub filter: Option<Filter>,
    /// The answer is a stream the gateway can read (SSE, Bedrock's event stream, a native
    /// client's own streamed call).
    pub is_sse: bool,
    pub stream: bool,
    pub client_wants_usage: bool,
    pub add_include_usage: bool,
    /// The client speaks the provider's own format (`llm_format` other than openai).
    pub native: bool,
}

impl UpstreamAnswer<'_> {
    fn mode(&self) -> AnswerMode {
        let ok = self.status == StatusCode::OK;
        let preserve = self.target.passes_through();
        let ok_stream = ok && self.is_sse;
        if self.native && ok && !self.is_sse && !preserve {
            AnswerMode::Native
        } else if self.target.bridge_completions && !ok_stream {
            AnswerMode::Completions
        } else if self.bridged() && !ok_stream {
            AnswerMode::Responses
        } else if self.target.bridge_messages && !ok_stream {
            AnswerMode::Messages
        } else if self.translated() && !ok_stream {
            AnswerMode::Translated
        } else if ok && self.target.route_type.reports_usage() && self.json_answer() {
            // Image and transcription answers carry usage: read, then passed as they are.
            AnswerMode::Checked
        } else if ok && !preserve && !self.is_sse && !self.stream {
            AnswerMode::Checked
        } else if self.stream && ok && !self.is_sse && !preserve {
            AnswerMode::NotAStream
        } else {
            AnswerMode::Streamed
        }
    }

    fn json_answer(&self) -> bool {
        crate::llm::body::is_json(self.headers.get(header::CONTENT_TYPE))
    }

    fn bridged(&self) -> bool {
        self.target.bridge_responses && self.bridge.is_some()
    }

    fn translated(&self) -> bool {
        self.target.wire != llm::Wire::OpenAi && !self.target.passes_through() && !self.native
    }

    /// Whether this answer's form needs its whole body read first (all but a stream).
    pub(super) fn needs_whole_body(&self) -> bool {
        !matches!(self.mode(), AnswerMode::Streamed)
    }

    /// A whole body as the gateway reads it: gzip or deflate decoded (the client then gets
    /// it decoded, without `Content-Encoding`).
    pub(super) fn decoded(&mut self, b: Bytes) -> Result<Bytes, GatewayError> {
        use crate::net::encoding;
        let ce = self.headers.get(header::CONTENT_ENCODING);
        let coding = encoding::coding(ce.and_then(|v| v.to_str().ok()))
            .map_err(|e| GatewayError::UpstreamInvalid(e.to_string()))?;
        let Some(coding) = coding else {
            return Ok(b);
        };
        let out = encoding::decode(coding, &b, crate::net::body::MAX_BUFFERED_RESPONSE)
            .map_err(|e| GatewayError::UpstreamInvalid(e.to_string()))?;
        self.headers.remove(header::CONTENT_ENCODING);
        self.headers.remove(header::CONTENT_LENGTH);
        Ok(Bytes::from(out))
    }

    /// Takes the body, to read it whole.
    pub(super) fn take_body(&mut self) -> Option<Incoming> {
        self.body.take()
    }

    /// The response for the client (`read`: the whole body, when [`needs_whole_body`] said
    /// so); the log phase runs when its body ends. No await here: the caller reads the body,
    /// so the future that holds this answer (boxed per request) holds it once.
    ///
    /// [`needs_whole_body`]: UpstreamAnswer::needs_whole_body
    pub(super) fn respond(
        self,
        read: Option<Result<Bytes, GatewayError>>,
        log: Exchange,
        snap: Arc<Snapshot>,
    ) -> Response<ProxyBody> {
        let mode = self.mode();
        let bytes = match (read, &mode) {
            (_, AnswerMode::Streamed) => return self.streamed(log, snap),
            (Some(Ok(b)), _) => b,
            (Some(Err(_)), AnswerMode::NotAStream) => Bytes::new(),
            (Some(Err(e)), _) => return kong_error(e, self.shape, log, snap),
            (None, _) => {
                let e = GatewayError::Internal("answer body not read".into());
                return kong_error(e, self.shape, log, snap);
            }
        };
        match mode {
            AnswerMode::Native => self.native(bytes, log, snap),
            AnswerMode::Checked => self.checked(bytes, log, snap),
            AnswerMode::NotAStream => {
                let (t, h) = (self.target, self.headers);
                not_a_stream(t, h, bytes, log, snap, self.capture, self.feedback)
            }
            AnswerMode::Streamed => self.streamed(log, snap),
            rebuilt => self.rebuilt(rebuilt, bytes, log, snap),
        }
    }

    fn native(self, bytes: Bytes, mut log: Exchange, snap: Arc<Snapshot>) -> Response<ProxyBody> {
        let latency = super::ms(log.started.elapsed());
        if let Some(a) = log.ai.as_mut() {
            (a.usage, a.response_model) = llm::read_usage(self.target.wire, &bytes);
            a.llm_latency_ms = Some(latency);
        }
        let (status, headers) = (self.status, self.headers);
        buffered_response(
            status,
            headers,
            bytes,
            log,
            snap,
            self.capture,
            self.feedback,
        )
    }

    fn rebuilt(
        self,
        mode: AnswerMode,
        bytes: Bytes,
        mut log: Exchange,
        snap: Arc<Snapshot>,
    ) -> Response<ProxyBody> {
        let (target, status) = (self.target, self.status);
        let out = if status == StatusCode::OK {
            let asked = llm::Asked {
                model: self.model.as_deref(),
                request: self.request,
                request_id: &log.request_id,
            };
            let decoded = match mode {
                AnswerMode::Completions => {
                    chat_answer(target, &bytes, &asked).and_then(|(chat, usage, model)| {
                        let chat = chat.as_deref().unwrap_or(&bytes);
                        Ok((llm::completions::from_chat(chat)?, usage, model))
                    })
                }
                AnswerMode::Responses => match self.bridge {
                    Some(b) => bridged_answer(self.gw, target, &bytes, b, &asked),
                    None => {
                        let e = GatewayError::Internal("bridge".into());
                        return kong_error(e, self.shape, log, snap);
                    }
                },
                AnswerMode::Messages => match &self.messages {
                    Some(m) => messages_answer(target, &bytes, m, &asked),
                    None => {
                        let e = GatewayError::Internal("messages bridge".into());
                        return kong_error(e, self.shape, log, snap);
                    }
                },
                _ => llm::decode(
                    target.wire,
                    target.route_type,
                    &bytes,
                    unix_seconds(),
                    &asked,
                )
                .map(|d| (d.body, d.usage, d.model)),
            };
            match decoded {
                Ok((out, usage, model)) => {
                    note_answer(&mut log, usage, model);
                    Bytes::from(out)
                }
                Err(reason) => {
                    let e = transformation_error(target, reason);
                    return kong_error(e, self.shape, log, snap);
                }
            }
        } else {
            // The provider's status stays; its message moves into OpenAI's error shape (or
            // Anthropic's, for Messages clients).
            let openai = llm::decode_error(target.wire, status.as_u16(), &self.headers, &bytes)
                .map(Bytes::from)
                .unwrap_or(bytes);
            match mode {
                AnswerMode::Messages => {
                    Bytes::from(llm::messages::error_for_client(status.as_u16(), &openai))
                }
                _ => openai,
            }
        };
        let mut capture = self.capture;
        let out = answer_filtered(self.filter.as_ref(), status, out, &mut capture);
        json_answer(status, self.headers, out, log, snap, capture, self.feedback)
    }

    fn checked(self, bytes: Bytes, mut log: Exchange, snap: Arc<Snapshot>) -> Response<ProxyBody> {
        let (target, status, mut headers) = (self.target, self.status, self.headers);
        match openai::decode_response(target.route_type, &bytes) {
            Ok(d) => {
                // A batch's usage is final once it completed, and every later retrieve
                // repeats it: counted on the first.
                let usage = match (target.route_type, &d.completed_batch) {
                    (RouteType::Batches, Some(id)) if self.gw.batches_recorded.first(id) => d.usage,
                    (RouteType::Batches, _) => None,
                    _ => d.usage,
                };
                note_answer(&mut log, usage, d.model.map(Cow::into_owned));
            }
            Err(reason) => {
                let e = transformation_error(target, reason);
                return kong_error(e, self.shape, log, snap);
            }
        }
        let mut capture = self.capture;
        let bytes = answer_filtered(self.filter.as_ref(), status, bytes, &mut capture);
        // Usually the upstream's own Content-Length, which is then kept as it is.
        let same_length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            == Some(bytes.len());
        if !same_length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        }
        buffered_response(status, headers, bytes, log, snap, capture, self.feedback)
    }

    fn streamed(mut self, mut log: Exchange, snap: Arc<Snapshot>) -> Response<ProxyBody> {
        let Some(body) = self.body.take() else {
            let e = GatewayError::Internal("answer body".into());
            return kong_error(e, self.shape, log, snap);
        };
        let (target, status) = (self.target, self.status);
        let bridged = self.bridged();
        let translated = self.translated();
        let mut headers = self.headers;
        let dialect = sse_dialect(target);
        // A stream the gateway reads is decoded first; one in a coding it cannot decode
        // passes untouched.
        let coding = crate::net::encoding::coding(
            headers
                .get(header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok()),
        );
        let observing =
            status == StatusCode::OK && self.is_sse && !target.passes_through() && coding.is_ok();
        let decode = coding.ok().flatten().filter(|_| observing);
        let asked = llm::Asked {
            model: self.model.as_deref(),
            request: self.request,
            request_id: &log.request_id,
        };
        // A translated stream always ends with a usage chunk; it reaches the client only if
        // asked.
        let mapper = match self.bridge {
            _ if observing && target.bridge_messages => self.messages.as_ref().map(|m| {
                let stage = llm::messages::StreamMapper::new(m.clone());
                Mapper::messages(target.wire, unix_seconds(), &asked, stage)
            }),
            Some(b) if observing && bridged => {
                let on_complete = b.meta.store.then(|| {
                    let store = self.gw.conversations.clone();
                    let id = b.meta.id.clone();
                    let mut conversation = b.conversation;
                    Box::new(move |assistant: serde_json::Value| {
                        conversation.push(assistant);
                        store.put(id, conversation);
                    }) as llm::stream::OnComplete
                });
                let stage = responses::StreamMapper::new(b.meta);
                Some(Mapper::responses(
                    target.wire,
                    unix_seconds(),
                    &asked,
                    stage,
                    on_complete,
                ))
            }
            _ if observing && target.bridge_completions => {
                Some(Mapper::completions(target.wire, unix_seconds(), &asked))
            }
            _ if observing && (translated || self.native) => {
                Mapper::new(target.wire, unix_seconds(), &asked, self.native)
            }
            _ => None,
        };
        if mapper.as_ref().is_some_and(|m| !m.observe_only()) {
            // Whatever the provider streams (SSE, NDJSON), the client gets OpenAI's SSE.
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        let strip_usage = match &mapper {
            Some(m) if m.observe_only() || bridged || target.bridge_messages => false,
            Some(_) => !self.client_wants_usage,
            None => self.add_include_usage && dialect == Dialect::ChatLike,
        };
        let observer = observing.then(|| SseObserver::new(dialect, strip_usage));
        if observer.is_some() {
            headers.remove(header::CONTENT_LENGTH);
        }
        if decode.is_some() {
            headers.remove(header::CONTENT_ENCODING);
        }
        log.status = status.as_u16();
        if log.enabled {
            log.response_headers = HeaderCopy::of(&headers);
        }
        let sse = observer.is_some().then_some(dialect);
        let finish = Finish::with_feedback(log, snap, self.capture, self.feedback);
        let sse_filter = self
            .filter
            .filter(|f| f.active() && observing && !self.native)
            .map(ai_sanitizer_filter::SseFilter::new);
        let mut resp = Response::new(ProxyBody::upstream(
            body,
            mapper,
            observer,
            sse,
            self.read_timeout,
            finish,
        ));
        if let Some(f) = sse_filter {
            resp.body_mut().set_filter(f);
        }
        if let Some(c) = decode {
            resp.body_mut().set_decoder(c);
        }
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }
}
