//! The embeddings client of semantic routing. `config.embeddings` is compiled into a
//! provider target of route type `llm/v1/embeddings` (the same profiles, auth and checks as
//! an ai-proxy target), and each request goes through `provider_call` (encoded and decoded
//! by the provider layer, sent with the gateway's own upstream client).
//! Vectors are cached per text (bounded, least recently used out first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::plugins::{
    AuthConfig, BedrockOptions, GeminiOptions, HuggingfaceOptions, ModelConfig, ModelOptions,
    ProviderName, RouteType, TargetConfig,
};
use crate::config::vault::VaultTable;
use crate::llm::target::{compile_target, Target};
use crate::net::upstream::Upstreams;

use super::provider_call::{self, Call, CallError};

/// Texts whose vectors are kept (prompts repeat: retries, agents resending a question).
const CACHE_CAPACITY: usize = 1024;

/// `config.embeddings` (Kong's shape: `auth` is the ai-proxy auth record).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsConfig {
    pub auth: Option<AuthConfig>,
    pub model: EmbeddingsModel,
}

/// `config.embeddings.model`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsModel {
    pub provider: ProviderName,
    pub name: String,
    pub options: Option<EmbeddingsOptions>,
}

/// `config.embeddings.model.options` (Kong's embeddings options: Azure's are nested).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsOptions {
    pub upstream_url: Option<String>,
    pub azure: Option<AzureEmbeddingsOptions>,
    pub bedrock: Option<BedrockOptions>,
    pub gemini: Option<GeminiOptions>,
    pub huggingface: Option<HuggingfaceOptions>,
}

/// `config.embeddings.model.options.azure`.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AzureEmbeddingsOptions {
    pub instance: Option<String>,
    pub deployment_id: Option<String>,
    pub api_version: Option<String>,
}

type FieldErrors = Vec<(String, String)>;

/// A compiled embeddings provider and its cache.
#[derive(Debug)]
pub struct Embedder {
    pub target: Target,
    pub model: String,
    /// Asked of providers that take it (OpenAI's `dimensions`, translated per dialect).
    dimensions: Option<u64>,
    connect_timeout: Duration,
    read_timeout: Duration,
    cache: Mutex<Lru>,
}

impl Embedder {
    /// Compiles `config.embeddings` (at `path`); errors name fields under it.
    #[allow(clippy::too_many_arguments)]
    pub fn compile(
        path: &str,
        c: &EmbeddingsConfig,
        dimensions: u64,
        timeouts: (Duration, Duration),
        vaults: &VaultTable,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut FieldErrors,
        warnings: &mut FieldErrors,
    ) -> Option<Embedder> {
        if c.model.name.trim().is_empty() {
            errors.push((format!("{path}.model.name"), "required".into()));
        }
        let o = c.model.options.clone().unwrap_or_default();
        let azure = o.azure.unwrap_or_default();
        let options = ModelOptions {
            upstream_url: o.upstream_url,
            azure_instance: azure.instance,
            azure_deployment_id: azure.deployment_id,
            azure_api_version: azure.api_version,
            // Mistral's embeddings endpoint is OpenAI's shape.
            mistral_format: (c.model.provider == ProviderName::Mistral).then(|| "openai".into()),
            bedrock: o.bedrock,
            gemini: o.gemini,
            huggingface: o.huggingface,
            ..ModelOptions::default()
        };
        let t = TargetConfig {
            route_type: RouteType::Embeddings,
            auth: c.auth.clone().unwrap_or_default(),
            model: ModelConfig {
                provider: c.model.provider,
                name: Some(c.model.name.clone()),
                model_alias: None,
                options: Some(options),
            },
            logging: Default::default(),
            weight: 100,
            description: None,
            utterances: Vec::new(),
            metadata: None,
        };
        let before = errors.len();
        let target = compile_target(path, &t, vaults, env, errors, warnings);
        // The target's field names, as they are spelled in an embeddings record.
        for (p, m) in errors.iter_mut().skip(before) {
            let renamed = p
                .replace(
                    &format!("{path}.route_type"),
                    &format!("{path}.model.provider"),
                )
                .replace(".options.azure_instance", ".options.azure.instance")
                .replace(
                    ".options.azure_deployment_id",
                    ".options.azure.deployment_id",
                )
                .replace(".options.azure_api_version", ".options.azure.api_version");
            if renamed != *p {
                *m = m.replace("azure_instance", "azure.instance");
                *m = m.replace("azure_deployment_id", "azure.deployment_id");
                *p = renamed;
            }
        }
        let target = target?;
        // OpenAI-compatible servers other than OpenAI's and Azure's may refuse `dimensions`.
        let sends_dimensions = !matches!(
            c.model.provider,
            ProviderName::Mistral | ProviderName::Llama2 | ProviderName::Huggingface
        );
        Some(Embedder {
            target,
            model: c.model.name.clone(),
            dimensions: sends_dimensions.then_some(dimensions),
            connect_timeout: timeouts.0,
            read_timeout: timeouts.1,
            cache: Mutex::new(Lru::new(CACHE_CAPACITY)),
        })
    }

