//! Golden transcripts, one directory per dialect beside the module that tests it
//! (`tests/providers/<provider>/`): a client request and the upstream body it becomes, a
//! provider answer and the OpenAI answer it becomes, a provider stream and the OpenAI stream
//! it becomes (fed whole and in 7-byte pieces). Each provider module runs its own; this one
//! holds the runner and the robustness test over every dialect's fixtures.
//! `UPDATE_GOLDEN=1` rewrites the expected files; review the diff before committing.

use std::path::PathBuf;

use serde_json::Value;
use tollgate::config::plugins::{ModelOptions, RouteType};
use tollgate::llm::body::BodyView;
use tollgate::llm::stream::Mapper;
use tollgate::llm::{self, Wire};

const CREATED: u64 = 1_700_000_000;

/// A provider's fixture directory, `tests/providers/<provider>/`, beside its module.
pub fn dir(provider: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/providers")
        .join(provider)
}

fn check(path: PathBuf, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{} differs", path.display());
}

fn pretty(bytes: &[u8]) -> String {
    let v: Value = serde_json::from_slice(bytes).unwrap();
    serde_json::to_string_pretty(&v).unwrap() + "\n"
}

/// Runs one provider's transcripts in `tests/providers/<dir>/`: the OpenAI request
/// `chat_tools.request.json` encodes to `chat_tools.upstream.json`, the native answer
/// `answer.response.json` decodes to `answer.openai.json`, and the native stream (bytes
/// given by the caller, since some dialects are binary) maps to `stream.openai.sse`,
/// the same whether fed whole or in 7-byte pieces.
pub fn transcripts(dir_name: &str, wire: Wire, model: &str, stream: &[u8]) {
    let d = dir(dir_name);
    let req = std::fs::read(d.join("chat_tools.request.json")).unwrap();
    let view = BodyView::parse(&req).unwrap();
    let options = ModelOptions::default();
    let e = llm::Encode {
        model: Some(model),
        options: &options,
        stream: true,
        body_param: None,
    };
    let up = llm::encode(wire, RouteType::Chat, &view, &e).unwrap();
    check(d.join("chat_tools.upstream.json"), &pretty(&up));

    let answer = std::fs::read(d.join("answer.response.json")).unwrap();
    let asked = llm::Asked {
        model: Some(model),
        request: &req,
        request_id: "0123456789abcdef0123456789abcdef",
    };
    let decoded = llm::decode(wire, RouteType::Chat, &answer, CREATED, &asked).unwrap();
    check(d.join("answer.openai.json"), &pretty(&decoded.body));

    let mut m = Mapper::new(wire, CREATED, &asked, false).unwrap();
    let mut whole = m.on_chunk(stream).to_vec();
    let before = whole.len();
    whole.extend_from_slice(&m.finish());
    let tail = String::from_utf8_lossy(&whole[before..]).into_owned();
    assert!(
        !tail.contains("upstream_stream_cut"),
        "the stream's terminal event ends it"
    );
    let mut pieces = Vec::new();
    let mut m = Mapper::new(wire, CREATED, &asked, false).unwrap();
    for c in stream.chunks(7) {
        pieces.extend_from_slice(&m.on_chunk(c));
    }
    pieces.extend_from_slice(&m.finish());
    assert_eq!(whole, pieces, "framing does not depend on chunk boundaries");
    check(
        d.join("stream.openai.sse"),
        &String::from_utf8(whole).unwrap(),
    );
}

/// The Bedrock stream fixture is a readable list of ConverseStream events; the binary
/// event stream is made from it with mock-llm's encoder.
pub fn bedrock_stream() -> Vec<u8> {
    let events: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir("bedrock").join("stream.events.json")).unwrap())
            .unwrap();
    let mut stream = Vec::new();
    for e in &events {
        let payload = e["payload"].to_string();
        stream.extend(mock_llm::eventstream::event(
            e["event"].as_str().unwrap(),
            payload.as_bytes(),
        ));
    }
    stream
}

/// Every dialect's decoders and stream mappers (alone and under both bridges) take cut,
/// corrupted and random input without panicking, and a cut stream never ends as if it
/// were whole.
#[test]
fn broken_input_never_panics() {
    let asked = llm::Asked {
        model: Some("m"),
        request: b"{}",
        request_id: "rid",
    };
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    };
    let cases: [(&str, Wire, Vec<u8>); 6] = [
        (
            "anthropic",
            Wire::Anthropic,
            std::fs::read(dir("anthropic").join("stream.response.sse")).unwrap(),
        ),
        (
            "gemini",
            Wire::Gemini,
            std::fs::read(dir("gemini").join("stream.response.sse")).unwrap(),
        ),
        (
            "cohere",
            Wire::Cohere,
            std::fs::read(dir("cohere").join("stream.response.sse")).unwrap(),
        ),
        (
            "ollama",
            Wire::Ollama,
            std::fs::read(dir("ollama").join("stream.response.ndjson")).unwrap(),
        ),
        (
            "llama2-raw",
            Wire::Llama2Raw,
            std::fs::read(dir("llama2-raw").join("stream.response.sse")).unwrap(),
        ),
        ("bedrock", Wire::Bedrock, bedrock_stream()),
    ];
    for (name, wire, stream) in cases {
        let answer = std::fs::read(dir(name).join("answer.response.json")).unwrap();
        for cut in (0..answer.len()).step_by(3) {
            let _ = llm::decode(wire, RouteType::Chat, &answer[..cut], CREATED, &asked);
            let _ = llm::decode_error(wire, 500, &http::HeaderMap::new(), &answer[..cut]);
            let _ = llm::read_usage(wire, &answer[..cut]);
        }
        let _ = llm::decode(wire, RouteType::Chat, &noise(512), CREATED, &asked);
        // Cut streams: every prefix, through the plain, Responses and completions mappers.
        for cut in (0..stream.len()).step_by(5) {
            let mut m = Mapper::new(wire, CREATED, &asked, false).unwrap();
            let mut out = m.on_chunk(&stream[..cut]).to_vec();
            out.extend_from_slice(&m.finish());
            let meta = llm::responses::to_chat(
                &BodyView::parse(br#"{"input":"hi"}"#).unwrap(),
                None,
                true,
                CREATED,
            )
            .unwrap()
            .meta;
            let mut r = Mapper::responses(
                wire,
                CREATED,
                &asked,
                llm::responses::StreamMapper::new(meta),
                None,
            );
            let mut rout = r.on_chunk(&stream[..cut]).to_vec();
            rout.extend_from_slice(&r.finish());
            let rtext = String::from_utf8_lossy(&rout);
            // The fixtures' terminal events are all in their last third.
            if cut < stream.len() * 2 / 3 {
                assert!(
                    !rtext.contains("response.completed"),
                    "{name}: a stream cut at {cut}/{} completed",
                    stream.len()
                );
            }
            let mut c = Mapper::completions(wire, CREATED, &asked);
            let _ = c.on_chunk(&stream[..cut]);
            let _ = c.finish();
        }
        let mut m = Mapper::new(wire, CREATED, &asked, false).unwrap();
        for _ in 0..20 {
            let _ = m.on_chunk(&noise(97));
        }
        let _ = m.finish();
    }
}
