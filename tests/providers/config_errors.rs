//! Provider options that cannot work are refused at load, naming the field.

use crate::anthropic::ANTHROPIC;
use crate::common::{load_error, routes};

#[tokio::test]
async fn provider_config_errors_name_the_field() {
    // Kong 3.15 no longer requires anthropic_version or mistral_format: Kong's defaults.
    let no_version = ANTHROPIC.replace("anthropic_version: \"2023-06-01\"", "max_tokens: 1");
    assert!(
        tollgate::gateway::load_str(&no_version.replace("{MOCK}", "http://127.0.0.1:9")).is_ok()
    );
    let bad_version = ANTHROPIC.replace("\"2023-06-01\"", "\"2023\\n06\"");
    let e = tollgate::gateway::load_str(&bad_version.replace("{MOCK}", "http://127.0.0.1:9"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("model.options.anthropic_version") && e.contains("not a valid header value"),
        "{e}"
    );
    let embeddings = ANTHROPIC.replace("llm/v1/chat", "llm/v1/embeddings");
    let e = tollgate::gateway::load_str(&embeddings.replace("{MOCK}", "http://127.0.0.1:9"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("route_type") && e.contains("anthropic"), "{e}");
    let mistral = ANTHROPIC
        .replace("provider: anthropic", "provider: mistral")
        .replace("anthropic_version: \"2023-06-01\"", "top_k: 1");
    assert!(tollgate::gateway::load_str(&mistral.replace("{MOCK}", "http://127.0.0.1:9")).is_ok());
}

#[tokio::test]
async fn new_provider_config_errors_name_the_field() {
    let one = |model: &str, rt: &str| routes("{}", &[("x", rt, model)]);
    for (yaml, field) in [
        (one("{provider: ollama, name: m}", "llm/v1/chat"), "model.options.upstream_url"),
        (
            one("{provider: llama2, name: m, options: {upstream_url: \"{MOCK}\"}}", "llm/v1/chat"),
            "model.options.llama2_format",
        ),
        (
            one("{provider: llama2, name: m, options: {llama2_format: raw}}", "llm/v1/chat"),
            "model.options.upstream_url",
        ),
        (
            one(
                "{provider: llama2, name: m, options: {llama2_format: raw, upstream_url: \"{MOCK}\"}}",
                "llm/v1/embeddings",
            ),
            "route_type",
        ),
        (
            one("{provider: mistral, name: m, options: {mistral_format: ollama}}", "llm/v1/chat"),
            "model.options.upstream_url",
        ),
        (
            one("{provider: mistral, name: m, options: {mistral_format: vllm}}", "llm/v1/chat"),
            "model.options.mistral_format",
        ),
        (
            one("{provider: cohere, name: m, options: {cohere: {embedding_input_type: poems}}}", "llm/v1/embeddings"),
            "embedding_input_type",
        ),
        (
            one("{provider: huggingface, name: m, options: {huggingface: {use_gpu: true}}}", "llm/v1/chat"),
            "use_gpu",
        ),
        (one("{provider: cohere, name: m}", "llm/v1/files"), "route_type"),
    ] {
        let e = load_error(&yaml);
        assert!(e.contains(field), "{field}: {e}");
    }
    // Cohere needs nothing but a key: its endpoint is the default.
    let snap =
        tollgate::gateway::load_str(&one("{provider: cohere, name: m}", "llm/v1/chat")).unwrap();
    let tollgate::plugins::Plugin::AiProxy(ai) = &snap.plugins[0].plugin else {
        panic!("ai-proxy")
    };
    assert_eq!(&*ai.targets[0].upstream.host, "api.cohere.com");
    assert_eq!(ai.targets[0].upstream.path.as_deref(), Some("/v2/chat"));
}
