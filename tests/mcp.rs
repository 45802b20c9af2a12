//! `ai-mcp-proxy` through the real gateway, against mock-llm's marketplace (a REST API
//! and an MCP server): conversion-listener, conversion-only + listener, passthrough, with
//! key-auth consumers and Kong's ACLs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{send, Harness, Reply};

const MCP: &str = r#"
_format_version: "3.0"
plugins:
  - name: prometheus
    config: {ai_metrics: true}
consumer_groups:
  - name: admin
    consumers: [{username: alice}]
  - name: developer
    consumers: [{username: bob}]
  - name: suspended
    consumers: [{username: carol}]
consumers:
  - username: alice
    keyauth_credentials: [{key: alice-key}]
  - username: bob
    keyauth_credentials: [{key: bob-key}]
  - username: carol
    keyauth_credentials: [{key: carol-key}]
services:
  - name: mcp-service
    url: "{MOCK}"
    routes:
      - name: mcp-route
        paths: ["/marketplace"]
        strip_path: false
        plugins:
          - name: key-auth
            config: {key_names: [apikey]}
          - name: file-log
            config: {path: "{DIR}/mcp.log"}
          - name: ai-mcp-proxy
            config:
              mode: conversion-listener
              logging: {log_statistics: true, log_payloads: true, log_audits: true}
              include_consumer_groups: true
              default_acl: [{scope: tools, allow: [developer, admin], deny: [suspended]}]
              tools:
                - description: Get users
                  method: GET
                  path: /marketplace/users
                  annotations: {title: Get users}
                  parameters: [{name: id, in: query, required: false, schema: {type: string}, description: Optional user ID}]
                  acl: {allow: [admin]}
                - description: Get orders for a user
                  method: GET
                  path: orders
                  annotations: {title: Get users orders}
                  parameters: [{name: userid, in: query, required: true, schema: {type: string}, description: User ID to filter orders}]
                - description: Place an order
                  name: place-order
                  method: POST
                  path: /marketplace/orders
                  request_body: {required: true, content: {application/json: {schema: {type: object, required: [item], properties: {item: {type: string}}}}}}
      - name: tools-route
        paths: ["/tools/marketplace"]
        strip_path: true
        plugins:
          - name: ai-mcp-proxy
            tags: [marketplace-tools]
            config:
              mode: conversion-only
              tools:
                - {description: All users, method: GET, path: /tools/marketplace/marketplace/users}
      - name: plain-users
        paths: ["/plain"]
      - name: mcp-elsewhere
        paths: ["/elsewhere"]
        plugins:
          - name: ai-mcp-proxy
            config:
              mode: conversion-listener
              tools:
                - {description: Users of another route, name: users, method: GET, path: /plain/marketplace/users}
      - name: mcp-listener
        paths: ["/mcp-listener"]
        plugins:
          - name: ai-mcp-proxy
            config: {mode: listener, server: {tag: marketplace-tools}}
  - name: upstream-mcp
    url: "{MOCK}/mcp"
    routes:
      - name: mcp-acl-route
        paths: ["/mcp"]
        plugins:
          - name: key-auth
            config: {key_names: [apikey]}
          - name: ai-mcp-proxy
            config:
              mode: passthrough-listener
              include_consumer_groups: true
              default_acl: [{scope: tools, allow: [developer, admin], deny: [suspended]}]
              tools:
                - {description: List users, name: list_users, acl: {allow: [admin], deny: [developer]}}
                - {description: Search orders, name: search_orders, acl: {allow: [admin], deny: [developer]}}
  - name: down-mcp
    url: "http://127.0.0.1:9/mcp"
    routes:
      - name: mcp-down
        paths: ["/mcp-down"]
        plugins:
          - name: ai-mcp-proxy
            config: {mode: passthrough-listener}
  - name: garbage-mcp
    url: "{MOCK}/marketplace/users"
    routes:
      - name: mcp-garbage
        paths: ["/mcp-garbage"]
        plugins:
          - name: ai-mcp-proxy
            config: {mode: passthrough-listener}
          - name: rate-limiting
            config: {minute: 2}
  - name: upstream-mcp-sse
    url: "{MOCK}/mcp-sse"
    routes:
      - name: mcp-sse-route
        paths: ["/mcp-sse"]
        plugins:
          - name: key-auth
            config: {key_names: [apikey]}
          - name: ai-mcp-proxy
            config:
              mode: passthrough-listener
              tools:
                - {description: List users, name: list_users, acl: {deny: [bob]}}
  - name: legacy-mcp
    url: "{MOCK}/mcp-legacy"
    routes:
      - name: mcp-legacy-route
        paths: ["/legacy"]
        plugins:
          - name: key-auth
            config: {key_names: [apikey]}
          - name: ai-mcp-proxy
            config:
              mode: passthrough-listener
              tools:
                - {description: List users, name: list_users, acl: {deny: [bob]}}
