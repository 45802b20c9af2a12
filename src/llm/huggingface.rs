//! Hugging Face's feature-extraction pipeline (`/hf-inference/models/{m}/pipeline/
//! feature-extraction`) for `llm/v1/embeddings`: `{inputs: [texts]}` in, one pooled
//! vector per text out. Chat goes to the router's OpenAI-compatible API, untranslated.

use serde_json::{json, Map, Value};

use crate::llm::body::BodyView;
use crate::llm::translate::{self as t, bad};
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
    fn pooled_vectors_only() {
        let d = decode_embeddings(b"[[0.1,0.2],[0.3,0.4]]", Some("m")).unwrap();
        let v: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(v["data"][1]["embedding"], json!([0.3, 0.4]));
        assert!(decode_embeddings(b"[[[0.1],[0.2]]]", None).is_err());
        assert!(decode_embeddings(b"{\"error\":\"x\"}", None).is_err());
    }
}
