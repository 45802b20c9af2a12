//! OpenAI's audio (speech, transcriptions, translations), image (generations,
//! edits) and video (Sora) APIs, answering with small deterministic fakes:
//! silent MP3 frames or a WAV/PCM tone for speech, a 1×1 PNG for images, an MP4
//! `ftyp` header plus filler for videos.

// Handlers return error responses through `Err` so `?` can end them early; they
// are built once per request, so boxing them would buy nothing.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::Response;
use serde_json::{json, Value};

use crate::api::{self, invalid, missing, not_found, ok, Answer, Req};
use crate::body::MockBody;
use crate::server::sse_data;

/// A valid 1×1 transparent RGBA PNG.
pub(crate) const PNG: [u8; 70] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x64, 0x60, 0xf8, 0x5f,
    0x0f, 0x00, 0x02, 0x87, 0x01, 0x80, 0xeb, 0x47, 0xba, 0x92, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Bytes per frame of a binary stream (speech).
const FRAME: usize = 1024;

/// Words in `text`, at least 1 (the mock's token count).
fn words(text: &str) -> u64 {
    (text.split_whitespace().count() as u64).max(1)
}

// ---------------------------------------------------------------------------
// Audio

/// `(content type, bytes)` of fake speech for `input` in `format`, or `None`
/// for a format OpenAI does not offer.
pub(crate) fn fake_audio(format: &str, input: &str) -> Option<(&'static str, Vec<u8>)> {
    let n = words(input) as usize;
    // 24 kHz mono 16-bit: 0.1 s plus 10 ms a word, at most 1 s.
    let samples = (2400 + 240 * n).min(24_000);
    let pcm = || -> Vec<u8> {
        (0..samples)
            .flat_map(|i| {
                let t = i as f32 / 24_000.0;
                let v = (t * 440.0 * std::f32::consts::TAU).sin() * 8_000.0;
                (v as i16).to_le_bytes()
            })
            .collect()
    };
    // Filler for the compressed formats nobody decodes in tests.
    let filler = |magic: &[u8], len: usize| -> Vec<u8> {
        let mut out = magic.to_vec();
        out.extend((0..len).map(|i| (i * 31 % 251) as u8));
        out
    };
    Some(match format {
        "mp3" => {
            // Silent MPEG-1 Layer III frames: 128 kbit/s, 44.1 kHz, mono, 417 bytes each.
            let frames = (8 + n).min(150);
            let mut out = Vec::with_capacity(frames * 417);
            for _ in 0..frames {
                out.extend_from_slice(&[0xff, 0xfb, 0x90, 0xc4]);
                out.resize(out.len() + 413, 0);
            }
            ("audio/mpeg", out)
        }
        "wav" => {
            let data = pcm();
            let mut out = Vec::with_capacity(44 + data.len());
            let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
            out.extend_from_slice(b"RIFF");
            out.extend_from_slice(&len(36 + data.len()));
            out.extend_from_slice(b"WAVEfmt ");
            out.extend_from_slice(&16u32.to_le_bytes());
            out.extend_from_slice(&1u16.to_le_bytes()); // PCM
            out.extend_from_slice(&1u16.to_le_bytes()); // mono
            out.extend_from_slice(&24_000u32.to_le_bytes());
            out.extend_from_slice(&48_000u32.to_le_bytes()); // byte rate
            out.extend_from_slice(&2u16.to_le_bytes()); // block align
            out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
            out.extend_from_slice(b"data");
            out.extend_from_slice(&len(data.len()));
            out.extend_from_slice(&data);
            ("audio/wav", out)
        }
        "pcm" => ("audio/pcm", pcm()),
        "opus" => ("audio/ogg", filler(b"OggS", 4000 + 40 * n)),
        "aac" => ("audio/aac", filler(&[0xff, 0xf1], 4000 + 40 * n)),
        "flac" => ("audio/flac", filler(b"fLaC", 8000 + 80 * n)),
        _ => return None,
    })
}