"#;

/// An MCP client session over streamable HTTP.
struct Session<'a> {
    h: &'a Harness,
    path: &'a str,
    key: &'a str,
    id: Option<String>,
    next: u64,
}

impl<'a> Session<'a> {
    fn new(h: &'a Harness, path: &'a str, key: &'a str) -> Session<'a> {
        Session {
            h,
            path,
            key,
            id: None,
            next: 1,
        }
    }

    async fn post(&mut self, msg: Value) -> Reply {
        let mut headers = vec![
            ("apikey", self.key),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        let sid = self.id.clone().unwrap_or_default();
        if self.id.is_some() {
            headers.push(("mcp-session-id", &sid));
            headers.push(("mcp-protocol-version", "2025-06-18"));
        }
        send("POST", &self.h.url(self.path), &headers, msg.to_string()).await
    }

    /// A request's JSON-RPC answer (an SSE answer's `data`).
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let r = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        let v = rpc_of(&r);
        assert_eq!(v["id"], id, "{v}");
        v
    }

    async fn initialize(&mut self) -> Value {
        let r = self
            .post(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "test", "version": "1"}}}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        self.id = r.header("mcp-session-id").map(str::to_string);
        assert!(self.id.is_some(), "a session id");
        let ok = self
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(ok.status, 202, "{}", ok.text());
        rpc_of(&r)
    }

    async fn tools(&mut self) -> Vec<String> {
        let v = self.request("tools/list", json!({})).await;
        v["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }
}

/// A JSON-RPC answer, as JSON or as an SSE answer's first `data`.
fn rpc_of(r: &Reply) -> Value {
    let text = r.text();
    let json = support::sse_data(&text)
        .into_iter()
        .next()
        .unwrap_or_else(|| text.clone());
    serde_json::from_str(&json).unwrap_or_else(|_| panic!("{text}"))
}

#[tokio::test]
async fn conversion_listener_serves_rest_endpoints_as_tools() {
    let h = Harness::start(MCP).await;
    let mut alice = Session::new(&h, "/marketplace", "alice-key");
    let init = alice.initialize().await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["result"]["serverInfo"]["name"], "tollgate");
    assert_eq!(
        alice.tools().await,
        ["Get users", "Get users orders", "place-order"]
    );
    let list = alice.request("tools/list", json!({})).await;
    let orders = &list["result"]["tools"][1];
    assert_eq!(
        orders["inputSchema"]["properties"]["query_userid"]["type"],
        "string"
    );
    assert_eq!(orders["inputSchema"]["required"], json!(["query_userid"]));
    assert_eq!(orders["annotations"]["title"], "Get users orders");

    // A call goes through the route to its service; the answer is the tool's text.
    let v = alice
        .request(
            "tools/call",
            json!({"name": "Get users", "arguments": {"query_id": "a1b2c3d4"}}),
        )
        .await;
    assert_eq!(v["result"]["isError"], false, "{v}");
    let user: Value =
        serde_json::from_str(v["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(user["name"], "Alice Johnson");
    // A relative tool path is under the route's path.
    let v = alice
        .request(
            "tools/call",
            json!({"name": "Get users orders", "arguments": {"query_userid": "e5f6g7h8"}}),
        )
        .await;
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Desk"),
        "{v}"
    );
    // A JSON body.
    let v = alice
        .request(
            "tools/call",
            json!({"name": "place-order", "arguments": {"body": {"item": "Chair"}}}),
        )
        .await;
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Chair"),
        "{v}"
    );
    // The service's error is the tool's error, not the protocol's.
    let v = alice
        .request(
            "tools/call",
            json!({"name": "Get users", "arguments": {"query_id": "nobody"}}),
        )
        .await;
    assert_eq!(v["result"]["isError"], true, "{v}");

    // Protocol errors: arguments the schema refuses, unknown tools and methods.
    let v = alice
        .request(
            "tools/call",
            json!({"name": "Get users orders", "arguments": {}}),
        )
        .await;
    assert_eq!(v["error"]["code"], -32602);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("query_userid"),
        "{v}"
    );
    let v = alice.request("tools/call", json!({"name": "nope"})).await;
    assert_eq!(v["error"]["message"], "Unknown tool: nope");
    let v = alice.request("resources/list", json!({})).await;
    assert_eq!(v["error"]["code"], -32601);
    let bad = alice.post(json!({"jsonrpc": "2.0", "id": 9})).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], -32600);
    let garbage = send(
        "POST",
        &h.url("/marketplace"),
        &[
            ("apikey", "alice-key"),
            ("content-type", "application/json"),
        ],
        "{not json",
    )
    .await;
    assert_eq!(
        (garbage.status, garbage.json()["error"]["code"].clone()),
        (400, json!(-32700))
    );
    // Sessions: required, and unknown ones are 404.
    let mut stranger = Session::new(&h, "/marketplace", "alice-key");
    let r = stranger
        .post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    stranger.id = Some("made-up".into());
    let r = stranger
        .post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let get = send(
        "GET",
        &h.url("/marketplace"),
        &[("apikey", "alice-key")],
        "",
    )
    .await;
    assert_eq!(get.status, 405);
    // No key: key-auth answers before MCP.
    let anon = send(
        "POST",
        &h.url("/marketplace"),
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(anon.status, 401);

    // ACLs: bob (developer) sees and calls only what developers may; carol (suspended)
    // nothing.
    let mut bob = Session::new(&h, "/marketplace", "bob-key");
    bob.initialize().await;
    assert_eq!(bob.tools().await, ["Get users orders", "place-order"]);
    let v = bob
        .request("tools/call", json!({"name": "Get users", "arguments": {}}))
        .await;
    assert_eq!(v["error"]["code"], -32602);
    assert_eq!(
        v["error"]["message"],
        "Tool 'Get users' is not available for consumer 'bob'"
    );
    let mut carol = Session::new(&h, "/marketplace", "carol-key");
    carol.initialize().await;
    assert!(carol.tools().await.is_empty());
    let users_calls = h
        .mock
        .requests()
        .iter()
        .filter(|r| r.path.contains("/marketplace/users"))
        .count();
    assert_eq!(users_calls, 2, "denied calls never reach the service");

    // The log: each JSON-RPC request under `ai.mcp` (Kong's shape), and the ACL decisions.
    // file-log writes off the request path: wait for the last request's line.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = h.log_lines("mcp.log");
        if lines
            .iter()
            .any(|l| l["ai"]["mcp"]["audit"][0]["action"] == "deny")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let calls: Vec<&Value> = lines
        .iter()
        .filter(|l| l["ai"]["mcp"]["rpc"][0]["method"] == "tools/call")
        .collect();
    let first = &calls[0]["ai"]["mcp"];
    assert_eq!(first["rpc"][0]["tool_name"], "Get users", "{first}");
    assert!(first["rpc"][0]["id"].is_string(), "{first}");
    assert!(first["mcp_session_id"].is_string(), "{first}");
    assert!(first["rpc"][0]["payload"]["request"]
        .as_str()
        .unwrap()
        .contains("a1b2c3d4"));
    assert_eq!(
        first["audit"][0],
        json!({"primitive_name": "Get users", "primitive": "tool", "action": "allow", "scope": "primitive",
               "consumer": {"id": first["audit"][0]["consumer"]["id"], "name": "admin", "identifier": "consumer_group"}})
    );
    let denied = calls
        .iter()
        .find(|l| l["ai"]["mcp"]["audit"][0]["action"] == "deny")
        .expect("bob's refusal is audited");
    assert_eq!(denied["ai"]["mcp"]["audit"][0]["consumer"]["name"], "bob");
    assert!(denied["ai"]["mcp"]["rpc"][0]["error"]
        .as_str()
        .unwrap()
        .contains("not available"));
    // Kong's MCP metrics, by method and tool.
    let metrics = support::get(&h.admin("/metrics")).await.text();
    let has = |line: &str| metrics.lines().any(|l| l.starts_with(line));
    assert!(
        has(
            r#"kong_ai_mcp_latency_ms_count{service="mcp-service",route="mcp-route",method="tools/call",workspace="default",tool_name="Get users"}"#
        ),
        "{metrics}"
    );
    assert!(
        has(
            r#"kong_ai_mcp_error_total{service="mcp-service",route="mcp-route",type="Invalid params",method="tools/call",workspace="default",tool_name="Get users"} "#
        ),
        "{metrics}"
    );
    assert!(
        has(
            r#"kong_ai_mcp_response_body_size_bytes_bucket{service="mcp-service",route="mcp-route",method="tools/list""#
        ),
        "{metrics}"
    );
    // The tool calls' own requests through the route are logged too (no `ai.mcp`).
    assert!(lines.iter().any(|l| l["request"]["uri"]
        .as_str()
        .is_some_and(|u| u.starts_with("/marketplace/users"))));
}

