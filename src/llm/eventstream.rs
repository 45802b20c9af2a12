//! The AWS event-stream binary framing (`application/vnd.amazon.eventstream`), in which
//! Bedrock's ConverseStream answers: messages split out of arbitrary TCP chunks, both CRCs
//! checked, sizes bounded. Layout of one message (all integers big-endian):
//! `total_len u32 · headers_len u32 · prelude_crc u32 · headers · payload · message_crc u32`,
//! where the prelude CRC covers the first 8 bytes and the message CRC everything before it.

/// Largest message accepted; AWS caps event-stream messages at 16 MiB, so a bigger length
/// means the stream is broken (and must not make the gateway buffer it).
pub const MAX_MESSAGE: usize = 16 << 20;

/// The prelude (two lengths and their CRC).
const PRELUDE: usize = 12;
/// Prelude plus the trailing message CRC: the smallest possible message.
const MIN_MESSAGE: usize = PRELUDE + 4;

/// A header value, one variant per wire type (0..=9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 (true) and 1 (false): no value bytes.
    Bool(bool),
    /// Type 2.
    Byte(i8),
    /// Type 3.
    Short(i16),
    /// Type 4.
    Int(i32),
    /// Type 5.
    Long(i64),
    /// Type 6: u16 length, then the bytes.
    Bytes(Vec<u8>),
    /// Type 7: u16 length, then UTF-8.
    String(String),
    /// Type 8: milliseconds since the Unix epoch.
    Timestamp(i64),
    /// Type 9: 16 bytes.
    Uuid([u8; 16]),
}

/// One decoded message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Vec<u8>,
}

impl Message {
    /// A string header (`:event-type`, `:message-type`, …).
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }
}

/// Why a stream cannot be decoded any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("event-stream message of {0} bytes is larger than the 16 MiB limit")]
    TooLarge(usize),
    #[error("event-stream message length {0} is smaller than its fixed parts")]
    TooSmall(usize),
    #[error("event-stream prelude checksum mismatch")]
    PreludeCrc,
    #[error("event-stream message checksum mismatch")]
    MessageCrc,
    #[error("event-stream headers are malformed: {0}")]
    Headers(&'static str),
}

/// Incremental decoder: feed chunks as they come; complete messages come out, an
/// unfinished one waits for the rest. After an error it decodes nothing more.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes of a message not yet complete (never more than one message's worth).
    pending: Vec<u8>,
    failed: bool,
}

