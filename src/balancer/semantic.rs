//! Semantic routing's vector index (pure): each distinct target description as a vector,
//! searched exactly (a plugin has a handful of targets, so an ANN index would only add
//! error) for the one nearest to the prompt's vector.
//!
//! Distances, smaller = closer; a description matches when its distance is at most
//! `vectordb.threshold` (so a higher threshold is more permissive, as in Kong):
//! - `cosine`: 1 − cos(a, b), in [0, 2] (what RediSearch's COSINE metric reports);
//! - `euclidean`: ‖a − b‖ (L2, not squared), in [0, 2] for unit vectors.
//!
//! No description within the threshold → the `CATCHALL` target(s).

use serde::Deserialize;
use serde_json::Value;

use crate::llm::body::BodyView;

/// The description that marks the fallback target(s).
pub const CATCHALL: &str = "CATCHALL";

/// `vectordb.distance_metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Cosine,
    Euclidean,
}

impl Metric {
    /// Kong's name for the metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Euclidean => "euclidean",
        }
    }

    /// The distance between `a` and `b`; None when their lengths differ, or for cosine when
    /// one is all zeros (no direction to compare).
    pub fn distance(self, a: &[f32], b: &[f32]) -> Option<f64> {
        if a.len() != b.len() || a.is_empty() {
            return None;
        }
        let pairs = a.iter().zip(b).map(|(x, y)| (f64::from(*x), f64::from(*y)));
        let d = match self {
            Metric::Cosine => {
                let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
                for (x, y) in pairs {
                    dot += x * y;
                    na += x * x;
                    nb += y * y;
                }
                if na == 0.0 || nb == 0.0 {
                    return None;
                }
                1.0 - (dot / (na.sqrt() * nb.sqrt())).clamp(-1.0, 1.0)
            }
            Metric::Euclidean => pairs.map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt(),
        };
        d.is_finite().then_some(d)
    }
}

/// The targets grouped by description: each distinct description (trimmed, not CATCHALL)
/// with the targets sharing it, in first-seen order, and the CATCHALL targets.
pub fn group(descriptions: &[Option<&str>]) -> (Vec<(String, Vec<usize>)>, Vec<usize>) {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut catchall = Vec::new();
    for (i, d) in descriptions.iter().enumerate() {
        let Some(d) = d.map(str::trim).filter(|d| !d.is_empty()) else {
            continue;
        };
        if d == CATCHALL {
            catchall.push(i);
        } else if let Some(g) = groups.iter_mut().find(|(g, _)| g == d) {
            g.1.push(i);
        } else {
            groups.push((d.to_string(), vec![i]));
        }
    }
    (groups, catchall)
}

/// One text a group of targets is known by (its description, or one of its utterances),
/// its vector and the targets sharing it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The group's description.
    pub description: String,
    /// The text matched: the description, or an utterance.
    pub text: String,
    pub vector: Vec<f32>,
    pub targets: Vec<usize>,
}

/// The index of one plugin's descriptions.
#[derive(Debug, Clone)]
pub struct Index {
    pub metric: Metric,
    /// None: the nearest description always matches.
    pub threshold: Option<f64>,
    pub entries: Vec<Entry>,
}

/// The result of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// The nearest entry and its distance (None when nothing is comparable).
    pub nearest: Option<(usize, f64)>,
    /// The nearest entry is within the threshold.
    pub matched: bool,
}

impl Index {
    /// The entry nearest to `query`, and whether it is within the threshold. Ties go to the
    /// first description (config order), so a pick is deterministic.
    pub fn search(&self, query: &[f32]) -> Search {
        let mut nearest: Option<(usize, f64)> = None;
        for (i, e) in self.entries.iter().enumerate() {
            if let Some(d) = self.metric.distance(query, &e.vector) {
                if nearest.map(|(_, best)| d < best).unwrap_or(true) {
                    nearest = Some((i, d));
                }
            }
        }
        let matched = match (nearest, self.threshold) {
            (Some(_), None) => true,
            (Some((_, d)), Some(t)) => d <= t,
            (None, _) => false,
        };
        Search { nearest, matched }
    }
}

/// The text semantic routing embeds for a request, by the body's shape: chat `messages` →
/// the last user message's text; Responses `input` → the string, or the last user item's
/// text; completions `prompt` → the prompt (an array of prompts joined by newlines).
/// Text parts of multi-part contents are joined by newlines; other parts (images, audio)
/// are ignored. None when there is no text.
pub fn prompt_text(body: &BodyView<'_>) -> Option<String> {
    let parse = |k: &str| {
        body.raw(k)
            .and_then(|r| serde_json::from_str::<Value>(r).ok())
    };
    let text = if let Some(Value::Array(messages)) = parse("messages") {
        messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .and_then(|m| m.get("content"))
            .and_then(content_text)
    } else if let Some(input) = parse("input") {
        match &input {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => items
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                .and_then(|m| m.get("content"))
                .and_then(content_text),
            _ => None,
        }
    } else {
        match parse("prompt") {
            Some(Value::String(s)) => Some(s),
            Some(Value::Array(ps)) => {
                let parts: Vec<&str> = ps.iter().filter_map(Value::as_str).collect();
                (!parts.is_empty()).then(|| parts.join("\n"))
            }
            _ => None,
        }
    };
    text.filter(|t| !t.trim().is_empty())
}

