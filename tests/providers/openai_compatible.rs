//! Providers that speak (a variant of) OpenAI's chat API: Azure's deployment paths, DeepSeek,
//! DashScope, Databricks, and Hugging Face's router and TGI.

use serde_json::json;

use crate::common::{load_error, native_routes, routes, streamed_untouched};
use crate::support::{post_json, send, Harness};

const AZURE: &str = r#"
_format_version: "3.0"
services:
  - name: az
    host: unused.invalid
    routes:
      - name: az
        paths: ["/az"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {header_name: api-key, header_value: az-key-1}
              model:
                provider: azure
                name: gpt-4o
                options: {azure_instance: my-inst, azure_deployment_id: gpt4o-prod, upstream_url: "{MOCK}"}
"#;

#[tokio::test]
async fn azure_uses_the_deployment_path_and_api_version() {
    let h = Harness::start(AZURE).await;
    let hi = json!({"messages": [{"role": "user", "content": "hi"}]});
    let r = post_json(&h.url("/az"), &hi).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &h.mock.requests()[0];
    assert_eq!(
        seen.path,
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2023-05-15"
    );
    assert_eq!(seen.header("api-key"), Some("az-key-1"));
    // The client's own api-version wins, and is not sent twice.
    let r = post_json(&h.url("/az?api-version=2024-10-21"), &hi).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.mock.requests()[1].path,
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    );

    // A path in upstream_url is used as given, and gets the api-version Kong always sends
    // (unless it names one itself).
    let own_path = AZURE.replace(
        "upstream_url: \"{MOCK}\"",
        "upstream_url: \"{MOCK}/openai/deployments/gpt4o-prod/chat/completions\"",
    );
    assert_ne!(own_path, AZURE);
    let h = Harness::start(&own_path).await;
    assert_eq!(post_json(&h.url("/az"), &hi).await.status, 200);
    assert_eq!(
        h.mock.requests()[0].path,
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2023-05-15"
    );
    let named = own_path.replace(
        "/chat/completions\"",
        "/chat/completions?api-version=2024-06-01\"",
    );
    let h = Harness::start(&named).await;
    assert_eq!(post_json(&h.url("/az"), &hi).await.status, 200);
    assert_eq!(
        h.mock.requests()[0].path,
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-06-01"
    );

    // Without upstream_url the instance names the host.
    let snap =
        tollgate::gateway::load_str(&AZURE.replace(", upstream_url: \"{MOCK}\"", "")).unwrap();
    let tollgate::plugins::Plugin::AiProxy(ai) = &snap.plugins[0].plugin else {
        panic!("ai-proxy")
    };
    assert_eq!(&*ai.targets[0].upstream.host, "my-inst.openai.azure.com");
    assert_eq!(ai.targets[0].upstream.port, 443);
    let e = tollgate::gateway::load_str(&AZURE.replace("azure_instance: my-inst, ", ""))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("model.options.azure_instance"), "{e}");

    // Responses: Azure's v1 API, answered natively (not bridged).
    let responses = AZURE.replace("llm/v1/chat", "llm/v1/responses");
    let h = Harness::start(&responses).await;
    let r = post_json(&h.url("/az"), &json!({"input": "hi"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "response");
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/openai/v1/responses");
    assert_eq!(seen.json().unwrap()["model"], "gpt-4o");
    let preview = responses.replace(
        "azure_deployment_id: gpt4o-prod,",
        "azure_deployment_id: gpt4o-prod, azure_api_version: preview,",
    );
    let h = Harness::start(&preview).await;
    let r = post_json(&h.url("/az"), &json!({"input": "hi"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.mock.requests()[0].path,
        "/openai/v1/responses?api-version=preview"
    );
}

/// The Azure route with `auth` in place of the api-key header.
fn azure_with(auth: &str) -> String {
    let y = AZURE.replace(
        "auth: {header_name: api-key, header_value: az-key-1}",
        &format!("auth: {auth}"),
    );
    assert_ne!(y, AZURE);
    y
}

/// The compiled Azure target's token source, loaded with `env` as the environment.
fn azure_token_url(auth: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let text = azure_with(auth).replace("{MOCK}", "http://127.0.0.1:9");
    let raw = tollgate::config::parse_document(&text, env).unwrap();
    let snap = tollgate::gateway::Snapshot::compile(raw, env).unwrap();
    let tollgate::plugins::Plugin::AiProxy(ai) = &snap.plugins[0].plugin else {
        panic!("ai-proxy")
    };
    let source = ai.targets[0].auth.cloud_token.as_ref().unwrap();
    source.as_ref().unwrap().token_url()
}

#[tokio::test]
async fn azure_managed_identity_tokens_go_upstream_as_bearer() {
    let h = Harness::start_env(
        &azure_with("{azure_use_managed_identity: true}"),
        &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", "{MOCK}")],
    )
    .await;
    let hi = json!({"messages": [{"role": "user", "content": "hi"}]});
    // Requests arriving together while no token exists wait for one fetch.
    let concurrent: Vec<_> = (0..4)
        .map(|_| {
            let url = h.url("/az");
            let hi = hi.clone();
            tokio::spawn(async move { post_json(&url, &hi).await.status })
        })
        .collect();
    for c in concurrent {
        assert_eq!(c.await.unwrap(), 200);
    }
    for _ in 0..3 {
        let r = post_json(&h.url("/az"), &hi).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(h.mock.token_fetches(), 1, "one token serves every request");
    let (tokens, calls): (Vec<_>, Vec<_>) = h
        .mock
        .requests()
        .into_iter()
        .partition(|r| r.path.starts_with("/metadata/"));
    assert_eq!(calls.len(), 7);
    for c in &calls {
        assert_eq!(
            c.path,
            "/openai/deployments/gpt4o-prod/chat/completions?api-version=2023-05-15"
        );
        assert_eq!(c.header("authorization"), Some("Bearer azure-mock-1"));
        assert_eq!(c.header("api-key"), None);
    }
    assert_eq!(tokens.len(), 1);
    let t = &tokens[0];
    assert_eq!(t.method, "GET");
    assert_eq!(t.header("metadata"), Some("true"));
    assert_eq!(
        t.path,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fcognitiveservices.azure.com"
    );

    // A user-assigned identity is named by its client id.
    let h = Harness::start_env(
        &azure_with("{azure_use_managed_identity: true, azure_client_id: uai-client-1}"),
        &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", "{MOCK}")],
    )
    .await;
    let r = post_json(&h.url("/az"), &hi).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].query_param("client_id").as_deref(),
        Some("uai-client-1")
    );
    assert_eq!(seen[1].header("authorization"), Some("Bearer azure-mock-1"));

    // A metadata service that cannot be reached: 502 naming Azure, and nothing upstream.
    let (_dead, port) = crate::support::dead_port();
    let dead = format!("http://127.0.0.1:{port}");
    let h = Harness::start_env(
        &azure_with("{azure_use_managed_identity: true}"),
        &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", &dead)],
    )
    .await;
    let r = post_json(&h.url("/az"), &hi).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let m = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        m.starts_with("failed to get an Azure access token: "),
        "{m}"
    );
    assert!(h.mock.requests().is_empty());
}

const CLIENT_CREDENTIALS: &str = "{azure_use_managed_identity: true, azure_client_id: app-1, azure_tenant_id: tenant-1, azure_client_secret: SECRET}";

#[tokio::test]
async fn azure_client_credentials_tokens_go_upstream_as_bearer() {
    // The secret from a vault reference, as Kong allows.
    let auth = CLIENT_CREDENTIALS.replace("SECRET", "'{vault://env/az-client-secret}'");
    let vars = [
        ("AZURE_AUTHORITY_HOST", "{MOCK}"),
        ("AZ_CLIENT_SECRET", mock_llm::AZURE_CLIENT_SECRET),
    ];
    let h = Harness::start_env(&azure_with(&auth), &vars).await;
    let hi = json!({"messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..3 {
        let r = post_json(&h.url("/az"), &hi).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(h.mock.token_fetches(), 1, "one token serves every request");
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 4);
    let t = &seen[0];
    assert_eq!(
        (t.method.as_str(), t.path.as_str()),
        ("POST", "/tenant-1/oauth2/v2.0/token")
    );
    assert_eq!(
        t.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        String::from_utf8_lossy(&t.body),
        format!(
            "grant_type=client_credentials&client_id=app-1&client_secret={}&scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default",
            mock_llm::AZURE_CLIENT_SECRET
        )
    );
    for c in &seen[1..] {
        assert_eq!(c.header("authorization"), Some("Bearer azure-mock-1"));
    }

    // A wrong secret: Entra's refusal is the 502's reason; the secret is in neither.
    let wrong = "not-the-secret-4711";
    let h = Harness::start_env(
        &azure_with(&CLIENT_CREDENTIALS.replace("SECRET", wrong)),
        &[("AZURE_AUTHORITY_HOST", "{MOCK}")],
    )
    .await;
    let r = post_json(&h.url("/az"), &hi).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let m = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        m.starts_with(
            "failed to get an Azure access token: token endpoint answered 401 (invalid_client: AADSTS7000215"
        ),
        "{m}"
    );
    assert!(!r.text().contains(wrong), "{m}");
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 1, "only the token request: {seen:?}");
    assert_eq!(h.mock.token_fetches(), 0);
}

