//! Hugging Face's feature-extraction pipeline (`/hf-inference/models/{m}/pipeline/
//! feature-extraction`) for `llm/v1/embeddings`: `{inputs: [texts]}` in, one pooled
//! vector per text out. Chat goes to the router's OpenAI-compatible API, untranslated.
//! Native clients (`llm_format: huggingface`) call TGI's `generate` / `generate_stream`
//! or the router's OpenAI-compatible paths themselves; their answers are read for usage.

use serde_json::{json, Map, Value};

use crate::config::plugins::RouteType;
use crate::llm::body::BodyView;
use crate::llm::framing::{Framed, MapEvents};
use crate::llm::translate::{self as t, bad};
use crate::llm::usage::Usage;
use crate::llm::{llama2, openai, sse};
use crate::llm::{Decoded, Encode, EncodeError};

/// The router's path up to the model.
pub const EMBED_PREFIX: &str = "/hf-inference/models/";
/// What follows the model.
pub const EMBED_SUFFIX: &str = "/pipeline/feature-extraction";

/// Model ids are `org/name`: the slash stays, anything that could change the path is
/// escaped.
const MODEL: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// The feature-extraction path for `model` under `prefix`.
pub fn embed_path(prefix: &str, model: &str) -> String {
    let m: String = percent_encoding::utf8_percent_encode(model, MODEL).collect();
    format!("{prefix}{m}{EMBED_SUFFIX}")
}

/// An OpenAI embeddings body as a feature-extraction body (the model is in the path).
pub fn encode_embeddings(body: &BodyView<'_>, e: &Encode<'_>) -> Result<Vec<u8>, EncodeError> {
    let mut out = Map::new();
    out.insert(
        "inputs".into(),
        json!(t::embedding_inputs(body, "huggingface")?),
    );
    if let Some((k, v)) = e.body_param {
        out.insert(k.into(), Value::String(v.into()));
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| bad(e.to_string()))
}

/// Pooled vectors (`[[f32]]`) as an OpenAI embeddings list; token-level output (a model
/// without pooling) cannot be one vector per input and is refused. The pipeline reports
/// no token counts.
pub fn decode_embeddings(body: &[u8], model: Option<&str>) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Array(rows) = v else {
        return Err("expected an array of vectors".into());
    };
    let pooled = rows
        .iter()
        .all(|r| r.as_array().is_some_and(|x| x.iter().all(Value::is_number)));
    if !pooled {
        return Err("the model returned token embeddings, not one vector per input".into());
    }
    let body = t::embedding_list(rows, model, None)?;
    Ok(Decoded {
        body,
        usage: None,
        model: model.map(str::to_string),
    })
}

/// Whether a native client's path asks for a stream (TGI's `generate_stream`; other
/// endpoints stream by their body's `stream`).
pub fn path_streams(path: &str) -> bool {
    let p = path.split('?').next().unwrap_or("").trim_end_matches('/');
    p.ends_with(llama2::GENERATE_STREAM_PATH)
}

/// Usage and model of a native answer: TGI's `details` (`generated_tokens`; prompt tokens
/// only with `decoder_input_details`), else an OpenAI-shaped `usage` and `model`.
pub fn read_usage(body: &[u8]) -> (Option<Usage>, Option<String>) {
    let tgi = llama2::read_usage(body);
    if tgi.0.is_some() {
        return tgi;
    }
    match openai::decode_response(RouteType::Preserve, body) {
        Ok(d) => (d.usage, d.model.map(|m| m.into_owned())),
        Err(_) => (None, None),
    }
}

/// A native client's stream for the observer: TGI's token events become OpenAI chunks
/// (as the raw Llama-2 dialect maps them); the router's OpenAI chunks pass as they are.
pub type StreamMapper = Framed<EventMapper>;

impl StreamMapper {
    /// A mapper stamping TGI's chunks with `created` and the requested `model`.
    pub fn new(created: u64, model: Option<&str>) -> Self {
        Framed::wrap(EventMapper {
            tgi: llama2::EventMapper::new(created, model),
            done: false,
        })
    }
}

/// One event at a time (see [`StreamMapper`]).
#[derive(Debug, Default)]
pub struct EventMapper {
    tgi: llama2::EventMapper,
    /// `[DONE]` of an OpenAI-shaped stream was seen.
    done: bool,
}

impl MapEvents for EventMapper {
    type Framing = sse::Framer;