impl Decoder {
    /// Decodes the messages completed by `bytes` into `out`. Messages before a broken one
    /// are still delivered.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Message>) -> Result<(), FrameError> {
        if self.failed {
            return Ok(());
        }
        let result = if self.pending.is_empty() {
            // Fast path: decode in place, keep only an unfinished tail.
            let r = decode_all(bytes, out);
            if let Ok(used) = r {
                self.pending.extend_from_slice(&bytes[used..]);
            }
            r
        } else {
            self.pending.extend_from_slice(bytes);
            let r = decode_all(&self.pending, out);
            if let Ok(used) = r {
                self.pending.drain(..used);
            }
            r
        };
        result.map(|_| ()).inspect_err(|_| {
            self.failed = true;
            self.pending = Vec::new();
        })
    }

    /// Bytes of an unfinished message are waiting (at the end of the body: a cut stream).
    pub fn has_partial(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Decodes every complete message at the start of `buf`; returns the bytes used.
fn decode_all(buf: &[u8], out: &mut Vec<Message>) -> Result<usize, FrameError> {
    let mut used = 0;
    while let Some((m, len)) = decode_one(&buf[used..])? {
        out.push(m);
        used += len;
    }
    Ok(used)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// One message from the start of `buf`, with its length; None until it is all there.
/// The prelude is checked as soon as it has arrived, so a bogus length fails at once
/// instead of making the decoder wait for (and hold) gigabytes.
pub fn decode_one(buf: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
    if buf.len() < PRELUDE {
        return Ok(None);
    }
    let total = be_u32(&buf[0..4]) as usize;
    let headers_len = be_u32(&buf[4..8]) as usize;
    if crc32fast::hash(&buf[..8]) != be_u32(&buf[8..12]) {
        return Err(FrameError::PreludeCrc);
    }
    if total > MAX_MESSAGE {
        return Err(FrameError::TooLarge(total));
    }
    if total < MIN_MESSAGE {
        return Err(FrameError::TooSmall(total));
    }
    if headers_len > total - MIN_MESSAGE {
        return Err(FrameError::Headers("headers are longer than the message"));
    }
    if buf.len() < total {
        return Ok(None);
    }
    if crc32fast::hash(&buf[..total - 4]) != be_u32(&buf[total - 4..total]) {
        return Err(FrameError::MessageCrc);
    }
    let headers = decode_headers(&buf[PRELUDE..PRELUDE + headers_len])?;
    let payload = buf[PRELUDE + headers_len..total - 4].to_vec();
    Ok(Some((Message { headers, payload }, total)))
}

/// Takes `n` bytes off the front of `b`.
fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], FrameError> {
    if b.len() < n {
        return Err(FrameError::Headers("a header runs past the header block"));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn take_array<const N: usize>(b: &mut &[u8]) -> Result<[u8; N], FrameError> {
    let mut a = [0u8; N];
    a.copy_from_slice(take(b, N)?);
    Ok(a)
}

fn decode_headers(mut b: &[u8]) -> Result<Vec<(String, HeaderValue)>, FrameError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let name_len = take(&mut b, 1)?[0] as usize;
        if name_len == 0 {
            return Err(FrameError::Headers("empty header name"));
        }
        let name = std::str::from_utf8(take(&mut b, name_len)?)
            .map_err(|_| FrameError::Headers("header name is not UTF-8"))?
            .to_string();
        let kind = take(&mut b, 1)?[0];
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(take_array(&mut b)?)),
            3 => HeaderValue::Short(i16::from_be_bytes(take_array(&mut b)?)),
            4 => HeaderValue::Int(i32::from_be_bytes(take_array(&mut b)?)),
            5 => HeaderValue::Long(i64::from_be_bytes(take_array(&mut b)?)),
            6 | 7 => {
                let len = u16::from_be_bytes(take_array(&mut b)?) as usize;
                let bytes = take(&mut b, len)?;
                if kind == 6 {
                    HeaderValue::Bytes(bytes.to_vec())
                } else {
                    HeaderValue::String(
                        std::str::from_utf8(bytes)
                            .map_err(|_| FrameError::Headers("string header is not UTF-8"))?
                            .to_string(),
                    )
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(take_array(&mut b)?)),
            9 => HeaderValue::Uuid(take_array(&mut b)?),
            _ => return Err(FrameError::Headers("unknown header value type")),
        };
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// From the AWS event-stream test suite (`encoded/positive/all_headers`): one header
    /// of every type, so every decoding branch is checked against bytes AWS published.
    const ALL_HEADERS: &str = "000000cc000000af0fae64ca0a6576656e742d74797065040000a00c0c636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0a626f6f6c2066616c73650109626f6f6c207472756500046279746502cf08627974652062756606001449276d2061206c6974746c6520746561706f74210974696d657374616d70080000000000845fed05696e74313603002a05696e7436340500000000028757b20475756964090102030405060708090a0b0c0d0e0f107b27666f6f273a27626172277daba5f10c";
    /// `encoded/positive/one_str_header`.
    const ONE_STR_HEADER: &str = "0000003d0000002007fd83960c636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e7b27666f6f273a27626172277d8d9c08b1";

    fn all(bytes: &[u8]) -> Result<Vec<Message>, FrameError> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        d.push(bytes, &mut out)?;
        assert!(!d.has_partial());
        Ok(out)
    }

    #[test]
    fn decodes_the_published_vectors() {
        let m = all(&hex(ALL_HEADERS)).unwrap();
        assert_eq!(m.len(), 1);
        let expect = vec![
            ("event-type".to_string(), HeaderValue::Int(40972)),
            (
                "content-type".into(),
                HeaderValue::String("application/json".into()),
            ),
            ("bool false".into(), HeaderValue::Bool(false)),
            ("bool true".into(), HeaderValue::Bool(true)),
            ("byte".into(), HeaderValue::Byte(-49)),
            (
                "byte buf".into(),
                HeaderValue::Bytes(b"I'm a little teapot!".to_vec()),
            ),
            ("timestamp".into(), HeaderValue::Timestamp(8675309)),
            ("int16".into(), HeaderValue::Short(42)),
            ("int64".into(), HeaderValue::Long(42424242)),
            (
                "uuid".into(),
                HeaderValue::Uuid([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
            ),
        ];
        assert_eq!(m[0].headers, expect);
        assert_eq!(m[0].payload, b"{'foo':'bar'}");
        let m = all(&hex(ONE_STR_HEADER)).unwrap();
        assert_eq!(m[0].header_str("content-type"), Some("application/json"));
    }

    #[test]
    fn messages_split_anywhere_come_out_whole() {
        let one = hex(ONE_STR_HEADER);
        let two = hex(ALL_HEADERS);
        let stream = [one.clone(), two.clone(), one].concat();
        for step in 1..stream.len() {
            let mut d = Decoder::default();
            let mut out = Vec::new();
            for c in stream.chunks(step) {
                d.push(c, &mut out).unwrap();
            }
            assert_eq!(out.len(), 3, "step {step}");
            assert_eq!(out[1].headers.len(), 10);
            assert!(!d.has_partial());
        }
        let mut d = Decoder::default();
        let mut out = Vec::new();
        d.push(&two[..50], &mut out).unwrap();
        assert!(out.is_empty() && d.has_partial(), "a cut message waits");
    }

    #[test]
    fn corruption_and_bad_lengths_are_errors() {
        let good = hex(ONE_STR_HEADER);
        let mut bad_payload = good.clone();
        bad_payload[50] ^= 1;
        assert_eq!(all(&bad_payload), Err(FrameError::MessageCrc));
        let mut bad_prelude = good.clone();
        bad_prelude[3] ^= 1;
        assert_eq!(all(&bad_prelude), Err(FrameError::PreludeCrc));

        // A huge length with a valid prelude CRC fails on the prelude alone.
        let mut huge = (MAX_MESSAGE as u32 + 1).to_be_bytes().to_vec();
        huge.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32fast::hash(&huge);
        huge.extend_from_slice(&crc.to_be_bytes());
        let mut d = Decoder::default();
        let mut out = Vec::new();
        assert!(matches!(
            d.push(&huge, &mut out),
            Err(FrameError::TooLarge(_))
        ));
        // Once broken, the rest is ignored rather than misread.
        assert_eq!(d.push(&good, &mut out), Ok(()));
        assert!(out.is_empty() && !d.has_partial());

        // Messages before a broken one are still delivered.
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let r = d.push(&[good.clone(), bad_payload].concat(), &mut out);
        assert_eq!((r, out.len()), (Err(FrameError::MessageCrc), 1));
    }

    #[test]
    fn malformed_headers_never_panic() {
        // A header block of every length cut from a real one, re-framed with valid CRCs.
        let all_headers = hex(ALL_HEADERS);
        let block = &all_headers[12..12 + 175];
        for cut in 0..block.len() {
            let mut msg = Vec::new();
            let total = (16 + cut) as u32;
            msg.extend_from_slice(&total.to_be_bytes());
            msg.extend_from_slice(&(cut as u32).to_be_bytes());
            let crc = crc32fast::hash(&msg);
            msg.extend_from_slice(&crc.to_be_bytes());
            msg.extend_from_slice(&block[..cut]);
            let crc = crc32fast::hash(&msg);
            msg.extend_from_slice(&crc.to_be_bytes());
            let _ = all(&msg);
        }
        for junk in [
            &[0u8; 0][..],
            &[0xff; 12],
            &[0; 40],
            b"not an event stream at all",
        ] {
            let _ = all(junk);
        }
    }
}