#[test]
fn azure_identity_config_errors_name_the_field() {
    let e = load_error(
        &azure_with("{azure_use_managed_identity: true}")
            .replace("provider: azure", "provider: openai"),
    );
    assert!(
        e.contains("config.auth.azure_use_managed_identity")
            && e.contains("for provider 'azure', not 'openai'"),
        "{e}"
    );
    // Client credentials need the client id, the secret and the tenant.
    let e = load_error(&azure_with(
        "{azure_use_managed_identity: true, azure_client_id: app-1, azure_client_secret: s3cret}",
    ));
    assert!(e.contains("config.auth.azure_tenant_id"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
    let e = load_error(&azure_with(
        "{azure_use_managed_identity: true, azure_tenant_id: tenant-1}",
    ));
    assert!(
        e.contains("config.auth.azure_client_id") && e.contains("config.auth.azure_client_secret"),
        "{e}"
    );
    let e = load_error(&azure_with(
        &CLIENT_CREDENTIALS.replace("tenant-1", "'a/../b'"),
    ));
    assert!(e.contains("config.auth.azure_tenant_id"), "{e}");
    let e = load_error(&azure_with(
        "{azure_use_managed_identity: true, azure_client_id: ''}",
    ));
    assert!(
        e.contains("config.auth.azure_client_id") && e.contains("must not be empty"),
        "{e}"
    );

    // Without azure_use_managed_identity the other fields are ignored, with a warning.
    let off = azure_with(
        "{header_name: api-key, header_value: k, azure_client_id: app-1, azure_client_secret: s3cret}",
    );
    let snap = tollgate::gateway::load_str(&off.replace("{MOCK}", "http://127.0.0.1:9")).unwrap();
    for f in ["azure_client_id", "azure_client_secret"] {
        let w = snap
            .warnings
            .iter()
            .find(|w| w.path.ends_with(&format!("config.auth.{f}")))
            .unwrap_or_else(|| panic!("no warning for {f}: {:?}", snap.warnings));
        assert_eq!(w.message, "ignored: azure_use_managed_identity is false");
    }

    // Azure's own endpoints unless the environment names others, as in Azure's SDKs.
    let none = |_: &str| None;
    assert_eq!(
        azure_token_url("{azure_use_managed_identity: true}", &none),
        "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fcognitiveservices.azure.com"
    );
    let cc = CLIENT_CREDENTIALS.replace("SECRET", "s3cret");
    assert_eq!(
        azure_token_url(&cc, &none),
        "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token"
    );
    let gov =
        |k: &str| (k == "AZURE_AUTHORITY_HOST").then(|| "https://login.microsoftonline.us/".into());
    assert_eq!(
        azure_token_url(&cc, &gov),
        "https://login.microsoftonline.us/tenant-1/oauth2/v2.0/token"
    );
    let bad = |k: &str| (k == "AZURE_AUTHORITY_HOST").then(|| "ftp://x".into());
    let text = azure_with(&cc).replace("{MOCK}", "http://127.0.0.1:9");
    let raw = tollgate::config::parse_document(&text, &bad).unwrap();
    let e = tollgate::gateway::Snapshot::compile(raw, &bad)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("config.auth.azure_use_managed_identity") && e.contains("AZURE_AUTHORITY_HOST"),
        "{e}"
    );
}

#[tokio::test]
async fn openai_compatible_providers_use_the_chat_api() {
    let yaml = r#"
_format_version: "3.0"
services:
  - name: ds
    host: unused.invalid
    routes:
      - name: ds
        paths: ["/ds"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {header_name: Authorization, header_value: "Bearer sk-ds"}
              model: {provider: deepseek, name: deepseek-chat, options: {upstream_url: "{MOCK}"}}
"#;
    let h = Harness::start(yaml).await;
    let r = post_json(
        &h.url("/ds"),
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "deepseek-chat");
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-ds"));
}

#[tokio::test]
async fn huggingface_native_clients_pass_through_with_usage_logged() {
    let yaml = native_routes(
        "huggingface",
        "{header_name: Authorization, header_value: \"Bearer hf_test\"}",
        &[(
            "tgi",
            "llm/v1/chat",
            "{provider: huggingface, name: meta-llama/Llama-3.1-8B-Instruct, options: {upstream_url: \"{MOCK}\"}}",
        )],
    );
    let h = Harness::start(&yaml).await;
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer hf_client_own"),
        ("x-mock", "chunk_delay_ms=40"),
    ];
    // TGI's generate: no model in the body, and none is added.
    let gen = r#"{"inputs":"hi there","parameters":{"max_new_tokens":20,"details":true}}"#;
    let r = send("POST", &h.url("/tgi/generate"), &headers, gen).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["generated_text"],
        "Hello from mock-llm.",
        "TGI's answer: {}",
        r.text()
    );
    let seen = h.mock.last_request().unwrap();
    assert_eq!(
        (seen.path.as_str(), &seen.body[..]),
        ("/generate", gen.as_bytes())
    );
    assert_eq!(seen.header("authorization"), Some("Bearer hf_test"));

    // generate_stream streams by its path; TGI's events pass untouched.
    let r = send("POST", &h.url("/tgi/generate_stream"), &headers, gen).await;
    streamed_untouched(&r, "huggingface");
    assert!(
        r.text().starts_with("data: {\"index\":1,\"token\""),
        "{}",
        r.text()
    );
    let seen = h.mock.last_request().unwrap();
    assert_eq!(
        (seen.path.as_str(), &seen.body[..]),
        ("/generate_stream", gen.as_bytes())
    );

    // The router's OpenAI-compatible path, buffered and streamed.
    let chat = r#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi there"}]}"#;
    let r = send("POST", &h.url("/tgi/v1/chat/completions"), &headers, chat).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
    assert_eq!(h.mock.last_request().unwrap().body, chat.as_bytes());
    let chat_s = r#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi there"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let r = send("POST", &h.url("/tgi/v1/chat/completions"), &headers, chat_s).await;
    streamed_untouched(&r, "openai");
    assert_eq!(h.mock.last_request().unwrap().body, chat_s.as_bytes());
    assert_eq!(h.mock.last_request().unwrap().path, "/v1/chat/completions");

    let log = h.wait_log("tgi.log", 4).await;
    let usage = |i: usize| {
        let u = &log[i]["ai"]["proxy"]["usage"];
        assert!(log[i]["ai"]["proxy"].get("error").is_none(), "{}", log[i]);
        (u["prompt_tokens"].clone(), u["completion_tokens"].clone())
    };
    // TGI counts generated tokens only (its stream's last event counts the end token too).
    assert_eq!(usage(0), (json!(0), json!(3)));
    assert_eq!(usage(1), (json!(0), json!(4)));
    assert_eq!(usage(2), (json!(2), json!(3)));
    assert_eq!(usage(3), (json!(2), json!(3)));
    assert_eq!(log[1]["ai"]["proxy"]["meta"]["request_mode"], "stream");
    assert_eq!(log[2]["upstream_uri"], "/v1/chat/completions");
    for seen in h.mock.requests() {
        assert!(
            seen.headers
                .iter()
                .all(|(_, v)| !v.contains("hf_client_own")),
            "the client's own key is replaced: {:?}",
            seen.headers
        );
    }

    let e = load_error(&yaml.replace("provider: huggingface", "provider: cohere"));
    assert!(
        e.contains("config.llm_format") && e.contains("provider 'huggingface'"),
        "{e}"
    );
}