    fn on_event(&mut self, ev: &sse::Event, out: &mut Vec<u8>) {
        if ev.data == b"[DONE]" {
            out.extend_from_slice(b"data: [DONE]\n\n");
            self.done = true;
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&ev.data) else {
            return;
        };
        // TGI's events carry `token` (its errors a string `error`); OpenAI's never do.
        let tgi = v.get("token").is_some()
            || v.get("generated_text").is_some()
            || v.get("error").is_some_and(Value::is_string);
        if tgi {
            self.tgi.on_event(ev, out);
        } else if !ev.data.contains(&b'\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&ev.data);
            out.extend_from_slice(b"\n\n");
        } else {
            sse::write_data(out, &v);
        }
    }

    /// True when TGI's final event or `[DONE]` was seen.
    fn end(&mut self, out: &mut Vec<u8>) -> bool {
        self.tgi.end(out) || self.done
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn model_keeps_its_slash_and_nothing_else() {
        assert_eq!(
            embed_path(EMBED_PREFIX, "BAAI/bge-small-en-v1.5"),
            "/hf-inference/models/BAAI/bge-small-en-v1.5/pipeline/feature-extraction"
        );
        assert_eq!(
            embed_path("/", "a?b#c"),
            "/a%3Fb%23c/pipeline/feature-extraction"
        );
    }

    #[test]
    fn native_usage_from_tgi_or_openai_answers() {
        let (u, m) = read_usage(
            br#"{"generated_text":"Hi","details":{"finish_reason":"eos_token","generated_tokens":4}}"#,
        );
        assert_eq!((u.unwrap().completion_tokens, m), (4, None));
        let (u, m) = read_usage(
            br#"[{"generated_text":"Hi","details":{"generated_tokens":2,"prefill":[{},{},{}]}}]"#,
        );
        assert_eq!((u.unwrap().prompt_tokens, m), (3, None));
        let (u, m) = read_usage(
            br#"{"object":"chat.completion","model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}"#,
        );
        assert_eq!(u.unwrap().total_tokens, 11);
        assert_eq!(m.as_deref(), Some("meta-llama/Llama-3.1-8B-Instruct"));
        assert_eq!(
            read_usage(br#"{"generated_text":"no details"}"#),
            (None, None)
        );
        assert_eq!(read_usage(b"<html>"), (None, None));
    }

    #[test]
    fn native_streams_tgi_or_openai() {
        let tgi = concat!(
            "data:{\"index\":1,\"token\":{\"id\":1,\"text\":\" Hi\",\"special\":false},\"generated_text\":null,\"details\":null}\n\n",
            "data:{\"index\":2,\"token\":{\"id\":2,\"text\":\"</s>\",\"special\":true},\"generated_text\":\"Hi\",",
            "\"details\":{\"finish_reason\":\"eos_token\",\"generated_tokens\":2,\"seed\":null}}\n\n",
        );
        for split in [1, 5, tgi.len()] {
            let mut m = StreamMapper::new(1, Some("tgi"));
            let mut out = Vec::new();
            for p in tgi.as_bytes().chunks(split) {
                m.on_chunk(p, &mut out);
            }
            assert!(m.finish(&mut out), "split {split}");
            let s = String::from_utf8(out).unwrap();
            assert!(s.contains("\"content\":\"Hi\""), "{s}");
            assert!(s.contains("\"completion_tokens\":2"), "{s}");
            assert!(s.ends_with("data: [DONE]\n\n"), "{s}");
        }
        let openai = "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\ndata: [DONE]\n\n";
        let mut m = StreamMapper::new(1, None);
        let mut out = Vec::new();
        m.on_chunk(openai.as_bytes(), &mut out);
        assert!(m.finish(&mut out));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            openai,
            "OpenAI chunks pass as they are"
        );
        let mut m = StreamMapper::new(1, None);
        m.on_chunk(b"data: {\"token\":{\"text\":\"cut\"}}\n\n", &mut Vec::new());
        assert!(!m.finish(&mut Vec::new()), "no final event: not complete");
    }

    #[test]
    fn generate_stream_paths() {
        assert!(path_streams("/generate_stream"));
        assert!(path_streams("/v1/generate_stream/?x=1"));
        assert!(!path_streams("/generate"));
        assert!(!path_streams("/v1/chat/completions"));
    }

    #[test]
    fn pooled_vectors_only() {
        let d = decode_embeddings(b"[[0.1,0.2],[0.3,0.4]]", Some("m")).unwrap();
        let v: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(v["data"][1]["embedding"], json!([0.3, 0.4]));
        assert!(decode_embeddings(b"[[[0.1],[0.2]]]", None).is_err());
        assert!(decode_embeddings(b"{\"error\":\"x\"}", None).is_err());
    }
}
