//! Content codings of upstream answers the gateway reads (usage, translation): gzip and
//! deflate are decoded, bounded in size, for upstreams that compress whatever
//! `Accept-Encoding` said. Bytes the gateway only passes along stay as they came.

use std::io::{Read, Write};

/// A content coding the gateway can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// `deflate`: zlib-wrapped per RFC 9110, though some servers send raw deflate.
    Deflate,
}

/// Why an encoded body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("the upstream answered with content-encoding '{0}', which tollgate cannot decode")]
    Unsupported(String),
    #[error("the upstream's {0:?} body is corrupt")]
    Corrupt(Coding),
    #[error("the upstream's decoded body is larger than {0} bytes")]
    TooLarge(usize),
}

/// The coding a `Content-Encoding` value names: None for identity (or no header).
pub fn coding(content_encoding: Option<&str>) -> Result<Option<Coding>, DecodeError> {
    let Some(v) = content_encoding.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match v.to_ascii_lowercase().as_str() {
        "identity" => Ok(None),
        "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
        "deflate" => Ok(Some(Coding::Deflate)),
        other => Err(DecodeError::Unsupported(other.to_string())),
    }
}

/// A whole encoded body decoded, at most `limit` bytes of it.
pub fn decode(coding: Coding, body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let read = |r: &mut dyn Read| -> Result<Vec<u8>, std::io::Error> {
        let mut out = Vec::new();
        r.take(limit as u64 + 1).read_to_end(&mut out)?;
        Ok(out)
    };
    let out = match coding {
        Coding::Gzip => read(&mut flate2::read::MultiGzDecoder::new(body)),
        Coding::Deflate => read(&mut flate2::read::ZlibDecoder::new(body))
            .or_else(|_| read(&mut flate2::read::DeflateDecoder::new(body))),
    }
    .map_err(|_| DecodeError::Corrupt(coding))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge(limit));
    }
    Ok(out)
}

/// An encoded stream decoded as its chunks arrive (SSE the gateway observes or rewrites).
pub struct StreamDecoder {
    inner: Inner,
    failed: bool,
}

enum Inner {
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
}

impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecoder").finish_non_exhaustive()
    }
}

impl StreamDecoder {
    /// A decoder for `coding`.
    pub fn new(coding: Coding) -> Self {
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(flate2::write::MultiGzDecoder::new(Vec::new())),
            Coding::Deflate => Inner::Deflate(flate2::write::ZlibDecoder::new(Vec::new())),
        };
        StreamDecoder {
            inner,
            failed: false,
        }
    }

    /// The decoded bytes of one chunk (possibly none yet); Err once the stream is corrupt.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, DecodeError> {
        if self.failed {
            return Err(self.corrupt());
        }
        let written = match &mut self.inner {
            Inner::Gzip(d) => d.write_all(chunk).and_then(|_| d.flush()),
            Inner::Deflate(d) => d.write_all(chunk).and_then(|_| d.flush()),
        };
        if written.is_err() {
            self.failed = true;
            return Err(self.corrupt());
        }
        Ok(match &mut self.inner {
            Inner::Gzip(d) => std::mem::take(d.get_mut()),
            Inner::Deflate(d) => std::mem::take(d.get_mut()),
        })
    }

    fn corrupt(&self) -> DecodeError {
        DecodeError::Corrupt(match self.inner {
            Inner::Gzip(_) => Coding::Gzip,
            Inner::Deflate(_) => Coding::Deflate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn codings_are_named_and_decoded() {
        assert_eq!(coding(None), Ok(None));
        assert_eq!(coding(Some(" Identity ")), Ok(None));
        assert_eq!(coding(Some("GZIP")), Ok(Some(Coding::Gzip)));
        assert_eq!(coding(Some("deflate")), Ok(Some(Coding::Deflate)));
        assert_eq!(
            coding(Some("br")),
            Err(DecodeError::Unsupported("br".into()))
        );
        let body = br#"{"usage":{"prompt_tokens":1}}"#;
        assert_eq!(decode(Coding::Gzip, &gzip(body), 1 << 20).unwrap(), body);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(body).unwrap();
        assert_eq!(
            decode(Coding::Deflate, &z.finish().unwrap(), 1 << 20).unwrap(),
            body
        );
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(body).unwrap();
        assert_eq!(
            decode(Coding::Deflate, &raw.finish().unwrap(), 1 << 20).unwrap(),
            body
        );
        assert_eq!(
            decode(Coding::Gzip, b"not gzip", 1 << 20),
            Err(DecodeError::Corrupt(Coding::Gzip))
        );
        let bomb = gzip(&vec![b'a'; 10_000]);
        assert_eq!(
            decode(Coding::Gzip, &bomb, 100),
            Err(DecodeError::TooLarge(100))
        );
    }

    #[test]
    fn streams_decode_chunk_by_chunk() {
        let text = b"data: {\"a\":1}\n\ndata: [DONE]\n\n".repeat(50);
        let z = gzip(&text);
        for split in [1, 7, z.len() / 2, z.len() - 1] {
            let mut d = StreamDecoder::new(Coding::Gzip);
            let mut out = d.push(&z[..split]).unwrap();
            out.extend(d.push(&z[split..]).unwrap());
            assert_eq!(out, text, "split at {split}");
        }
        let mut d = StreamDecoder::new(Coding::Gzip);
        assert!(d.push(b"garbage that is not gzip").is_err());
        assert!(d.push(b"more").is_err());
    }
}
