//! Deterministic embeddings: the same text always gets the same unit vector.

use http::Response;
use serde::Serialize;
use serde_json::Value;

use crate::body::MockBody;
use crate::server::{json_response, Ctx};

/// Dimension when the request gives none.
const DEFAULT_DIMENSIONS: usize = 8;
/// Cap so a typo cannot make one request allocate gigabytes.
const MAX_DIMENSIONS: usize = 65_536;

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

/// `POST .../embeddings`.
pub(crate) fn embeddings(ctx: &Ctx<'_>) -> Response<MockBody> {
    let dimensions = ctx
        .body
        .get("dimensions")
        .and_then(Value::as_u64)
        .filter(|d| *d > 0)
        .map_or(DEFAULT_DIMENSIONS, |d| {
            usize::try_from(d).map_or(MAX_DIMENSIONS, |d| d.min(MAX_DIMENSIONS))
        });
    let base64 = ctx.body.get("encoding_format").and_then(Value::as_str) == Some("base64");

    let inputs: Vec<Vec<u8>> = match ctx.body.get("input") {
        Some(Value::String(text)) => vec![text.as_bytes().to_vec()],
        // A flat array of numbers is a single token array.
        Some(Value::Array(items)) if items.iter().all(Value::is_number) && !items.is_empty() => {
            vec![Value::Array(items.clone()).to_string().into_bytes()]
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => text.as_bytes().to_vec(),
                other => other.to_string().into_bytes(),
            })
            .collect(),
        _ => Vec::new(),
    };

    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = if lexical(ctx.model) {
                embed_words(input, dimensions)
            } else {
                embed(input, dimensions)
            };
            Embedding {
                object: "embedding",
                index,
                embedding: if base64 {
                    Vector::Base64(base64_f32(&vector))
                } else {
                    Vector::Float(vector)
                },
            }
        })
        .collect();
    let body = EmbeddingList {
        object: "list",
        data,
        model: ctx.model,
        usage: Usage {
            prompt_tokens: ctx.prompt_tokens,
            total_tokens: ctx.prompt_tokens,
        },
    };
    json_response(ctx.status(), &body)
}

/// Topics the mock's embeddings know, each with the word stems that signal it. A text's
/// vector is mostly its topic counts (topic `i` on dimension `i mod dimensions`) plus a
/// little hash noise (on the other dimensions when there are more dimensions than topics),
/// so texts on one topic are close (cosine ≈ 0.95) and texts on different or no topics are
/// far (cosine ≈ 0), deterministically. Enough to exercise semantic routing without a model.
const TOPICS: &[&[&str]] = &[
    // programming
    &[
        "program",
        "code",
        "coding",
        "python",
        "rust",
        "javascript",
        "typescript",
        "java",
        "function",
        "bug",
        "debug",
        "compil",
        "software",
        "algorithm",
        "variable",
        "recursi",
        "regex",
        "sql",
        "api",
        "loop",
        "developer",
        "refactor",
        "struct",
        "class",
    ],
    // mathematics
    &[
        "math",
        "calculus",
        "derivative",
        "integral",
        "equation",
        "algebra",
        "geometry",
        "theorem",
        "proof",
        "matrix",
        "matrices",
        "polynomial",
        "probability",
        "statistic",
        "arithmetic",
        "trigonometr",
        "limit",
        "logarithm",
    ],
    // geography
    &[
        "capital",
        "country",
        "countries",
        "city",
        "cities",
        "continent",
        "river",
        "mountain",
        "argentin",
        "france",
        "brazil",
        "population",
        "geograph",
        "ocean",
    ],
    // cooking
    &[
        "recipe",
        "cook",
        "bake",
        "baking",
        "ingredient",
        "kitchen",
        "soup",
        "dish",
    ],
    // health
    &[
        "health", "doctor", "medicine", "symptom", "disease", "vaccine", "diet",
    ],
    // finance
    &[
        "money", "financ", "invest", "stock", "bank", "loan", "budget", "tax",
    ],
];

/// Weight of the hash noise relative to the (unit) topic part.
const NOISE: f64 = 0.2;

/// Whether `word` (lower case) signals `stem`: equal, or, for stems of four letters or
/// more, a word starting with it ("programming" → "program").
fn signals(word: &str, stem: &str) -> bool {
    word == stem || (stem.len() >= 4 && word.starts_with(stem))
}

/// The topic counts of a text, one per [`TOPICS`] entry.
fn topic_counts(input: &[u8]) -> Vec<f64> {
    let text = String::from_utf8_lossy(input).to_lowercase();
    let mut counts = vec![0.0; TOPICS.len()];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        for (i, stems) in TOPICS.iter().enumerate() {
            if stems.iter().any(|s| signals(word, s)) {
                counts[i] += 1.0;
            }
        }
    }
    counts
}

/// A deterministic unit vector for `input`: its topics (see [`TOPICS`]) plus hash noise
/// seeded from its FNV-1a hash; texts without topic words are pure noise.
pub(crate) fn embed(input: &[u8], dimensions: usize) -> Vec<f32> {
    let mut noise = noise(input, dimensions);
    if dimensions > TOPICS.len() {
        // Topic dimensions stay noise-free: texts on different topics are then orthogonal
        // up to the noise's own (small) overlap.
        noise[..TOPICS.len()].iter_mut().for_each(|n| *n = 0.0);
    }
    let mut vector = unit(noise);
    let mut topics = vec![0.0; dimensions];
    for (i, c) in topic_counts(input).into_iter().enumerate() {
        if let Some(slot) = topics.get_mut(i % dimensions.max(1)) {
            *slot += c;
        }
    }
    if topics.iter().any(|t| *t != 0.0) {
        let topics = unit(topics);
        vector
            .iter_mut()
            .zip(topics)
            .for_each(|(v, t)| *v = t + NOISE * *v);
    }
    unit(vector).into_iter().map(|v| v as f32).collect()
}