#[tokio::test]
async fn a_listener_serves_the_tools_of_tagged_conversion_plugins() {
    let h = Harness::start(MCP).await;
    let mut s = Session::new(&h, "/mcp-listener", "");
    s.initialize().await;
    assert_eq!(s.tools().await, ["tools-route-1"]);
    let v = s
        .request("tools/call", json!({"name": "tools-route-1"}))
        .await;
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Bob Smith"),
        "{v}"
    );
}

#[tokio::test]
async fn passthrough_proxies_mcp_with_acls() {
    let h = Harness::start(MCP).await;
    for path in ["/mcp", "/mcp-sse"] {
        let mut alice = Session::new(&h, path, "alice-key");
        let init = alice.initialize().await;
        assert_eq!(
            init["result"]["serverInfo"]["name"], "mock-marketplace",
            "{path}"
        );
        let v = alice
            .request(
                "tools/call",
                json!({"name": "search_orders", "arguments": {"name": "desk"}}),
            )
            .await;
        assert!(
            v["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("Desk"),
            "{path}: {v}"
        );
    }
    let mut alice = Session::new(&h, "/mcp", "alice-key");
    alice.initialize().await;
    assert_eq!(
        alice.tools().await,
        [
            "list_users",
            "get_user",
            "list_orders",
            "list_orders_for_user",
            "search_orders"
        ]
    );
    let mut bob = Session::new(&h, "/mcp", "bob-key");
    bob.initialize().await;
    assert_eq!(
        bob.tools().await,
        ["get_user", "list_orders", "list_orders_for_user"]
    );
    let before = h.mock.requests().len();
    let v = bob
        .request("tools/call", json!({"name": "list_users"}))
        .await;
    assert_eq!(
        v["error"]["message"],
        "Tool 'list_users' is not available for consumer 'bob'"
    );
    assert_eq!(h.mock.requests().len(), before, "not forwarded");
    // Filtering works on SSE answers too.
    let mut bob = Session::new(&h, "/mcp-sse", "bob-key");
    bob.initialize().await;
    let tools = bob.tools().await;
    assert!(
        !tools.contains(&"list_users".to_string()) && tools.len() == 4,
        "{tools:?}"
    );
}

/// An HTTP+SSE session: the stream the client opened, read event by event.
struct SseStream {
    body: hyper::body::Incoming,
    buf: String,
}

impl SseStream {
    async fn open(url: &str, key: &str) -> SseStream {
        use hyper_util::client::legacy::Client;
        let client: Client<_, http_body_util::Full<bytes::Bytes>> =
            Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let req = http::Request::get(url)
            .header("accept", "text/event-stream")
            .header("apikey", key)
            .body(Default::default())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        SseStream {
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    /// The next event's type and data.
    async fn next(&mut self) -> (String, String) {
        use http_body_util::BodyExt;
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..i + 2).collect();
                let field = |f: &str| {
                    event
                        .lines()
                        .find_map(|l| l.strip_prefix(f))
                        .unwrap_or("")
                        .to_string()
                };
                return (field("event: "), field("data: "));
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("an event within 10 s")
                .expect("the stream is open")
                .unwrap();
            if let Ok(d) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&d));
            }
        }
    }

    /// The next message's JSON.
    async fn message(&mut self) -> Value {
        let (event, data) = self.next().await;
        assert_eq!(event, "message", "{data}");
        serde_json::from_str(&data).unwrap()
    }
}

