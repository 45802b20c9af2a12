//! Loading Kong's declarative config: entities, ids, errors with field paths, decK and
//! vault substitution; and the `tollgate validate` command.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use tollgate::config::{self, ConfigErrors};
use tollgate::gateway::Snapshot;
use tollgate::plugins::registry::PluginConfig;
use tollgate::plugins::Plugin;

fn load_with_env(text: &str, env: &[(&str, &str)]) -> Result<Snapshot, ConfigErrors> {
    let lookup = |n: &str| {
        env.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.to_string())
    };
    let raw = config::parse_document(text, &lookup)?;
    Snapshot::compile(raw, &lookup)
}

fn load(text: &str) -> Result<Snapshot, ConfigErrors> {
    load_with_env(text, &[])
}

fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("config should not load"),
        Err(e) => e.0.iter().map(|i| i.to_string()).collect(),
    }
}

const BASE: &str = r#"
_format_version: "3.0"
services:
  - name: svc
    url: https://api.example.com:8443/base
    routes:
      - name: r1
        paths: ["/a"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai}
    plugins:
      - name: file-log
        config: {path: /tmp/tollgate-config-test.log}
routes:
  - name: r2
    service: svc
    paths: ["~/v(?<version>\\d+)/x$"]
    methods: [POST]
plugins:
  - name: request-transformer
    route: r2
    config:
      add: {headers: ["x-a:b"]}
  - name: file-log
    config: {path: /tmp/tollgate-config-test-global.log}
"#;

#[test]
fn entities_urls_and_scopes() {
    let s = load(BASE).unwrap();
    assert_eq!(s.services.len(), 1);
    let svc = &s.services[0];
    assert_eq!(
        (
            svc.protocol.as_str(),
            svc.host.as_str(),
            svc.port,
            svc.path.as_deref()
        ),
        ("https", "api.example.com", 8443, Some("/base"))
    );
    assert_eq!(s.routes.len(), 2);
    assert_eq!(s.routes[1].service, Some(0));
    assert_eq!(s.plugins.len(), 4);
    // r1: ai-proxy (route) + file-log (service wins over global).
    let chain: Vec<&str> = s.routes[0]
        .chain
        .iter()
        .map(|i| s.plugins[*i].name.as_str())
        .collect();
    assert_eq!(chain, vec!["ai-proxy", "file-log"]);
    let fl = s.routes[0].chain[1];
    assert_eq!(s.plugins[fl].service, Some(0));
    // r2: request-transformer (route) before file-log (service).
    let chain: Vec<&str> = s.routes[1]
        .chain
        .iter()
        .map(|i| s.plugins[*i].name.as_str())
        .collect();
    assert_eq!(chain, vec!["request-transformer", "file-log"]);
    // A request that matches no route only sees global plugins.
    assert_eq!(s.global_chain.len(), 1);
}

#[test]
fn ids_are_deterministic_kong_uuid_v5() {
    let a = load(BASE).unwrap();
    let b = load(BASE).unwrap();
    assert_eq!(a.services[0].id, b.services[0].id);
    assert_eq!(a.plugins[0].id, b.plugins[0].id);
    assert_eq!(
        a.services[0].id,
        tollgate::config::ids::entity_id("services", "svc")
    );
    assert_eq!(
        a.routes[0].id,
        tollgate::config::ids::entity_id("routes", "r1")
    );
    let explicit = BASE.replacen(
        "  - name: svc\n",
        "  - name: svc\n    id: 6f0d9c1e-1111-4a2b-8c3d-0123456789ab\n",
        1,
    );
    assert_eq!(
        load(&explicit).unwrap().services[0].id,
        "6f0d9c1e-1111-4a2b-8c3d-0123456789ab"
    );
}

#[test]
fn unknown_variant_is_reported_with_its_path() {
    let text = r#"
_format_version: "3.0"
services: [{name: s, host: h, routes: [{name: r, paths: ["/x"]}]}]
plugins:
  - name: file-log
    config: {path: /tmp/a.log}
  - name: request-transformer
    config: {}
  - name: ai-proxy
    route: r
    config:
      route_type: llm/v1/chat
      model: {provider: opena1}
"#;
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("plugins[2].config.model.provider: unknown variant \"opena1\""),
        "{}",
        e[0]
    );
}

