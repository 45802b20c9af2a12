//! OpenAI's image generation (`image/v1/images/generations`) on Bedrock's image models,
//! through InvokeModel: Amazon's (Nova Canvas, Titan Image Generator: `TEXT_IMAGE` tasks)
//! and Stability's (`prompt` bodies). Both answer `{"images": [<base64>…]}`, which become
//! OpenAI's `b64_json` items. Bedrock reports no token usage for images.

use serde_json::{json, Value};

use crate::llm::body::BodyView;
use crate::llm::translate::{self as t, bad, field};
use crate::llm::{Decoded, Encode, EncodeError};

/// An OpenAI images request as the model's InvokeModel body.
pub fn encode(body: &BodyView<'_>, e: &Encode<'_>) -> Result<Vec<u8>, EncodeError> {
    let model = t::model(body, e)?;
    let prompt = t::image_prompt(body, "bedrock")?;
    let n = match field(body, "n")? {
        Some(n) => n
            .as_u64()
            .filter(|n| (1..=5).contains(n))
            .ok_or_else(|| bad("'n' must be an integer from 1 to 5"))?,
        None => 1,
    };
    let size = match body.str("size") {
        Some(s) if s != "auto" => Some(parse_size(&s)?),
        _ => None,
    };
    let out = if model.contains("stability.") {
        if n != 1 {
            return Err(bad(
                "'n': Stability models on Bedrock make one image per request",
            ));
        }
        let mut b = json!({"prompt": prompt, "output_format": "png"});
        if let Some((w, h)) = size {
            b["aspect_ratio"] = json!(aspect_ratio(w, h)?);
        }
        b
    } else {
        let mut config = json!({ "numberOfImages": n });
        if let Some((w, h)) = size {
            config["width"] = json!(w);
            config["height"] = json!(h);
        }
        if let Some(q) = body.str("quality") {
            // OpenAI's `hd`/`high` is Amazon's `premium`.
            let premium = matches!(q.as_ref(), "hd" | "high");
            config["quality"] = json!(if premium { "premium" } else { "standard" });
        }
        json!({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": prompt},
            "imageGenerationConfig": config})
    };
    serde_json::to_vec(&out).map_err(|e| bad(e.to_string()))
}

fn parse_size(s: &str) -> Result<(u64, u64), EncodeError> {
    s.split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .ok_or_else(|| bad(format!("'size' '{s}' must be WIDTHxHEIGHT, e.g. 1024x1024")))
}

/// Stability takes an aspect ratio, not pixels.
fn aspect_ratio(w: u64, h: u64) -> Result<&'static str, EncodeError> {
    const RATIOS: [(&str, u64, u64); 9] = [
        ("1:1", 1, 1),
        ("16:9", 16, 9),
        ("9:16", 9, 16),
        ("3:2", 3, 2),
        ("2:3", 2, 3),
        ("4:5", 4, 5),
        ("5:4", 5, 4),
        ("21:9", 21, 9),
        ("9:21", 9, 21),
    ];
    RATIOS
        .iter()
        .find(|(_, a, b)| w * b == h * a)
        .map(|(r, _, _)| *r)
        .ok_or_else(|| {
            bad(format!(
                "'size' {w}x{h} has no aspect ratio Stability models take"
            ))
        })
}

/// An InvokeModel image answer as an OpenAI images answer.
pub fn decode(body: &[u8], created: u64) -> Result<Decoded, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(format!("Bedrock refused the image: {e}"));
    }
    let data: Vec<Value> = v
        .get("images")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|b| json!({ "b64_json": b }))
        .collect();
    if data.is_empty() {
        return Err("no image in Bedrock's answer".into());
    }
    let out = json!({"created": created, "data": data});
    let body = serde_json::to_vec(&out).map_err(|e| e.to_string())?;
    Ok(Decoded {
        body,
        usage: None,
        model: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::plugins::ModelOptions;

    fn enc(model: &str, body: Value) -> Result<Value, String> {
        let bytes = serde_json::to_vec(&body).unwrap();
        let view = BodyView::parse(&bytes).unwrap();
        let options = ModelOptions::default();
        let e = Encode {
            model: Some(model),
            options: &options,
            stream: false,
            body_param: None,
        };
        encode(&view, &e)
            .map(|b| serde_json::from_slice(&b).unwrap())
            .map_err(|e| e.0)
    }

    #[test]
    fn amazon_and_stability_bodies() {
        let nova = enc(
            "amazon.nova-canvas-v1:0",
            json!({"prompt": "a lighthouse", "n": 2, "size": "1280x720", "quality": "hd"}),
        )
        .unwrap();
        assert_eq!(nova["taskType"], "TEXT_IMAGE");
        assert_eq!(nova["textToImageParams"]["text"], "a lighthouse");
        assert_eq!(
            nova["imageGenerationConfig"],
            json!({"numberOfImages": 2, "width": 1280, "height": 720, "quality": "premium"})
        );
        let sd = enc(
            "stability.sd3-5-large-v1:0",
            json!({"prompt": "a lighthouse", "size": "1920x1080"}),
        )
        .unwrap();
        assert_eq!(
            sd,
            json!({"prompt": "a lighthouse", "output_format": "png", "aspect_ratio": "16:9"})
        );
        assert!(enc("stability.x", json!({"prompt": "p", "n": 2})).is_err());
        assert!(enc(
            "amazon.nova-canvas-v1:0",
            json!({"prompt": "p", "size": "big"})
        )
        .is_err());
        assert!(enc(
            "amazon.nova-canvas-v1:0",
            json!({"prompt": "p", "response_format": "url"})
        )
        .is_err());

        let d = decode(br#"{"images": ["AAA", "BBB"], "error": null}"#, 9).unwrap();
        let v: Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(v["data"][1]["b64_json"], "BBB");
        assert!(decode(
            br#"{"images": [], "error": "blocked by content filter"}"#,
            9
        )
        .is_err_and(|e| e.contains("content filter")));
    }
}