/// A tool whose path leads to another route is called through that route, and the call's
/// marker (which only an MCP route's listener reads) does not reach its upstream.
#[tokio::test]
async fn a_tool_on_another_route_reaches_its_upstream_unmarked() {
    let h = Harness::start(MCP).await;
    let mut s = Session::new(&h, "/elsewhere", "none");
    s.initialize().await;
    let v = s.request("tools/call", json!({"name": "users"})).await;
    let text = v["result"]["content"][0]["text"].as_str().unwrap_or("");
    assert!(text.contains("Alice Johnson"), "{v}");
    let last = h.mock.requests().pop().unwrap();
    assert_eq!(last.path, "/marketplace/users");
    assert!(
        last.headers
            .iter()
            .all(|(k, _)| !k.starts_with("x-tollgate")),
        "{:?}",
        last.headers
    );
}

/// MCP's older HTTP+SSE transport through passthrough: the endpoint the upstream names is
/// rewritten to the gateway's path, answers come on the stream, lists are filtered and a
/// denied call is refused on the stream, never forwarded.
#[tokio::test]
async fn passthrough_relays_the_http_sse_transport() {
    let h = Harness::start(MCP).await;
    let mut bob = SseStream::open(&h.url("/legacy/sse"), "bob-key").await;
    let (event, endpoint) = bob.next().await;
    assert_eq!(event, "endpoint");
    assert!(
        endpoint.starts_with("/legacy/messages/?session_id=legacy-"),
        "{endpoint}"
    );
    let post = |msg: Value| {
        let url = h.url(&endpoint);
        async move {
            send(
                "POST",
                &url,
                &[("content-type", "application/json"), ("apikey", "bob-key")],
                msg.to_string(),
            )
            .await
        }
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    assert_eq!(post(init).await.status, 202);
    let v = bob.message().await;
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["serverInfo"]["name"], "mock-marketplace");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(post(note).await.status, 202);

    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    assert_eq!(post(list).await.status, 202);
    let v = bob.message().await;
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(!names.contains(&"list_users"), "{names:?}");

    let before = h.mock.requests().len();
    let denied = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "list_users"}});
    let r = post(denied).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let v = bob.message().await;
    assert_eq!(v["id"], 3);
    assert_eq!(v["error"]["code"], -32602);
    assert_eq!(
        v["error"]["message"],
        "Tool 'list_users' is not available for consumer 'bob'"
    );
    assert_eq!(h.mock.requests().len(), before, "not forwarded");

    let call = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
        "params": {"name": "get_user", "arguments": {"id": "e5f6g7h8"}}});
    assert_eq!(post(call).await.status, 202);
    let v = bob.message().await;
    assert_eq!(v["id"], 4);
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Bob Smith"),
        "{v}"
    );
    // Another client's stream is its own session.
    let mut alice = SseStream::open(&h.url("/legacy/sse"), "alice-key").await;
    let (_, other) = alice.next().await;
    assert_ne!(other, endpoint);
    // Once the stream is gone, the upstream no longer knows the session.
    drop(bob);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ping = json!({"jsonrpc": "2.0", "id": 5, "method": "ping"});
    let r = post(ping).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(rpc_of(&r)["error"]["code"], -32603);
}