    /// `provider/model`, for logs and keys.
    pub fn name(&self) -> String {
        format!("{}/{}", self.target.provider.as_str(), self.model)
    }

    /// The vector of one text, from the cache or the provider.
    pub async fn embed_one(&self, upstreams: &Upstreams, text: &str) -> Result<Arc<[f32]>, String> {
        if let Some(v) = self.cached(text) {
            return Ok(v);
        }
        let mut vs = self.call(upstreams, &[text]).await?;
        let v: Arc<[f32]> = vs.pop().ok_or("the provider returned no vector")?.into();
        self.remember(text, &v);
        Ok(v)
    }

    /// The vectors of several texts in one provider call (cached ones are not asked again).
    pub async fn embed_many(
        &self,
        upstreams: &Upstreams,
        texts: &[&str],
    ) -> Result<Vec<Arc<[f32]>>, String> {
        let mut out: Vec<Option<Arc<[f32]>>> = texts.iter().map(|t| self.cached(t)).collect();
        let missing: Vec<&str> = texts
            .iter()
            .zip(&out)
            .filter(|(_, v)| v.is_none())
            .map(|(t, _)| *t)
            .collect();
        if !missing.is_empty() {
            let got = self.call(upstreams, &missing).await?;
            let mut got = got.into_iter();
            for (t, slot) in texts.iter().zip(out.iter_mut()) {
                if slot.is_none() {
                    let v: Arc<[f32]> = got
                        .next()
                        .ok_or("the provider returned too few vectors")?
                        .into();
                    self.remember(t, &v);
                    *slot = Some(v);
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn cached(&self, text: &str) -> Option<Arc<[f32]>> {
        let mut c = match self.cache.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        c.get(text)
    }

    fn remember(&self, text: &str, v: &Arc<[f32]>) {
        let mut c = match self.cache.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        c.insert(text, Arc::clone(v));
    }

    /// One embeddings request for `texts`; errors say what failed, never a credential.
    async fn call(&self, upstreams: &Upstreams, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let mut req = json!({"model": self.model, "input": texts});
        if let Some(d) = self.dimensions {
            req["dimensions"] = json!(d);
        }
        let req = req.to_string();
        let call = Call {
            target: &self.target,
            route_type: RouteType::Embeddings,
            model: &self.model,
            request: req.as_bytes(),
            patch_options: None,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            trust: None,
        };
        let name = self.name();
        let openai_shaped = provider_call::send(upstreams, &call)
            .await
            .map_err(|e| match e {
                CallError::Encode(m) | CallError::Credential(m) => m,
                CallError::Send { kind, detail } => format!("{name} ({kind}): {detail}"),
                CallError::Status { status, snippet } => {
                    format!("{name} answered HTTP {status}: {snippet}")
                }
                CallError::Read(m) | CallError::Decode(m) => format!("{name}: {m}"),
            })?;
        let vectors = vectors(&openai_shaped).map_err(|e| format!("{name}: {e}"))?;
        if vectors.len() != texts.len() {
            return Err(format!(
                "{name}: asked for {} vectors, got {}",
                texts.len(),
                vectors.len()
            ));
        }
        Ok(vectors)
    }
}

/// The vectors of an OpenAI embeddings list, in input order (by `index` when given).
pub fn vectors(body: &[u8]) -> Result<Vec<Vec<f32>>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or("the answer has no 'data' list")?;
    let mut out: Vec<(u64, Vec<f32>)> = Vec::with_capacity(data.len());
    for (i, d) in data.iter().enumerate() {
        let emb = d
            .get("embedding")
            .and_then(Value::as_array)
            .ok_or("an item has no 'embedding' array (base64 answers are not asked for)")?;
        let vector: Option<Vec<f32>> = emb.iter().map(|x| x.as_f64().map(|f| f as f32)).collect();
        let vector = vector.ok_or("an embedding holds a value that is not a number")?;
        let index = d.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
        out.push((index, vector));
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// A small least-recently-used map of text → vector. Eviction scans for the oldest entry:
/// at this size that costs about a microsecond, and only on a miss when full.
#[derive(Debug)]
struct Lru {
    capacity: usize,
    tick: u64,
    map: HashMap<String, (Arc<[f32]>, u64)>,
}

impl Lru {
    fn new(capacity: usize) -> Lru {
        Lru {
            capacity,
            tick: 0,
            map: HashMap::new(),
        }
    }

    fn get(&mut self, k: &str) -> Option<Arc<[f32]>> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(k).map(|(v, t)| {
            *t = tick;
            Arc::clone(v)
        })
    }

    fn insert(&mut self, k: &str, v: Arc<[f32]>) {
        self.tick += 1;
        if !self.map.contains_key(k) && self.map.len() >= self.capacity {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone());
            if let Some(o) = oldest {
                self.map.remove(&o);
            }
        }
        self.map.insert(k.to_string(), (v, self.tick));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn lru_keeps_the_recently_used() {
        let mut c = Lru::new(2);
        let v = |x: f32| -> Arc<[f32]> { vec![x].into() };
        c.insert("a", v(1.0));
        c.insert("b", v(2.0));
        assert!(c.get("a").is_some());
        c.insert("c", v(3.0));
        assert!(c.get("b").is_none(), "the least recently used goes");
        assert_eq!(c.get("a").unwrap()[0], 1.0);
        assert_eq!(c.get("c").unwrap()[0], 3.0);
        c.insert("c", v(4.0));
        assert_eq!(c.map.len(), 2);
    }

    #[test]
    fn vectors_in_index_order() {
        let b = br#"{"object":"list","data":[{"index":1,"embedding":[0.5,1]},{"index":0,"embedding":[2,3]}]}"#;
        assert_eq!(vectors(b).unwrap(), vec![vec![2.0, 3.0], vec![0.5, 1.0]]);
        assert!(vectors(br#"{"data":[{"embedding":"AAAA"}]}"#).is_err());
        assert!(vectors(br#"{"data":[{"embedding":["x"]}]}"#).is_err());
        assert!(vectors(br#"{"error":{}}"#).is_err());
    }

    fn compile(v: Value) -> Result<Embedder, FieldErrors> {
        let c: EmbeddingsConfig = serde_json::from_value(v).unwrap();
        let (mut e, mut w) = (Vec::new(), Vec::new());
        let vaults = VaultTable::default();
        let t = (Duration::from_secs(1), Duration::from_secs(1));
        let r = Embedder::compile(
            "config.embeddings",
            &c,
            8,
            t,
            &vaults,
            &|_| None,
            &mut e,
            &mut w,
        );
        match r {
            Some(x) if e.is_empty() => Ok(x),
            _ => Err(e),
        }
    }

    #[test]
    fn providers_compile_with_their_own_field_names() {
        let e = compile(
            json!({"model": {"provider": "openai", "name": "text-embedding-3-small"},
            "auth": {"header_name": "Authorization", "header_value": "Bearer sk-x"}}),
        )
        .unwrap();
        assert_eq!(&*e.target.upstream.host, "api.openai.com");
        assert_eq!(e.dimensions, Some(8));
        let e =
            compile(json!({"model": {"provider": "mistral", "name": "mistral-embed"}})).unwrap();
        assert_eq!(&*e.target.upstream.host, "api.mistral.ai");
        assert_eq!(e.dimensions, None);
        let e = compile(json!({"model": {"provider": "azure", "name": "emb",
            "options": {"azure": {"instance": "inst", "deployment_id": "dep"}}}}))
        .unwrap();
        assert_eq!(&*e.target.upstream.host, "inst.openai.azure.com");
        assert!(e
            .target
            .upstream
            .path
            .as_deref()
            .unwrap()
            .contains("/deployments/dep/embeddings"));
        let errs = compile(json!({"model": {"provider": "azure", "name": "emb"}})).unwrap_err();
        assert!(
            errs.iter()
                .any(|(p, _)| p == "config.embeddings.model.options.azure.instance"),
            "{errs:?}"
        );
        let errs = compile(json!({"model": {"provider": "anthropic", "name": "x",
            "options": {"upstream_url": "http://127.0.0.1:1"}}}))
        .unwrap_err();
        assert!(
            errs.iter()
                .any(|(p, _)| p == "config.embeddings.model.provider"),
            "{errs:?}"
        );
        assert!(serde_json::from_value::<EmbeddingsConfig>(
            json!({"model": {"provider": "openai", "name": "x", "options": {"nope": 1}}})
        )
        .is_err());
    }
}