/// A message content's text: the string, or its text parts (`text`, `input_text`) joined.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|p| {
                    matches!(
                        p.get("type").and_then(Value::as_str),
                        Some("text" | "input_text")
                    )
                })
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn cosine_and_euclidean_distances() {
        let c = Metric::Cosine;
        assert!(close(c.distance(&[1.0, 0.0], &[2.0, 0.0]).unwrap(), 0.0));
        assert!(close(c.distance(&[1.0, 0.0], &[0.0, 3.0]).unwrap(), 1.0));
        assert!(close(c.distance(&[1.0, 0.0], &[-1.0, 0.0]).unwrap(), 2.0));
        assert_eq!(c.distance(&[0.0, 0.0], &[1.0, 0.0]), None);
        assert_eq!(c.distance(&[1.0], &[1.0, 0.0]), None);
        let e = Metric::Euclidean;
        assert!(close(e.distance(&[0.0, 0.0], &[3.0, 4.0]).unwrap(), 5.0));
        assert!(close(e.distance(&[1.0, 0.0], &[1.0, 0.0]).unwrap(), 0.0));
        assert_eq!(e.distance(&[], &[]), None);
        assert_eq!(e.distance(&[f32::NAN], &[1.0]), None);
    }

    #[test]
    fn groups_share_descriptions_and_collect_catchall() {
        let (g, c) = group(&[
            Some("code"),
            Some(" code "),
            Some("CATCHALL"),
            None,
            Some("math"),
            Some(""),
        ]);
        assert_eq!(
            g,
            vec![("code".into(), vec![0, 1]), ("math".into(), vec![4])]
        );
        assert_eq!(c, vec![2]);
    }

    fn index(threshold: Option<f64>, metric: Metric) -> Index {
        Index {
            metric,
            threshold,
            entries: vec![
                Entry {
                    description: "x".into(),
                    text: "x".into(),
                    vector: vec![1.0, 0.0],
                    targets: vec![0],
                },
                Entry {
                    description: "y".into(),
                    text: "y".into(),
                    vector: vec![0.0, 1.0],
                    targets: vec![1, 2],
                },
            ],
        }
    }

    #[test]
    fn nearest_within_threshold_matches() {
        let ix = index(Some(0.2), Metric::Cosine);
        let s = ix.search(&[0.1, 1.0]);
        assert_eq!(s.nearest.map(|n| n.0), Some(1));
        assert!(s.matched);
        // Halfway between: distance 1 − cos 45° ≈ 0.29 > 0.2; the first entry wins the tie.
        let s = ix.search(&[1.0, 1.0]);
        assert_eq!(s.nearest.map(|n| n.0), Some(0));
        assert!(!s.matched);
        // A higher threshold is more permissive.
        assert!(index(Some(0.3), Metric::Cosine).search(&[1.0, 1.0]).matched);
        assert!(index(None, Metric::Cosine).search(&[1.0, 1.0]).matched);
        // Nothing comparable (wrong length) never matches.
        let s = ix.search(&[1.0, 0.0, 0.0]);
        assert_eq!(
            s,
            Search {
                nearest: None,
                matched: false
            }
        );
    }

    #[test]
    fn euclidean_threshold_is_a_distance() {
        let ix = index(Some(0.5), Metric::Euclidean);
        let s = ix.search(&[0.9, 0.1]);
        assert_eq!(s.nearest.map(|n| n.0), Some(0));
        assert!(s.matched);
        assert!(!ix.search(&[0.5, 0.5]).matched);
    }

    fn text(body: &str) -> Option<String> {
        prompt_text(&BodyView::parse(body.as_bytes()).unwrap())
    }

    #[test]
    fn prompt_text_by_body_shape() {
        assert_eq!(
            text(
                r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"first"},
                {"role":"assistant","content":"a"},{"role":"user","content":[{"type":"text","text":"last"},
                {"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"part"}]}]}"#
            ),
            Some("last\npart".into())
        );
        assert_eq!(text(r#"{"input":"hello"}"#), Some("hello".into()));
        assert_eq!(
            text(
                r#"{"input":[{"role":"user","content":[{"type":"input_text","text":"q1"}]},
                {"type":"function_call_output","output":"x"},{"role":"user","content":"q2"}]}"#
            ),
            Some("q2".into())
        );
        assert_eq!(text(r#"{"prompt":"p"}"#), Some("p".into()));
        assert_eq!(text(r#"{"prompt":["a","b"]}"#), Some("a\nb".into()));
        assert_eq!(
            text(r#"{"messages":[{"role":"system","content":"s"}]}"#),
            None
        );
        assert_eq!(
            text(r#"{"messages":[{"role":"user","content":"  "}]}"#),
            None
        );
        assert_eq!(text(r#"{"model":"m"}"#), None);
        assert_eq!(text(r#"{"messages":"not an array"}"#), None);
    }
}
