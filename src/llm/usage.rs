//! Token usage as the log record and cost accounting need it.

use serde::Serialize;
use serde_json::Value;

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
}

impl Usage {
    /// Reads a `usage` object in chat/completions/embeddings or Responses shape.
    pub fn from_json(u: &Value) -> Option<Usage> {
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        let prompt = n("prompt_tokens").or_else(|| n("input_tokens"));
        let completion = n("completion_tokens").or_else(|| n("output_tokens"));
        if prompt.is_none() && completion.is_none() && n("total_tokens").is_none() {
            return None;
        }
        let prompt = prompt.unwrap_or(0);
        let completion = completion.unwrap_or(0);
        let details = |a: &str, b: &str, k: &str| {
            u.get(a)
                .or_else(|| u.get(b))
                .and_then(|d| d.get(k))
                .and_then(Value::as_u64)
        };
        Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: n("total_tokens").unwrap_or(prompt + completion),
            cached_tokens: details(
                "prompt_tokens_details",
                "input_tokens_details",
                "cached_tokens",
            ),
            reasoning_tokens: details(
                "completion_tokens_details",
                "output_tokens_details",
                "reasoning_tokens",
            ),
        })
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