/// Whether `model` names the lexical model: any model whose name contains `words`
/// (`mock-words`, say).
fn lexical(model: &str) -> bool {
    model.contains("words")
}

/// Words a lexical model leaves out: they say nothing of a text's subject.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "with", "by", "at", "from", "is",
    "are", "was", "be", "it", "this", "that", "these", "my", "me", "i", "you", "your", "we", "our",
    "do", "does", "how", "what", "why", "can", "could", "should", "would", "will", "please",
    "help", "about", "into", "as", "if", "so", "some", "any", "give", "tell", "show", "make",
    "get", "there", "their", "them", "its", "which", "when", "where", "who", "need", "want",
    "like", "using", "use", "one", "all", "not", "no", "but",
];

/// A word's crude stem: the plural or verb ending a lexical model would fold.
fn stem(word: &str) -> &str {
    for suffix in ["ing", "ies", "ed", "es", "s"] {
        if let Some(s) = word.strip_suffix(suffix) {
            if s.len() >= 3 {
                return s;
            }
        }
    }
    word
}

/// A lexical model's unit vector: every word (lower case, stemmed, stopwords left out)
/// hashed to a signed dimension. Texts are as close as the words they share, the way a
/// bag-of-words model (or a weak sentence model) sees them: a one-line description
/// matches only prompts that use its words, which is what example utterances fix.
/// A text with no words left is pure noise.
pub(crate) fn embed_words(input: &[u8], dimensions: usize) -> Vec<f32> {
    let text = String::from_utf8_lossy(input).to_lowercase();
    let mut v = vec![0.0; dimensions];
    let mut any = false;
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(w))
    {
        let h = stem(word).bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        if let Some(slot) = v.get_mut((h % dimensions.max(1) as u64) as usize) {
            *slot += if h >> 63 == 0 { 1.0 } else { -1.0 };
            any = true;
        }
    }
    if !any {
        return unit(noise(input, dimensions))
            .into_iter()
            .map(|x| x as f32)
            .collect();
    }
    unit(v).into_iter().map(|x| x as f32).collect()
}

fn unit(mut v: Vec<f64>) -> Vec<f64> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Values in [-1, 1] from splitmix64 seeded with the FNV-1a hash of `input`.
fn noise(input: &[u8], dimensions: usize) -> Vec<f64> {
    let mut state = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    (0..dimensions)
        .map(|_| {
            // splitmix64: cheap, well-mixed, and stable across platforms.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

/// Standard base64 (with padding) of the little-endian `f32` bytes, which is
/// what OpenAI returns for `encoding_format: "base64"`.
pub(crate) fn base64_f32(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64_encode(&bytes)
}

pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64_encode(input.as_bytes()), want);
        }
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embed(b"hello", 16);
        assert_eq!(a, embed(b"hello", 16));
        assert_ne!(a, embed(b"hellp", 16));
        assert_eq!(a.len(), 16);
        assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
        let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        assert_eq!(embed(b"", 4).len(), 4);
        assert!(embed(b"code", 0).is_empty());
    }

    #[test]
    fn the_lexical_model_sees_shared_words() {
        let cos = |a: &str, b: &str| {
            let (a, b) = (
                embed_words(a.as_bytes(), 256),
                embed_words(b.as_bytes(), 256),
            );
            a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
        };
        // Two of three words shared: 2 / (√3 · √2) ≈ 0.82.
        assert!(cos("fix the bugs in my code", "a bug in this code") > 0.8);
        assert!(cos("fix the bugs in my code", "solve an equation") < 0.2);
        assert!(lexical("mock-words") && !lexical("text-embedding-3-small"));
        assert_eq!(embed_words(b"the", 8).len(), 8);
    }

    fn cosine(a: &str, b: &str, dims: usize) -> f32 {
        let (a, b) = (embed(a.as_bytes(), dims), embed(b.as_bytes(), dims));
        a.iter().zip(&b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn texts_on_one_topic_are_close_and_others_far() {
        let code = "Expert in programming, software and code";
        let math = "Expert in mathematics, calculus and algebra";
        for dims in [8, 64, 1536] {
            let q = "How do I reverse a linked list in Python? My function has a bug.";
            assert!(
                cosine(q, code, dims) > 0.8,
                "{dims}: {}",
                cosine(q, code, dims)
            );
            assert!(
                cosine(q, math, dims) < 0.2,
                "{dims}: {}",
                cosine(q, math, dims)
            );
            let q = "What is the derivative of x^2 sin(x)? Show the calculus.";
            assert!(
                cosine(q, math, dims) > 0.8,
                "{dims}: {}",
                cosine(q, math, dims)
            );
            assert!(
                cosine(q, code, dims) < 0.2,
                "{dims}: {}",
                cosine(q, code, dims)
            );
            let q = "What is the capital of Argentina?";
            assert!(
                cosine(q, code, dims) < 0.2,
                "{dims}: {}",
                cosine(q, code, dims)
            );
            assert!(
                cosine(q, math, dims) < 0.2,
                "{dims}: {}",
                cosine(q, math, dims)
            );
        }
    }
}