#[tokio::test]
async fn huggingface_uses_the_router_chat_api() {
    let yaml = routes(
        "{header_name: Authorization, header_value: \"Bearer hf_test\"}",
        &[(
            "hf",
            "llm/v1/chat",
            "{provider: huggingface, name: meta-llama/Llama-3.1-8B-Instruct, options: {upstream_url: \"{MOCK}\", huggingface: {use_cache: false, wait_for_model: true}}}",
        ), (
            "hf-embed",
            "llm/v1/embeddings",
            "{provider: huggingface, name: BAAI/bge-small-en-v1.5, options: {upstream_url: \"{MOCK}\", huggingface: {wait_for_model: true}}}",
        ), (
            "hf-endpoint",
            "llm/v1/chat",
            "{provider: huggingface, name: tgi, options: {upstream_url: \"{MOCK}/novita/v3/openai\"}}",
        )],
    );
    let h = Harness::start(&yaml).await;
    let r = post_json(
        &h.url("/hf"),
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "meta-llama/Llama-3.1-8B-Instruct");
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("authorization"), Some("Bearer hf_test"));
    assert_eq!(seen.header("x-use-cache"), Some("false"));
    assert_eq!(seen.header("x-wait-for-model"), Some("true"));

    // An upstream_url naming an endpoint gets the chat path appended, as Kong appends it.
    let r = post_json(
        &h.url("/hf-endpoint"),
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        h.mock.last_request().unwrap().path,
        "/novita/v3/openai/v1/chat/completions"
    );

    // Embeddings go to the feature-extraction pipeline, the model (with its slash) in the path.
    let r = post_json(&h.url("/hf-embed"), &json!({"input": ["a b", "c"]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    assert_eq!(b["data"].as_array().unwrap().len(), 2);
    assert_eq!(b["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(b["model"], "BAAI/bge-small-en-v1.5");
    let seen = h.mock.last_request().unwrap();
    assert_eq!(
        seen.path,
        "/hf-inference/models/BAAI/bge-small-en-v1.5/pipeline/feature-extraction"
    );
    assert_eq!(seen.json().unwrap(), json!({"inputs": ["a b", "c"]}));
    assert_eq!(seen.header("x-wait-for-model"), Some("true"));
    let r = post_json(
        &h.url("/hf-embed"),
        &json!({"input": "x [mock:status=503]"}),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["message"], "mock-llm injected status 503");

    let snap = tollgate::gateway::load_str(
        &yaml
            .replace("upstream_url: \"{MOCK}\", ", "")
            .replace("{MOCK}", "http://127.0.0.1:9"),
    )
    .unwrap();
    let tollgate::plugins::Plugin::AiProxy(ai) = &snap.plugins[0].plugin else {
        panic!("ai-proxy")
    };
    assert_eq!(&*ai.targets[0].upstream.host, "router.huggingface.co");
}

#[tokio::test]
async fn dashscope_and_databricks_are_openai_compatible() {
    let yaml = routes(
        "{header_name: Authorization, header_value: \"Bearer k\"}",
        &[
            (
                "ds",
                "llm/v1/chat",
                "{provider: dashscope, name: qwen-plus, options: {upstream_url: \"{MOCK}\"}}",
            ),
            (
                "db",
                "llm/v1/chat",
                "{provider: databricks, name: my-endpoint, options: {upstream_url: \"{MOCK}\"}}",
            ),
        ],
    );
    let h = Harness::start(&yaml).await;
    let ask = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true,
        "stream_options": {"include_usage": true}});
    let r = post_json(&h.url("/ds"), &ask).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/compatible-mode/v1/chat/completions");
    assert_eq!(
        seen.json().unwrap()["stream_options"]["include_usage"],
        true
    );
    let r = post_json(&h.url("/db"), &ask).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &h.mock.requests()[1];
    assert_eq!(seen.path, "/serving-endpoints/chat/completions");
    let up = seen.json().unwrap();
    assert_eq!(up["model"], "my-endpoint");
    assert!(
        up.get("stream_options").is_none(),
        "not forwarded to databricks"
    );

    // Without upstream_url: the region or workspace names the host.
    let direct = |m: &str| {
        let y = routes("{}", &[("x", "llm/v1/chat", m)]);
        let snap = tollgate::gateway::load_str(&y.replace("{DIR}", "/tmp")).unwrap();
        let tollgate::plugins::Plugin::AiProxy(ai) = &snap.plugins[0].plugin else {
            panic!("ai-proxy")
        };
        ai.targets[0].upstream.host.to_string()
    };
    assert_eq!(
        direct("{provider: dashscope}"),
        "dashscope-intl.aliyuncs.com"
    );
    assert_eq!(
        direct("{provider: dashscope, options: {dashscope: {international: false}}}"),
        "dashscope.aliyuncs.com"
    );
    assert_eq!(
        direct("{provider: databricks, options: {databricks: {workspace_instance_id: dbc-1-2}}}"),
        "dbc-1-2.cloud.databricks.com"
    );
}

/// Kong's "one route for many Azure deployments": the deployment (and model) come from the
/// route's regex capture, rendered per request.
#[tokio::test]
async fn azure_deployments_from_uri_captures() {
    let yaml = r#"
_format_version: "3.0"
services:
  - name: az
    host: unused.invalid
    routes:
      - name: az
        paths: ["~/openai/deployments/(?<dep>[^#?/]+)/chat/completions$"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {header_name: api-key, header_value: az-key-1}
              model:
                provider: azure
                name: $(uri_captures.dep)
                options: {azure_instance: my-inst, azure_deployment_id: $(uri_captures.dep), upstream_url: "{MOCK}"}
"#;
    let h = Harness::start(yaml).await;
    let hi = json!({"messages": [{"role": "user", "content": "hi"}]});
    for dep in ["gpt-4o", "gpt-4o-mini"] {
        let r = post_json(
            &h.url(&format!("/openai/deployments/{dep}/chat/completions")),
            &hi,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = h.mock.last_request().unwrap();
        assert_eq!(
            seen.path,
            format!("/openai/deployments/{dep}/chat/completions?api-version=2023-05-15")
        );
        assert_eq!(seen.json().unwrap()["model"], dep);
    }
    // A capture cannot add path segments or escapes.
    let r = post_json(
        &h.url("/openai/deployments/a%2F..%2Fb/chat/completions"),
        &hi,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
}