/// Kong's example configs load as they are.
#[test]
fn kong_examples_load() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kong-mcp");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let env = |_: &str| None;
        let raw = tollgate::config::parse_document(&text, &env)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = tollgate::gateway::Snapshot::compile(raw, &env) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert_eq!(n, 11);
}

/// An upstream MCP server that is down or answers garbage: a JSON-RPC error with the
/// request's id and a status that says so, never a hang; rate-limiting counts MCP requests.
#[tokio::test]
async fn passthrough_failures_are_json_rpc_errors() {
    let h = Harness::start(MCP).await;
    let init = json!({"jsonrpc": "2.0", "id": 7, "method": "initialize",
                      "params": {"protocolVersion": "2025-06-18", "capabilities": {}}});
    let post = |path: &str| {
        let url = h.url(path);
        let body = init.to_string();
        async move { send("POST", &url, &[("content-type", "application/json")], body).await }
    };
    let down = post("/mcp-down").await;
    assert_eq!(down.status, 502, "{}", down.text());
    let e = down.json();
    assert_eq!(
        (e["id"].clone(), e["error"]["code"].clone()),
        (json!(7), json!(-32603)),
        "{e}"
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("HTTP 502"),
        "{e}"
    );
    let garbage = post("/mcp-garbage").await;
    assert_eq!(garbage.status, 502, "{}", garbage.text());
    let e = garbage.json();
    assert_eq!(e["id"], 7);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not JSON-RPC"),
        "{e}"
    );
    // rate-limiting (minute: 2) on an MCP route counts its requests.
    assert_eq!(post("/mcp-garbage").await.status, 502);
    let limited = post("/mcp-garbage").await;
    assert_eq!(limited.status, 429, "{}", limited.text());
}