/// `POST …/audio/speech` (JSON `model`, `input`, `voice`, `response_format`
/// default mp3, `stream_format` `audio` or `sse`): the audio in 1 KiB frames,
/// chunked (`chunk_delay_ms` and `disconnect_after` apply per frame).
pub(crate) fn speech(req: &Req<'_>) -> Answer {
    let body = req.json()?;
    let input = api::required(&body, "input")?;
    api::required(&body, "voice")?;
    let format = body
        .get("response_format")
        .and_then(Value::as_str)
        .unwrap_or("mp3");
    let (content_type, audio) = fake_audio(format, input).ok_or_else(|| {
        invalid(
            &format!("Invalid value: '{format}'. Supported values are: 'mp3', 'opus', 'aac', 'flac', 'wav', and 'pcm'."),
            Some("response_format"),
        )
    })?;
    let gap = Duration::from_millis(req.directives.chunk_delay_ms.unwrap_or(0));
    let cut = req.directives.disconnect_after;
    if body.get("stream_format").and_then(Value::as_str) == Some("sse") {
        let input_tokens = words(input);
        let output_tokens = (audio.len() / FRAME) as u64 + 1;
        let mut events: Vec<Bytes> = audio
            .chunks(FRAME)
            .map(|c| {
                sse_data(&json!({"type": "speech.audio.delta",
                    "audio": crate::embeddings::base64_encode(c)}))
            })
            .collect();
        events.push(sse_data(&json!({"type": "speech.audio.done", "usage": {
            "input_tokens": input_tokens, "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens}})));
        let body = MockBody::Events(crate::body::EventStream::new(events, gap, cut));
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(response);
    }
    let mut response = Response::new(crate::body::framed(&audio, FRAME, gap, cut));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

fn timestamp(seconds: f64, sep: char) -> String {
    let ms = (seconds * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// `POST …/audio/transcriptions` (`translate` false) and `…/audio/translations`
/// (multipart `file`, `model`, optional `response_format`
/// json|text|srt|vtt|verbose_json, `language`, `prompt`, `stream`).
pub(crate) fn transcription(req: &Req<'_>, translate: bool) -> Answer {
    let form = req.form()?;
    let file = form.get("file").ok_or_else(|| missing("file"))?;
    if form.text("model").is_none_or(|m| m.is_empty()) {
        return Err(missing("model"));
    }
    let filename = file.filename.as_deref().unwrap_or("file");
    let text = format!("mock transcript of {filename} ({} bytes)", file.data.len());
    let prompt_tokens = form
        .text("prompt")
        .map_or(0, |p| p.split_whitespace().count() as u64);
    let audio_tokens = (file.data.len() as u64 / 1024).max(1);
    let input_tokens = prompt_tokens + audio_tokens;
    let output_tokens = words(&text);
    let usage = json!({
        "type": "tokens",
        "input_tokens": input_tokens,
        "input_token_details": {"text_tokens": prompt_tokens, "audio_tokens": audio_tokens},
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    });
    // A second per 16 KiB, at least one (the fake has no real duration).
    let duration = (file.data.len() as f64 / 16_384.0).max(1.0);
    let format = form
        .text("response_format")
        .unwrap_or_else(|| "json".to_owned());
    if !translate && form.text("stream").as_deref() == Some("true") {
        let mut events: Vec<Bytes> = text
            .split_inclusive(' ')
            .map(|piece| sse_data(&json!({"type": "transcript.text.delta", "delta": piece})))
            .collect();
        events.push(sse_data(
            &json!({"type": "transcript.text.done", "text": text, "usage": usage}),
        ));
        let gap = Duration::from_millis(req.directives.chunk_delay_ms.unwrap_or(0));
        let body = crate::body::EventStream::new(events, gap, req.directives.disconnect_after);
        let mut response = Response::new(MockBody::Events(body));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(response);
    }
    let plain = |s: String| {
        Ok(api::bytes_response(
            Bytes::from(s),
            "text/plain; charset=utf-8",
        ))
    };
    match format.as_str() {
        "json" => ok(&json!({"text": text, "usage": usage})),
        "text" => plain(format!("{text}\n")),
        "srt" => plain(format!(
            "1\n{} --> {}\n{text}\n\n",
            timestamp(0.0, ','),
            timestamp(duration, ',')
        )),
        "vtt" => plain(format!(
            "WEBVTT\n\n{} --> {}\n{text}\n\n",
            timestamp(0.0, '.'),
            timestamp(duration, '.')
        )),
        "verbose_json" => {
            let language = if translate {
                "english".to_owned()
            } else {
                form.text("language").unwrap_or_else(|| "english".to_owned())
            };
            let mut answer = json!({
                "task": if translate { "translate" } else { "transcribe" },
                "language": language,
                "duration": duration,
                "text": text,
                "segments": [{
                    "id": 0, "seek": 0, "start": 0.0, "end": duration, "text": text,
                    "tokens": [], "temperature": 0.0, "avg_logprob": -0.1,
                    "compression_ratio": 1.0, "no_speech_prob": 0.0,
                }],
                "usage": {"type": "duration", "seconds": duration.ceil() as u64},
            });
            let granularities: Vec<String> = form
                .all("timestamp_granularities[]")
                .map(|p| p.text())
                .collect();
            if granularities.iter().any(|g| g == "word") {
                let n = text.split_whitespace().count().max(1) as f64;
                answer["words"] = text
                    .split_whitespace()
                    .enumerate()
                    .map(|(i, w)| {
                        json!({"word": w, "start": duration * i as f64 / n,
                            "end": duration * (i + 1) as f64 / n})
                    })
                    .collect();
            }
            ok(&answer)
        }
        other => Err(invalid(
            &format!("Invalid value: '{other}'. Supported values are: 'json', 'text', 'srt', 'verbose_json', and 'vtt'."),
            Some("response_format"),
        )),
    }
}

// ---------------------------------------------------------------------------
// Images

/// The PNG in base64 (image answers carry it inline).
pub(crate) fn png_base64() -> String {
    crate::embeddings::base64_encode(&PNG)
}

/// The PNG, for `GET …/images/{name}.png` (the `url` of `response_format: url`).
pub(crate) fn png_response() -> Response<MockBody> {
    api::bytes_response(Bytes::from_static(&PNG), "image/png")
}

/// An images response: `n` copies of the PNG, as base64 or as URLs back to the mock.
fn images(req: &Req<'_>, fields: &Value, prompt: &str, image_tokens: u64) -> Answer {
    let n = api::uint(fields, "n").unwrap_or(1);
    if !(1..=10).contains(&n) {
        return Err(invalid(
            &format!("Invalid 'n': {n}. Expected a value between 1 and 10."),
            Some("n"),
        ));
    }
    let as_url = fields.get("response_format").and_then(Value::as_str) == Some("url");
    let id = req.next_id();
    let b64 = crate::embeddings::base64_encode(&PNG);
    let data: Vec<Value> = (0..n)
        .map(|i| match as_url {
            true => json!({"url": format!("http://{}/v1/images/img_mock_{id}_{i}.png", req.host()),
                "revised_prompt": prompt}),
            false => json!({"b64_json": b64, "revised_prompt": prompt}),
        })
        .collect();
    let text_tokens = words(prompt);
    let input_tokens = text_tokens + image_tokens;
    // gpt-image-1 bills a low-quality 1024×1024 image at 272 tokens.
    let output_tokens = 272 * n;
    ok(&json!({
        "created": req.now,
        "data": data,
        "background": "opaque",
        "output_format": "png",
        "quality": fields.get("quality").and_then(Value::as_str).unwrap_or("low"),
        "size": fields.get("size").and_then(Value::as_str).unwrap_or("1024x1024"),
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }))
}

/// `POST …/images/generations` (JSON `model`, `prompt`, `n`, `size`, `response_format`).
pub(crate) fn image_generate(req: &Req<'_>) -> Answer {
    let body = req.json()?;
    let prompt = api::required(&body, "prompt")?;
    images(req, &body, prompt, 0)
}

/// `POST …/images/edits` (multipart `image` or `image[]`, one or more, `prompt`,
/// optional `mask`, `model`, `n`, `size`, `response_format`).
pub(crate) fn image_edit(req: &Req<'_>) -> Answer {
    let (fields, form) = req.fields()?;
    let form = form.ok_or_else(|| {
        invalid(
            "mock-llm: images/edits takes a multipart/form-data body",
            None,
        )
    })?;
    let images_sent = form
        .parts
        .iter()
        .filter(|p| p.name == "image" || p.name == "image[]")
        .count() as u64;
    if images_sent == 0 {
        return Err(missing("image"));
    }
    let prompt = api::required(&fields, "prompt")?;
    let masks = u64::from(form.get("mask").is_some());
    // About what gpt-image-1 bills a small input image.
    images(req, &fields, prompt, 65 * (images_sent + masks))
}

// ---------------------------------------------------------------------------
// Videos

/// A few KB of fake MP4: an `ftyp` box, then an `mdat` box of filler.
pub(crate) fn fake_mp4(seconds: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&24u32.to_be_bytes());
    out.extend_from_slice(b"ftypisom\x00\x00\x02\x00isomiso2");
    let filler = 4096 + 512 * seconds.min(60) as usize;
    let size = u32::try_from(8 + filler).unwrap_or(u32::MAX);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(b"mdat");
    out.extend((0..filler).map(|i| (i * 131 % 251) as u8));
    out
}

fn no_video(id: &str) -> Response<MockBody> {
    not_found(
        &format!("Video with id '{id}' not found."),
        Some("video_id"),
    )
}

/// `POST …/videos` (JSON or multipart `model`, `prompt`, `seconds`, `size`,
/// optional `input_reference` file): the video is `completed` at once.
pub(crate) fn video_create(req: &Req<'_>) -> Answer {
    let (fields, _form) = req.fields()?;
    let prompt = api::required(&fields, "prompt")?;
    let seconds = match fields.get("seconds") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => "4".to_owned(),
    };
    let id = format!("video_mock_{}", req.next_id());
    let video = json!({
        "id": id,
        "object": "video",
        "model": fields.get("model").and_then(Value::as_str).unwrap_or("sora-2"),
        "status": "completed",
        "progress": 100,
        "created_at": req.now,
        "completed_at": req.now,
        "expires_at": req.now + 3600,
        "prompt": prompt,
        "seconds": seconds,
        "size": fields.get("size").and_then(Value::as_str).unwrap_or("720x1280"),
        "remixed_from_video_id": null,
        "error": null,
    });
    req.store().videos.push(id, video.clone());
    ok(&video)
}

/// `GET …/videos/{id}`.
pub(crate) fn video_get(req: &Req<'_>) -> Answer {
    let id = req.segment(0);
    let video = req.store().videos.get(id).cloned();
    ok(&video.ok_or_else(|| no_video(id))?)
}

/// `GET …/videos`.
pub(crate) fn video_list(req: &Req<'_>) -> Answer {
    let items = req.store().videos.iter().cloned().collect();
    ok(&api::page(req, items))
}

/// `GET …/videos/{id}/content?variant=video|thumbnail|spritesheet`: fake MP4, or
/// the PNG for the image variants.
pub(crate) fn video_content(req: &Req<'_>) -> Answer {
    let id = req.segment(1);
    let video = req.store().videos.get(id).cloned();
    let video = video.ok_or_else(|| no_video(id))?;
    match req.query("variant").as_deref() {
        None | Some("video") => {
            let seconds = api::uint(&video, "seconds").unwrap_or(4);
            Ok(api::bytes_response(Bytes::from(fake_mp4(seconds)), "video/mp4"))
        }
        Some("thumbnail" | "spritesheet") => Ok(png_response()),
        Some(other) => Err(invalid(
            &format!("Invalid value: '{other}'. Supported values are: 'video', 'thumbnail', and 'spritesheet'."),
            Some("variant"),
        )),
    }
}

/// `DELETE …/videos/{id}`.
pub(crate) fn video_delete(req: &Req<'_>) -> Answer {
    let id = req.segment(0);
    req.store().videos.remove(id).ok_or_else(|| no_video(id))?;
    ok(&json!({"id": id, "object": "video.deleted", "deleted": true}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_is_the_well_known_pixel() {
        assert_eq!(
            crate::embeddings::base64_encode(&PNG),
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
        );
    }

    #[test]
    fn fake_audio_formats() {
        let (ct, mp3) = fake_audio("mp3", "hello there").unwrap();
        assert_eq!(ct, "audio/mpeg");
        assert_eq!(mp3.len(), 10 * 417);
        assert_eq!(&mp3[..4], &[0xff, 0xfb, 0x90, 0xc4]);
        let (ct, wav) = fake_audio("wav", "hi").unwrap();
        assert_eq!(ct, "audio/wav");
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(wav.len(), 44 + 2 * 2640);
        assert_eq!(fake_audio("wav", "hi"), fake_audio("wav", "hi"));
        assert!(fake_audio("ogg", "x").is_none());
    }

    #[test]
    fn srt_timestamps() {
        assert_eq!(timestamp(3661.5, ','), "01:01:01,500");
        assert_eq!(timestamp(0.0, '.'), "00:00:00.000");
    }

    #[test]
    fn mp4_starts_with_ftyp() {
        let mp4 = fake_mp4(4);
        assert_eq!(&mp4[4..8], b"ftyp");
        assert_eq!(&mp4[28..32], b"mdat");
        assert!(mp4.len() > 4096);
    }
}
