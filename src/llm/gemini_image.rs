//! OpenAI's image generation (`image/v1/images/generations`) on Gemini's image models
//! (`gemini-2.5-flash-image`, `gemini-3-pro-image-preview`): the prompt goes to
//! `generateContent` asking for image output, and the inline images come back as
//! `b64_json` items. As in Kong, a client's `generationConfig` (e.g. `imageConfig` with
//! `aspectRatio`, `imageSize`) is passed to Gemini.

use serde_json::{json, Map, Value};

use crate::llm::body::BodyView;
use crate::llm::translate::{self as t, bad, field};
use crate::llm::{Decoded, Encode, EncodeError};

/// An OpenAI images request as a `generateContent` body.
pub fn encode(body: &BodyView<'_>, e: &Encode<'_>) -> Result<Vec<u8>, EncodeError> {
    let prompt = t::image_prompt(body, "gemini")?;
    let mut config = match field(body, "generationConfig")? {
        Some(Value::Object(c)) => c,
        Some(_) => return Err(bad("'generationConfig' must be an object")),
        None => Map::new(),
    };
    config
        .entry("responseModalities")
        .or_insert_with(|| json!(["IMAGE"]));
    if let Some(n) = field(body, "n")? {
        let n = n
            .as_u64()
            .filter(|n| (1..=8).contains(n))
            .ok_or_else(|| bad("'n' must be an integer from 1 to 8"))?;
        config.insert("candidateCount".into(), json!(n));
    }
    let mut out = json!({
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": config,
    });
    if let Some((k, v)) = e.body_param {
        out[k] = json!(v);
    }
    serde_json::to_vec(&out).map_err(|e| bad(e.to_string()))
}

/// A `generateContent` answer as an OpenAI images answer (`data[].b64_json`, usage with
/// OpenAI's image field names).
pub fn decode(body: &[u8], created: u64) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut data = Vec::new();
    let mut text = Vec::new();
    for c in v
        .get("candidates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for p in c
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let inline = p.get("inlineData").or_else(|| p.get("inline_data"));
            match (inline.and_then(|i| i.get("data")), p.get("text")) {
                (Some(Value::String(b64)), _) => data.push(json!({ "b64_json": b64 })),
                (_, Some(Value::String(t))) => text.push(t.as_str()),
                _ => {}
            }
        }
    }
    if data.is_empty() {
        let why = v
            .pointer("/promptFeedback/blockReason")
            .and_then(Value::as_str)
            .map(|r| format!("the prompt was blocked ({r})"))
            .unwrap_or_else(|| "no image in Gemini's answer".into());
        return Err(why);
    }
    if let (Some(first), false) = (data.first_mut(), text.is_empty()) {
        first["revised_prompt"] = json!(text.join("\n"));
    }
    let usage = v.get("usageMetadata").and_then(crate::llm::gemini::usage);
    let model = v
        .get("modelVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut out = json!({"created": created, "data": data});
    if let Some(u) = &usage {
        out["usage"] = json!({"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens});
    }
    let body = serde_json::to_vec(&out).map_err(|e| e.to_string())?;
    Ok(Decoded { body, usage, model })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::plugins::ModelOptions;

    #[test]
    fn images_requests_and_answers_translate() {
        let body = serde_json::to_vec(&json!({"model": "gemini-3-pro-image-preview",
            "prompt": "a red circle", "n": 2,
            "generationConfig": {"imageConfig": {"aspectRatio": "4:3", "imageSize": "1k"}}}))
        .unwrap();
        let view = BodyView::parse(&body).unwrap();
        let options = ModelOptions::default();
        let e = Encode {
            model: Some("gemini-3-pro-image-preview"),
            options: &options,
            stream: false,
            body_param: None,
        };
        let out: Value = serde_json::from_slice(&encode(&view, &e).unwrap()).unwrap();
        assert_eq!(out["contents"][0]["parts"][0]["text"], "a red circle");
        assert_eq!(
            out["generationConfig"]["responseModalities"],
            json!(["IMAGE"])
        );
        assert_eq!(out["generationConfig"]["candidateCount"], 2);
        assert_eq!(out["generationConfig"]["imageConfig"]["aspectRatio"], "4:3");

        let answer = json!({"candidates": [{"content": {"parts": [
            {"text": "Here it is"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]}}],
            "usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 1290, "totalTokenCount": 1296},
            "modelVersion": "gemini-3-pro-image-preview"});
        let d = decode(&serde_json::to_vec(&answer).unwrap(), 7).unwrap();
        let v: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(v["data"][0]["b64_json"], "iVBORw0KGgo=");
        assert_eq!(v["data"][0]["revised_prompt"], "Here it is");
        assert_eq!(v["usage"]["total_tokens"], 1296);
        assert_eq!(d.usage.unwrap().completion_tokens, 1290);
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}});
        match decode(&serde_json::to_vec(&blocked).unwrap(), 7) {
            Err(e) => assert!(e.contains("SAFETY"), "{e}"),
            Ok(_) => panic!("a blocked prompt decoded"),
        }
        let url = serde_json::to_vec(&json!({"prompt": "x", "response_format": "url"})).unwrap();
        assert!(encode(&BodyView::parse(&url).unwrap(), &e).is_err());
    }
}
