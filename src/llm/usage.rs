//! Token usage as the log record and cost accounting need it.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::llm::body::JsonStr;

/// Token counts of one exchange (OpenAI names; Responses' input/output map onto them).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Billed search units (Cohere's rerank), which are not tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_units: Option<u64>,
}

/// A token count as providers send it; anything but a non-negative integer reads as absent
/// (as it did when usage was read from a JSON tree), never as a parse failure.
#[derive(Default, Clone, Copy)]
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Count, E> {
                Ok(Count(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_unit<E>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_none<E>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Count, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Count, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Count, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `*_tokens_details`: only an object has counts in it.
#[derive(Default)]
struct Details {
    cached_tokens: Count,
    reasoning_tokens: Count,
}

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<Details>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("token details")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out = Details::default();
                while let Some(k) = a.next_key::<JsonStr>()? {
                    match k.0.as_ref() {
                        "cached_tokens" => out.cached_tokens = a.next_value()?,
                        "reasoning_tokens" => out.reasoning_tokens = a.next_value()?,
                        _ => {
                            a.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Some(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(None)
            }
        }
        Ok(d.deserialize_any(V)?.unwrap_or_default())
    }
}

/// A `usage` object as it arrives, read without building a JSON tree.
#[derive(Default)]
pub struct UsageWire {
    prompt_tokens: Count,
    input_tokens: Count,
    completion_tokens: Count,
    output_tokens: Count,
    total_tokens: Count,
    prompt_details: Option<Details>,
    completion_details: Option<Details>,
    /// The object had the input/output_tokens_details shape only.
    input_details: Option<Details>,
    output_details: Option<Details>,
    /// Whether it was an object at all.
    object: bool,
}

impl<'de> Deserialize<'de> for UsageWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UsageWire;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a usage object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<UsageWire, A::Error> {
                let mut u = UsageWire {
                    object: true,
                    ..UsageWire::default()
                };
                while let Some(k) = a.next_key::<JsonStr>()? {
                    match k.0.as_ref() {
                        "prompt_tokens" => u.prompt_tokens = a.next_value()?,
                        "input_tokens" => u.input_tokens = a.next_value()?,
                        "completion_tokens" => u.completion_tokens = a.next_value()?,
                        "output_tokens" => u.output_tokens = a.next_value()?,
                        "total_tokens" => u.total_tokens = a.next_value()?,
                        "prompt_tokens_details" => u.prompt_details = Some(a.next_value()?),
                        "input_tokens_details" => u.input_details = Some(a.next_value()?),
                        "completion_tokens_details" => u.completion_details = Some(a.next_value()?),
                        "output_tokens_details" => u.output_details = Some(a.next_value()?),
                        _ => {
                            a.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(u)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<UsageWire, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(UsageWire::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<UsageWire, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_none<E>(self) -> Result<UsageWire, E> {
                Ok(UsageWire::default())
            }
            fn visit_unit<E>(self) -> Result<UsageWire, E> {
                Ok(UsageWire::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<UsageWire, E> {
                Ok(UsageWire::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<UsageWire, E> {
                Ok(UsageWire::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<UsageWire, E> {
                Ok(UsageWire::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<UsageWire, E> {
                Ok(UsageWire::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<UsageWire, E> {
                Ok(UsageWire::default())
            }
        }
        d.deserialize_any(V)
    }
}

impl UsageWire {
    /// The usage it reports, if it has any count.
    pub fn usage(&self) -> Option<Usage> {
        if !self.object {
            return None;
        }
        let prompt = self.prompt_tokens.0.or(self.input_tokens.0);
        let completion = self.completion_tokens.0.or(self.output_tokens.0);
        if prompt.is_none() && completion.is_none() && self.total_tokens.0.is_none() {
            return None;
        }
        let prompt = prompt.unwrap_or(0);
        let completion = completion.unwrap_or(0);
        // The chat-shaped details win when both shapes are present, as before.
        let pick = |a: &Option<Details>, b: &Option<Details>, f: fn(&Details) -> Count| {
            a.as_ref().or(b.as_ref()).and_then(|d| f(d).0)
        };
        Some(Usage {
            search_units: None,
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: self.total_tokens.0.unwrap_or(prompt + completion),
            cached_tokens: pick(&self.prompt_details, &self.input_details, |d| {
                d.cached_tokens
            }),
            reasoning_tokens: pick(&self.completion_details, &self.output_details, |d| {
                d.reasoning_tokens
            }),
        })
    }
}

impl Usage {
    /// OpenAI's `usage` object (`cached_tokens` under `prompt_tokens_details` and
    /// `reasoning_tokens` under `completion_tokens_details` when known).
    pub fn openai_json(&self) -> Value {
        let mut v = serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        });
        if let Some(c) = self.cached_tokens {
            v["prompt_tokens_details"] = serde_json::json!({ "cached_tokens": c });
        }
        if let Some(r) = self.reasoning_tokens {
            v["completion_tokens_details"] = serde_json::json!({ "reasoning_tokens": r });
        }
        v
    }

    /// Reads a `usage` object in chat/completions/embeddings or Responses shape.
    pub fn from_json(u: &Value) -> Option<Usage> {
        UsageWire::deserialize(u).ok().and_then(|w| w.usage())
    }

    /// Cost with prices per 1M tokens, as Kong computes `ai.proxy.usage.cost`.
    pub fn cost(&self, input_cost: Option<f64>, output_cost: Option<f64>) -> f64 {
        (self.prompt_tokens as f64 * input_cost.unwrap_or(0.0)
            + self.completion_tokens as f64 * output_cost.unwrap_or(0.0))
            / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_and_responses_shapes() {
        let u = Usage::from_json(
            &json!({"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,
            "prompt_tokens_details":{"cached_tokens":1}}),
        );
        assert_eq!(
            u.as_ref()
                .map(|u| (u.prompt_tokens, u.total_tokens, u.cached_tokens)),
            Some((3, 7, Some(1)))
        );
        let u = Usage::from_json(&json!({"input_tokens":5,"output_tokens":2,"total_tokens":7}));
        assert_eq!(
            u.map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((5, 2))
        );
        assert_eq!(Usage::from_json(&json!({})), None);
        let u = Usage::from_json(&json!({"prompt_tokens":8})).unwrap_or_default();
        assert_eq!(u.total_tokens, 8);
    }

    #[test]
    fn odd_values_read_as_absent_not_as_errors() {
        let u = Usage::from_json(&json!({"prompt_tokens":2.5,"completion_tokens":"4",
            "total_tokens":-1,"prompt_tokens_details":null,
            "completion_tokens_details":{"reasoning_tokens":3,"x":[1,{"y":2}]},"extra":{"a":[]}}));
        assert_eq!(u, None, "no usable count at all");
        let u = Usage::from_json(&json!({"prompt_tokens":2,"completion_tokens":[1],
            "input_tokens_details":{"cached_tokens":1},"completion_tokens_details":{"reasoning_tokens":3}}))
        .unwrap_or_default();
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.total_tokens,
                u.cached_tokens,
                u.reasoning_tokens
            ),
            (2, 0, 2, Some(1), Some(3))
        );
        for v in [json!(null), json!(3), json!("x"), json!([1])] {
            assert_eq!(Usage::from_json(&v), None);
        }
        let w: UsageWire = serde_json::from_str(r#"{"prompt_tokens":1,"total_tokens":3}"#).unwrap();
        assert_eq!(
            w.usage().map(|u| (u.prompt_tokens, u.total_tokens)),
            Some((1, 3))
        );
    }

    #[test]
    fn cost_per_million() {
        let u = Usage {
            prompt_tokens: 1000,
            completion_tokens: 500,
            total_tokens: 1500,
            ..Default::default()
        };
        assert!((u.cost(Some(2.0), Some(10.0)) - 0.007).abs() < 1e-12);
        assert_eq!(u.cost(None, None), 0.0);
    }
}