/// MCP calls show in usage analytics by consumer and tool (provider `mcp`, model the tool).
#[tokio::test]
async fn analytics_count_tool_calls_by_consumer_and_tool() {
    let start = tollgate::rt::clock::millis_since_epoch() / 1000;
    let h = Harness::start(MCP).await;
    let dir = std::env::temp_dir().join(format!("tollgate-mcp-analytics-{}", uuid::Uuid::new_v4()));
    let backend = tollgate::observe::analytics::Backend::Sqlite(dir.join("a.db"));
    let a = tollgate::observe::analytics::Analytics::start(backend, dir.clone()).unwrap();
    h.gw.gateway.analytics.set(std::sync::Arc::new(a)).unwrap();
    let mut alice = Session::new(&h, "/marketplace", "alice-key");
    alice.initialize().await;
    for _ in 0..2 {
        alice
            .request("tools/call", json!({"name": "Get users", "arguments": {}}))
            .await;
    }
    let url = h.admin(&format!(
        "/analytics/usage?from={start}&bucket=hour&group_by=model&consumer=alice"
    ));
    let requests = |series: &Value, key: &str| -> i64 {
        series
            .as_array()
            .and_then(|s| s.iter().find(|x| x["key"] == key))
            .and_then(|x| x["points"].as_array())
            .map(|p| p.iter().filter_map(|p| p["requests"].as_i64()).sum())
            .unwrap_or(0)
    };
    let mut series = Value::Null;
    for _ in 0..100 {
        series = support::get(&url).await.json()["series"].clone();
        if requests(&series, "Get users") == 2 && requests(&series, "initialize") == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(requests(&series, "Get users"), 2, "{series}");
    let keys: Vec<&str> = series
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"Get users") && keys.contains(&"initialize"),
        "{series}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