#[test]
fn every_error_is_collected() {
    let text = r#"
_format_version: "3.0"
services:
  - name: s
    host: h
    routes:
      - name: r
        paths: ["nope", "~/(unclosed"]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              model: {provider: openai}
              surprise: true
          - name: not-a-plugin
  - name: t
routes:
  - name: orphan
    service: missing
    paths: ["/o"]
"#;
    let e = errors(text);
    let joined = e.join("\n");
    for want in [
        "services[0].routes[0].paths[0]: should start with: / (fixed path) or ~/ (regex path)",
        "services[0].routes[0].paths[1]: invalid regex",
        "services[0].routes[0].plugins[0].config.surprise: unknown field \"surprise\"",
        "services[0].routes[0].plugins[1].name: plugin 'not-a-plugin' not enabled",
        "services[1].host: required field missing",
        "routes[0].service: invalid reference 'service: missing'",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
}

#[test]
fn unknown_top_level_and_entity_fields_fail() {
    let e = errors("_format_version: \"3.0\"\nservices: [{name: s, host: h, colour: red}]\n");
    assert!(e[0].starts_with("services[0]"), "{e:?}");
    assert!(e[0].contains("unknown field \"colour\""), "{e:?}");
    let e = errors("_format_version: \"3.0\"\nservicez: []\n");
    assert!(e[0].contains("unknown field \"servicez\""), "{e:?}");
    let e = errors("services: []\n");
    assert_eq!(e, vec!["_format_version: required field missing"]);
    let e = errors("_format_version: \"4.0\"\n");
    assert!(e[0].contains("unsupported declarative config version"));
    // An upstream's unknown field is named too.
    let e = errors("_format_version: \"3.0\"\nupstreams: [{name: u, nope: 1}]\n");
    assert!(
        e[0].starts_with("upstreams[0]") && e[0].contains("nope"),
        "{e:?}"
    );
    let e = errors("- just\n- a list\n");
    assert!(e[0].contains("expected a declarative configuration"));
    let e = errors("key: [unclosed\n");
    assert!(e[0].starts_with("invalid YAML"), "{e:?}");
}

#[test]
fn json_documents_load_too() {
    let s = load(r#"{"_format_version":"3.0","services":[{"name":"s","host":"h","routes":[{"name":"r","paths":["/x"]}]}]}"#).unwrap();
    assert_eq!(s.routes[0].name.as_deref(), Some("r"));
}

#[test]
fn deck_env_substitution_with_decks_error_texts() {
    let text = r#"
_format_version: "3.0"
services:
  - name: s
    host: h
    routes: [{name: r, paths: ["/x"]}]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {header_name: Authorization, header_value: ${{ env "DECK_OPENAI_API_KEY" }}}
          model: {provider: openai}
"#;
    let s = load_with_env(text, &[("DECK_OPENAI_API_KEY", "Bearer sk-deck")]).unwrap();
    let Plugin::AiProxy(ai) = &s.plugins[0].plugin else {
        panic!()
    };
    let (_, v) = ai.targets[0].auth.header.as_ref().unwrap();
    assert_eq!(v.value().unwrap(), "Bearer sk-deck");
    assert!(v.value().unwrap().is_sensitive());
    let e = load_with_env(text, &[]).err().unwrap().to_string();
    assert_eq!(
        e,
        "environment variable 'DECK_OPENAI_API_KEY' present in state file but not set"
    );
    let e = load(&text.replace("DECK_OPENAI_API_KEY", "OPENAI_API_KEY"))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(e, "environment variables in the state file must be prefixed with 'DECK_', found: 'OPENAI_API_KEY'");
}

#[test]
fn vault_references_resolve_or_warn() {
    let text = r#"
_format_version: "3.0"
vaults:
  - name: env
    prefix: my-env
    config: {prefix: "TG_"}
services:
  - name: s
    host: h
    routes: [{name: r, paths: ["/x"]}, {name: r2, paths: ["/y"], plugins: [{name: ai-proxy, config: {route_type: llm/v1/chat, model: {provider: openai}, auth: {header_name: api-key, header_value: "{vault://env/missing-key}"}}}]}]
    plugins:
      - name: ai-proxy
        config:
          route_type: llm/v1/chat
          auth: {header_name: Authorization, header_value: "{vault://my-env/openai-key}"}
          model: {provider: openai}
"#;
    let s = load_with_env(text, &[("TG_OPENAI_KEY", "Bearer sk-vault")]).unwrap();
    let secret = |i: usize| match &s.plugins[i].plugin {
        Plugin::AiProxy(ai) => ai.targets[0].auth.header.as_ref().unwrap().1.value(),
        _ => panic!(),
    };
    let ok = (0..2).find(|i| secret(*i).is_ok()).unwrap();
    assert_eq!(secret(ok).unwrap(), "Bearer sk-vault");
    assert_eq!(s.warnings.len(), 1);
    assert!(
        s.warnings[0].to_string().contains("MISSING_KEY is not set"),
        "{:?}",
        s.warnings
    );
    // Literal text before a reference is kept in front of the secret (a Tollgate
    // extension, so a bare API key can make a `Bearer` header)...
    let s = load_with_env(
        &text.replace(
            "\"{vault://my-env/openai-key}\"",
            "\"Bearer {vault://my-env/openai-key}\"",
        ),
        &[("TG_OPENAI_KEY", "sk-bare")],
    )
    .unwrap();
    let ok = (0..2).find(|i| secret_of(&s, *i).is_ok()).unwrap();
    assert_eq!(secret_of(&s, ok).unwrap(), "Bearer sk-bare");
    // ...but text after it, or two references, is refused.
    for bad in [
        "\"{vault://my-env/openai-key} x\"",
        "\"a{vault://my-env/openai-key}{vault://my-env/b}\"",
    ] {
        let e = errors(&text.replace("\"{vault://my-env/openai-key}\"", bad));
        assert!(e[0].contains("must be the entire value"), "{bad}: {e:?}");
    }
}

fn secret_of(s: &Snapshot, i: usize) -> Result<http::HeaderValue, String> {
    match &s.plugins[i].plugin {
        Plugin::AiProxy(ai) => ai.targets[0].auth.header.as_ref().unwrap().1.value(),
        _ => panic!(),
    }
}

#[test]
fn legacy_format_auto_prefixes_regex_paths() {
    let text = "_format_version: \"1.1\"\nservices: [{name: s, host: h, routes: [{name: r, paths: [\"/v\\\\d+/x\", \"/plain\"]}]}]\n";
    let s = load(text).unwrap();
    assert_eq!(
        s.routes[0].paths.as_ref().unwrap(),
        &vec!["~/v\\d+/x".to_string(), "/plain".to_string()]
    );
}

#[test]
fn unsupported_features_fail_clearly() {
    // Upstreams: weighted round robin is served; what else Kong balances with is named.
    let e = errors("_format_version: \"3.0\"\nupstreams: [{name: u, algorithm: consistent-hashing, hash_on: header, targets: [{target: \"10.0.0.1:80\"}, {target: \"10.0.0.2:x\"}]}]\ntargets: [{target: \"10.0.0.3\", upstream: nope}]\n");
    assert_eq!(
        e,
        vec![
            "upstreams[0].algorithm: 'consistent-hashing' is not supported by tollgate yet (round-robin is)",
            "upstreams[0].hash_on: 'header' is not supported by tollgate yet (none is)",
            "upstreams[0].targets[1].target: invalid target: expected host[:port]",
            "targets[0].upstream: does not name an upstream of this configuration",
        ],
        "{e:?}"
    );
    let adv = |extra: &str| {
        format!("_format_version: \"3.0\"\nservices: [{{name: s, host: h, routes: [{{name: r, paths: [\"/x\"]}}]}}]\nplugins:\n  - name: ai-proxy-advanced\n    config:\n      targets: [{{route_type: llm/v1/chat, model: {{provider: openai}}}}]\n{extra}")
    };
    // Semantic routing needs its embeddings provider, vector store and descriptions.
    let e = errors(&adv("      balancer: {algorithm: semantic}\n"));
    assert_eq!(
        e,
        vec![
            "plugins[0].config.embeddings: required for balancer.algorithm 'semantic'",
            "plugins[0].config.vectordb: required for balancer.algorithm 'semantic'",
            "plugins[0].config.targets[0].description: required for balancer.algorithm 'semantic' (a topic, or CATCHALL)",
        ],
        "{e:?}"
    );
    let e = errors(&adv("      targets: []\n").replacen(
        "      targets: [{route_type: llm/v1/chat, model: {provider: openai}}]\n",
        "",
        1,
    ));
    assert!(
        e[0].contains("config.targets: length must be at least 1"),
        "{e:?}"
    );
    let e = errors("_format_version: \"3.0\"\nplugins: [{name: response-transformer}]\n");
    assert_eq!(
        e,
        vec!["plugins[0].name: plugin 'response-transformer' is not supported by tollgate yet"]
    );
    let e = errors("_format_version: \"3.0\"\nplugins: [{name: ai-semantic-cache}]\n");
    assert_eq!(
        e,
        vec![
            "plugins[0].config.embeddings: required field missing",
            "plugins[0].config.vectordb: required field missing"
        ]
    );
    let e = errors("_format_version: \"3.0\"\nplugins: [{name: rate-limiting}]\n");
    assert_eq!(
        e,
        vec!["plugins[0].config: at least one of these fields must be non-empty: 'config.second', 'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'"]
    );
    let e = errors("_format_version: \"3.0\"\nplugins: [{name: rate-limiting, config: {minute: 5, policy: cluster}}]\n");
    assert!(
        e[0].starts_with("plugins[0].config.policy: 'cluster'"),
        "{e:?}"
    );
    let e = errors("_format_version: \"3.0\"\nplugins: [{name: ai-rate-limiting-advanced, config: {llm_providers: [{name: openai, limit: [1], window_size: [60, 120]}]}}]\n");
    assert_eq!(
        e,
        vec!["plugins[0].config.llm_providers[0]: 'limit' and 'window_size' must be non-empty and have the same length"]
    );
    let e = errors("_format_version: \"3.0\"\nplugins: [{name: ai-sanitizer, config: {custom_patterns: [{name: x, regex: \"(\"}]}}]\n");
    assert!(
        e[0].starts_with("plugins[0].config.custom_patterns[0].regex: invalid regex"),
        "{e:?}"
    );
    // Kong 3.10's identity_realms: this configuration's consumers (cp), not Konnect's.
    assert!(load("_format_version: \"3.0\"\nplugins: [{name: key-auth, config: {identity_realms: [{scope: cp, id: null, region: null}]}}]\n").is_ok());
    let e = errors("_format_version: \"3.0\"\nplugins: [{name: key-auth, config: {identity_realms: [{scope: cp}, {scope: realm, id: r1, region: us}]}}]\n");
    assert!(
        e[0].starts_with("plugins[0].config.identity_realms[1].scope: Konnect identity realms"),
        "{e:?}"
    );
    let e = errors("_format_version: \"3.0\"\nplugins: [{name: key-auth, config: {principals: {enabled: true, directory: d}}}]\n");
    assert!(
        e[0].starts_with("plugins[0].config.principals.enabled: Konnect principals"),
        "{e:?}"
    );
    assert!(load("_format_version: \"3.0\"\nplugins: [{name: key-auth, config: {principals: {enabled: false}}}]\n").is_ok());
    let e = errors("_format_version: \"3.0\"\nplugins: [{name: key-auth, config: {key_names: [\"a b\"], anonymous: nobody}}]\n");
    assert!(
        e[0].starts_with("plugins[0].config.key_names[0]: bad header name"),
        "{e:?}"
    );
    let e = errors("_format_version: \"3.0\"\nplugins: [{name: ai-proxy, config: {route_type: llm/v1/chat, model: {provider: databricks}}}]\n");
    assert!(
        e[0].starts_with(
            "plugins[0].config.model.options.databricks.workspace_instance_id: required"
        ),
        "{e:?}"
    );
    assert!(
        load("_format_version: \"3.0\"\nplugins: [{name: ai-proxy, config: {route_type: llm/v1/chat, model: {provider: dashscope}}}]\n").is_ok(),
        "dashscope needs nothing but a key"
    );
    // Kong 3.15 no longer requires these: its defaults apply.
    let ai = |model: &str| {
        format!("_format_version: \"3.0\"\nplugins: [{{name: ai-proxy, config: {{route_type: llm/v1/chat, model: {model}}}}}]\n")
    };
    let ai_proxy = |s: &Snapshot| match &s.plugins[0].plugin {
        Plugin::AiProxy(ai) => ai.clone(),
        _ => panic!("not ai-proxy"),
    };
    let s = load(&ai("{provider: anthropic}")).unwrap();
    let a = ai_proxy(&s);
    let version = a.targets[0]
        .extra_headers
        .iter()
        .find(|(n, _)| n == "anthropic-version");
    assert_eq!(version.map(|(_, v)| v.as_bytes()), Some(&b"2023-06-01"[..]));
    let s = load(&ai("{provider: mistral, name: mistral-large-latest}")).unwrap();
    assert_eq!(&*ai_proxy(&s).targets[0].upstream.host, "api.mistral.ai");
    let s = load(&ai(
        "{provider: azure, name: gpt-4o, options: {azure_instance: inst}}",
    ))
    .unwrap();
    assert_eq!(
        ai_proxy(&s).targets[0].upstream.path.as_deref(),
        Some("/openai/deployments/gpt-4o/chat/completions?api-version=2023-05-15")
    );
    let e = errors(&ai("{provider: azure, options: {azure_instance: inst}}"));
    assert!(
        e[0].starts_with("plugins[0].config.model.options.azure_deployment_id: required"),
        "{e:?}"
    );
    let e = errors("_format_version: \"3.0\"\nplugins: [{name: file-log, config: {path: /tmp/x, custom_fields_by_lua: {a: \"return 1\"}}}]\n");
    assert!(e[0].contains("custom_fields_by_lua"), "{e:?}");
    let e = errors("_format_version: \"3.0\"\nplugins: [{name: file-log, config: {path: /tmp/x}}, {name: file-log, config: {path: /tmp/y}}]\n");
    assert!(e[0].contains("UNIQUE violation"), "{e:?}");
}

#[test]
fn yaml_anchors_and_merge_keys_share_plugin_configs() {
    let s = load(
        r#"
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: a
        paths: ["/a"]
        plugins:
          - name: ai-proxy
            config: &base
              route_type: llm/v1/chat
              model: {provider: openai, name: gpt-4o}
      - name: b
        paths: ["/b"]
        plugins:
          - name: ai-proxy
            config: {<<: *base, route_type: llm/v1/embeddings, model: {provider: openai, name: e}}
"#,
    )
    .unwrap();
    let types: Vec<&str> = s
        .plugins
        .iter()
        .filter_map(|p| match &p.plugin {
            Plugin::AiProxy(ai) => Some(ai.targets[0].route_type.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(types, ["llm/v1/chat", "llm/v1/embeddings"]);
}

/// The configurations `deploy/` ships (compose, Kubernetes) load, and the compose file runs
/// its three nodes on the shared store.
#[test]
fn the_deploy_configs_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    for f in ["kong.yaml", "k8s/base/kong.yaml"] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        let snap = tollgate::gateway::validate_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(snap.plugins.len(), 2, "{f}");
    }
    let compose: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(root.join("compose.yaml")).unwrap())
            .unwrap();
    for n in ["node1", "node2", "node3"] {
        // Each node merges the shared `x-node` block (`<<: *node`).
        let node = &compose["services"][n]["<<"];
        assert_eq!(
            node["environment"]["TOLLGATE_STORE"], "postgres",
            "{n}: {node}"
        );
        assert_eq!(node["build"]["dockerfile"], "deploy/Containerfile", "{n}");
    }
}

#[test]
fn the_embedded_default_loads() {
    let s = tollgate::gateway::load_str(config::EMBEDDED_DEFAULT).unwrap();
    assert!(s
        .routes
        .iter()
        .any(|r| r.paths.as_ref().unwrap()[0] == "/openai/v1/chat/completions"));
    assert!(s
        .plugins
        .iter()
        .all(|p| matches!(p.plugin, Plugin::AiProxy(_))));
    // Config values are typed and defaulted.
    let PluginConfig::AiProxy(_) = tollgate::plugins::registry::parse(
        "ai-proxy",
        Some(&serde_json::json!({"route_type":"llm/v1/chat","model":{"provider":"openai"}})),
    )
    .unwrap() else {
        panic!()
    };
}

fn tollgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    c.env("TOLLGATE_PROXY_TLS_LISTEN", "off");
    c
}

#[test]
fn validate_command_exit_codes_and_messages() {
    let dir = std::env::temp_dir().join(format!("tollgate-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, BASE).unwrap();
    let out = tollgate().arg("validate").arg(&good).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("OK (1 services, 2 routes, 4 plugins)"),
        "{said}"
    );
    assert!(said.contains("nothing was started or connected"), "{said}");

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        BASE.replace("provider: openai", "provider: opena1")
            .replace("paths: [\"/a\"]", "paths: [\"a\"]"),
    )
    .unwrap();
    let out = tollgate().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "services[0].routes[0].plugins[0].config.model.provider: unknown variant \"opena1\""
        ),
        "{err}"
    );
    assert!(
        err.contains("services[0].routes[0].paths[0]: should start with"),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");

    let out = tollgate()
        .arg("validate")
        .arg(dir.join("absent.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let out = tollgate().arg("default-config").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("_format_version"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tollgate validate` reports every error of the document and of every plugin in one run,
/// with a hint for a misplaced or misspelt field, and an unknown vault prefix is an error.
#[test]
fn validate_reports_every_error_with_hints() {
    let dir = std::env::temp_dir().join(format!("tollgate-validate-all-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("seed.yaml");
    std::fs::write(
        &file,
        r#"_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: r1
        paths: ["/one"]
        plugins:
          - name: ai-proxy-advanced
            config:
              targets:
                - route_type: llm/v1/chat
                  model: {provider: openai, name: m}
              balancer:
                algorithm: round-robin
                retries: many
                targets:
                  - route_type: llm/v1/chat
                    model: {provider: openai, name: m}
      - name: r2
        paths: ["/two"]
        protocol: [http]
        plugins:
          - name: ai-proxy
            config:
              route_type: llm/v1/chat
              auth: {header_name: Authorization, header_value: "{vault://nope/key}"}
              model: {provider: openai, nme: m}
"#,
    )
    .unwrap();
    let out = tollgate().arg("validate").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let p1 = "services[0].routes[0].plugins[0].config";
    let p2 = "services[0].routes[1].plugins[0].config";
    for want in [
        format!("{p1}.balancer.targets: unknown field"),
        "did you mean \"config.targets\"?".to_string(),
        format!("{p1}.balancer.retries: invalid type: string \"many\""),
        format!("{p2}.model.nme: unknown field"),
        "did you mean \"config.model.name\"?".to_string(),
        format!("{p2}.auth.header_value: unknown vault 'nope'"),
        // A document-level error does not hide the plugins' errors.
        "services[0].routes[1].protocol: unknown field".to_string(),
        "did you mean \"services[0].routes[1].protocols\"?".to_string(),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert!(err.contains("5 error(s)"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tollgate validate` compiles and stops there: an OTLP exporter, an http-log sender and a
/// pgvector store are configured against a listener that records every connection, and
/// none is made (a served config connects to the store at once).
#[test]
fn validate_starts_nothing_and_connects_nowhere() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("tollgate-validate-quiet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kong.yaml");
    let yaml = format!(
        r#"
_format_version: "3.0"
plugins:
  - name: opentelemetry
    config: {{traces_endpoint: "http://127.0.0.1:{port}/v1/traces"}}
  - name: http-log
    config: {{http_endpoint: "http://127.0.0.1:{port}/logs"}}
services:
  - name: s
    url: http://127.0.0.1:{port}
    routes:
      - name: chat
        paths: ["/chat"]
        plugins:
          - name: ai-proxy-advanced
            config:
              balancer: {{algorithm: semantic}}
              embeddings:
                model:
                  provider: openai
                  name: text-embedding-3-small
                  options: {{upstream_url: "http://127.0.0.1:{port}/v1/embeddings"}}
              vectordb:
                strategy: pgvector
                dimensions: 64
                distance_metric: cosine
                threshold: 0.8
                pgvector: {{host: 127.0.0.1, port: {port}, database: test, user: postgres}}
              targets:
                - route_type: llm/v1/chat
                  description: "Programming"
                  model: {{provider: openai, name: gpt-code, options: {{upstream_url: "http://127.0.0.1:{port}/v1/chat/completions"}}}}
                - route_type: llm/v1/chat
                  description: "Mathematics"
                  model: {{provider: openai, name: gpt-math, options: {{upstream_url: "http://127.0.0.1:{port}/v1/chat/completions"}}}}
"#
    );
    std::fs::write(&file, yaml).unwrap();
    let out = tollgate().arg("validate").arg(&file).output().unwrap();
    let (said, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{said}{err}");
    assert!(
        said.contains("OK (1 services, 1 routes, 3 plugins)"),
        "{said}"
    );
    assert!(!err.contains("pgvector"), "no store was checked: {err}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("validate connected: {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The AI transformers: Kong's schema, and what tollgate cannot honour refused by name.
#[test]
fn ai_transformer_configs_are_checked_at_load() {
    let plugin = |name: &str, extra: &str| {
        format!(
            r#"
_format_version: "3.0"
services: [{{name: s, url: "http://svc:8080", routes: [{{name: r, paths: ["/x"]}}]}}]
plugins:
  - name: {name}
    config:
      prompt: p
      llm:
        route_type: llm/v1/chat
        model: {{provider: openai, name: gpt-4o}}
{extra}"#
        )
    };
    for name in ["ai-request-transformer", "ai-response-transformer"] {
        load(&plugin(name, "")).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let e = errors(&plugin(name, "      promt: q\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("plugins[0].config.promt: unknown field \"promt\""),
            "{e:?}"
        );
        assert!(e[0].ends_with("did you mean \"config.prompt\"?"), "{e:?}");
        let e = errors(&plugin(
            name,
            "      https_proxy_host: proxy\n      https_proxy_port: 3128\n",
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("plugins[0].config.https_proxy_host: forward proxies"),
            "{e:?}"
        );
    }
    let e = errors(&plugin(
        "ai-request-transformer",
        "      parse_llm_response_json_instructions: true\n",
    ));
    assert!(
        e[0].starts_with("plugins[0].config.parse_llm_response_json_instructions: unknown field"),
        "{e:?}"
    );
    let e = errors(
        &plugin("ai-response-transformer", "")
            .replace("route_type: llm/v1/chat", "route_type: llm/v1/completions"),
    );
    assert_eq!(
        e,
        ["plugins[0].config.llm.route_type: 'config.llm.route_type' must be 'llm/v1/chat' for AI transformer plugins"]
    );
    // The answer of an ai-proxy route takes ai-proxy's own path, which the response
    // transformer does not hook: refused rather than silently skipped.
    let with_ai = plugin("ai-response-transformer", "").replace(
        "plugins:\n",
        "plugins:\n  - name: ai-proxy\n    config: {route_type: llm/v1/chat, model: {provider: openai}}\n",
    );
    let e = errors(&with_ai);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("plugins[1]: ai-response-transformer is not supported by tollgate yet on a route with ai-proxy (route 'r')"),
        "{e:?}"
    );
}

/// `realtime/v1/realtime` loads on openai and azure (Kong's example included), with a
/// ws:// or wss:// upstream_url; other providers, and ws:// URLs on other route types, are
/// refused naming the field.
#[test]
fn realtime_route_type_loads_on_openai_and_azure_only() {
    let kong = include_str!("fixtures/kong-examples/ai-proxy-advanced--realtime-route-openai.yaml");
    assert!(load(kong).is_ok(), "{:?}", load(kong).err());
    let one = |model: &str, rt: &str| {
        format!("_format_version: \"3.0\"\nplugins:\n  - name: ai-proxy\n    config: {{route_type: {rt}, auth: {{header_name: Authorization, header_value: Bearer k}}, model: {model}}}\n")
    };
    let rt = "realtime/v1/realtime";
    assert!(load(&one(
        "{provider: openai, options: {upstream_url: \"wss://rt.example\"}}",
        rt
    ))
    .is_ok());
    assert!(load(&one(
        "{provider: azure, name: gpt-4o-realtime, options: {azure_instance: res}}",
        rt
    ))
    .is_ok());
    assert_eq!(
        errors(&one("{provider: anthropic, name: claude}", rt)),
        vec!["plugins[0].config.route_type: route_type 'realtime/v1/realtime' is not supported for provider 'anthropic' by tollgate (the Realtime API is served on openai and azure)"]
    );
    assert_eq!(
        errors(&one(
            "{provider: openai, name: m, options: {upstream_url: \"ws://x.example\"}}",
            "llm/v1/chat"
        )),
        vec!["plugins[0].config.model.options.upstream_url: ws:// and wss:// are for route_type 'realtime/v1/realtime'; use http:// or https://"]
    );
}
