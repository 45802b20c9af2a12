//! Kong-shaped Admin API: node info, status, entities (reads here, writes in `write.rs`),
//! config.

pub mod cluster;
pub mod control;
pub mod errors;
pub mod form;
pub mod others;
pub mod schemas;
pub mod state;
pub mod write;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::net::inbound;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{json, Value};

use self::errors::AdminError;
use self::state::Kind;

use crate::gateway::Gateway;
use crate::gateway::Snapshot;
use crate::plugins::Plugin;

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, v: Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::SERVER,
        HeaderValue::from_static(crate::SERVER_TOKEN),
    );
    r
}

/// Compares digests so the time taken does not depend on where the strings differ.
fn same_secret(a: &str, b: &str) -> bool {
    let d = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let (x, y) = (d(a), d(b));
    x.as_ref()
        .iter()
        .zip(y.as_ref())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// The largest Admin API body (a whole declarative config for `POST /config`).
const MAX_BODY: usize = 32 * 1024 * 1024;

fn error(e: &AdminError) -> Resp {
    let (status, body) = e.response();
    reply(status, body)
}

/// The usage dashboard's static files, embedded in the binary (no CDN).
fn dashboard(segs: &[&str]) -> Option<Resp> {
    let (body, kind): (&'static str, &'static str) = match segs {
        ["dashboard"] => (
            include_str!("dashboard/index.html"),
            "text/html; charset=utf-8",
        ),
        ["dashboard", "app.js"] => (
            include_str!("dashboard/app.js"),
            "text/javascript; charset=utf-8",
        ),
        ["dashboard", "style.css"] => (
            include_str!("dashboard/style.css"),
            "text/css; charset=utf-8",
        ),
        _ => return None,
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self'"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}

fn not_found() -> Resp {
    reply(StatusCode::NOT_FOUND, json!({"message": "Not found"}))
}

/// What the Admin API serves: the running gateway and the write side that edits it (the
/// request path never sees the latter).
pub struct Admin {
    pub gw: Arc<Gateway>,
    pub control: control::Control,
}

/// Compiles config text (errors name the fields as written), puts it in service
/// ([`Snapshot::activate`]) and builds the declarative state Admin API writes edit.
pub fn load(config_text: &str) -> Result<(Snapshot, state::State), crate::config::ConfigErrors> {
    load_env(config_text, &|name: &str| std::env::var(name).ok())
}

/// [`load`], reading environment variables through `env` instead of the process's.
pub fn load_env(
    config_text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Snapshot, state::State), crate::config::ConfigErrors> {
    let mut snap = crate::gateway::load_str_env(config_text, env)?;
    snap.activate()?;
    let state = state::State::from_text(config_text, env)?;
    snap.hash = state.hash();
    Ok((snap, state))
}

/// Answers one Admin API request.
pub async fn handle(admin: &Admin, req: Request<inbound::Body>) -> Resp {
    let gw: &Gateway = &admin.gw;
    let snap = gw.snapshot.load_full();
    let path = req.uri().path().trim_end_matches('/').to_string();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // The dashboard's page and scripts hold no data; its fetches carry the token.
    if req.method() == Method::GET {
        if let Some(r) = dashboard(&segs) {
            return r;
        }
    }
    if let Some(token) = &admin.control.token {
        // `Authorization: Bearer …`, or Kong's `Kong-Admin-Token` (what the Kong Ingress
        // Controller and decK send).
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let kong = req
            .headers()
            .get("kong-admin-token")
            .and_then(|v| v.to_str().ok());
        let given = bearer.or(kong).map(str::trim);
        let ok = given.is_some_and(|g| same_secret(g, token.expose()));
        if !ok {
            let mut r = error(&AdminError::Unauthorized);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tollgate admin\""),
            );
            return r;
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let method = req.method().clone();
        let form = form::is_form(
            req.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        // A stalled upload may not hold the connection for ever (the proxy's body timeout,
        // here for the whole body).
        let wait = Duration::from_millis(gw.body_timeout_ms.load(Ordering::Relaxed));
        let read = tokio::time::timeout(wait, Limited::new(req.into_body(), MAX_BODY).collect());
        let body = match read.await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) if e.is::<LengthLimitError>() => {
                return error(&AdminError::TooLarge(MAX_BODY))
            }
            Ok(Err(_)) => return error(&AdminError::BadJson),
            Err(_) => {
                gw.stats.body_timeouts.fetch_add(1, Ordering::Relaxed);
                return error(&AdminError::BodyTimeout);
            }
        };
        let body = write::Body { bytes: &body, form };
        return match write::handle(admin, &method, &segs, &query, body).await {
            Ok((status, Some(v))) => reply(status, v),
            Ok((status, None)) => {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = status;
                r
            }
            Err(e) => error(&e),
        };
    }
    match segs.as_slice() {
        [] => root(gw, &snap, admin.control.cluster.is_some()),
        ["status"] => status(gw, &snap, admin.control.cluster.as_deref()),
        ["metrics"] => metrics(gw, admin.control.cluster.as_deref()),
        ["quotas"] => quotas(gw).await,
        ["analytics", what] => analytics(gw, what, &query).await,
        ["config"] => {
            let guard = admin.control.state.lock().await;
            match guard.as_ref() {
                Some(st) => config_of(st),
                None => config(&snap),
            }
        }
        ["schemas", "plugins", name] => match schemas::plugin(name) {
            Some(v) => reply(StatusCode::OK, v),
            None => reply(
                StatusCode::NOT_FOUND,
                json!({"message": format!("No plugin named '{name}'")}),
            ),
        },
        ["plugins", "enabled"] => reply(
            StatusCode::OK,
            json!({"enabled_plugins": crate::plugins::KONG_PLUGINS.map(|(n, _)| n)}),
        ),
        ["services"] => list(
            &snap,
            &query,
            "/services",
            snap.services
                .iter()
                .map(|s| (s.to_json(), &s.tags))
                .collect(),
        ),
        ["services", key] => match find_service(&snap, key) {
            Some(i) => reply(StatusCode::OK, snap.services[i].to_json()),
            None => not_found(),
        },
        ["services", key, "routes"] => match find_service(&snap, key) {
            Some(i) => list(
                &snap,
                &query,
                &format!("/services/{key}/routes"),
                snap.routes
                    .iter()
                    .filter(|r| r.service == Some(i))
                    .map(|r| (r.to_json(&snap), &r.tags))
                    .collect(),
            ),
            None => not_found(),
        },
        ["services", key, "plugins"] => match find_service(&snap, key) {
            Some(i) => list(
                &snap,
                &query,
                &format!("/services/{key}/plugins"),
                snap.plugins
                    .iter()
                    .filter(|p| p.service == Some(i))
                    .map(|p| (p.to_json(&snap), &p.tags))
                    .collect(),
            ),
            None => not_found(),
        },
        ["routes"] => list(
            &snap,
            &query,
            "/routes",
            snap.routes
                .iter()
                .map(|r| (r.to_json(&snap), &r.tags))
                .collect(),
        ),
        ["routes", key] => match find_route(&snap, key) {
            Some(i) => reply(StatusCode::OK, snap.routes[i].to_json(&snap)),
            None => not_found(),
        },
        ["routes", key, "service"] => {
            match find_route(&snap, key).and_then(|i| snap.routes[i].service) {
                Some(s) => reply(StatusCode::OK, snap.services[s].to_json()),
                None => not_found(),
            }
        }
        ["routes", key, "plugins"] => match find_route(&snap, key) {
            Some(i) => list(
                &snap,
                &query,
                &format!("/routes/{key}/plugins"),
                snap.plugins
                    .iter()
                    .filter(|p| p.route == Some(i))
                    .map(|p| (p.to_json(&snap), &p.tags))
                    .collect(),
            ),
            None => not_found(),
        },
        ["plugins"] => list(
            &snap,
            &query,
            "/plugins",
            snap.plugins
                .iter()
                .map(|p| (p.to_json(&snap), &p.tags))
                .collect(),
        ),
        ["plugins", key] => match snap
            .plugins
            .iter()
            .find(|p| p.id == *key || p.instance_name.as_deref() == Some(key))
        {
            Some(p) => reply(StatusCode::OK, p.to_json(&snap)),
            None => not_found(),
        },
        [coll @ ("upstreams" | "certificates" | "snis" | "ca_certificates"), rest @ ..] => {
            let guard = admin.control.state.lock().await;
            let empty = state::State::empty();
            let st = guard.as_ref().unwrap_or(&empty);
            others_read(st, &snap, coll, rest, &query)
        }
        ["consumers" | "consumer_groups" | "vaults" | "key-auths", ..]
        | ["services" | "routes", _, _, _] => {
            let guard = admin.control.state.lock().await;
            let empty = state::State::empty();
            let st = guard.as_ref().unwrap_or(&empty);
            state_read(st, &snap, &segs, &query)
        }
        _ => not_found(),
    }
}

/// Reads of the collections the Admin API does not write (upstreams and their targets,
/// certificates, SNIs, CA certificates).
fn others_read(
    st: &state::State,
    snap: &Snapshot,
    coll: &str,
    rest: &[&str],
    query: &[(String, String)],
) -> Resp {
    let page = |base: &str, items: Vec<Value>| {
        let tags: Vec<Option<Vec<String>>> = items.iter().map(tags_of).collect();
        list(snap, query, base, items.into_iter().zip(&tags).collect())
    };
    let key_of = |v: &Value, key: &str| v["id"] == key || v["name"] == key;
    match rest {
        [] => page(&format!("/{coll}"), others::collection(st, coll)),
        [key] => match others::collection(st, coll)
            .into_iter()
            .find(|v| key_of(v, key))
        {
            Some(v) => reply(StatusCode::OK, v),
            None => not_found(),
        },
        [key, "targets"] if coll == "upstreams" => match others::targets(st, key) {
            Some(t) => page(&format!("/upstreams/{key}/targets"), t),
            None => not_found(),
        },
        _ => not_found(),
    }
}

/// Reads answered from the declarative state: consumers, consumer groups and their
/// memberships, vaults, and entities addressed under a parent.
fn state_read(
    st: &state::State,
    snap: &Snapshot,
    segs: &[&str],
    query: &[(String, String)],
) -> Resp {
    let views = |kind: Kind, ids: Vec<String>| -> Vec<(Value, Option<Vec<String>>)> {
        ids.iter()
            .map(|id| {
                let v = write::view(kind, st, snap, id);
                let tags = tags_of(&v);
                (v, tags)
            })
            .collect()
    };
    let all = |kind: Kind| -> Vec<String> {
        st.list(kind)
            .iter()
            .filter_map(|e| e.get("id").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let page = |base: &str, items: Vec<(Value, Option<Vec<String>>)>| {
        list(
            snap,
            query,
            base,
            items.iter().map(|(v, t)| (v.clone(), t)).collect(),
        )
    };
    let found = |kind: Kind, key: &str| st.find(kind, key).and_then(|i| st.id(kind, i));
    let children = |kind: Kind, field: &str, parent: &str| -> Vec<String> {
        st.list(kind)
            .iter()
            .filter(|e| state::ref_id(e.get(field)) == Some(parent))
            .filter_map(|e| e.get("id").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let one = |kind: Kind, id: Option<String>| match id {
        Some(id) => reply(StatusCode::OK, write::view(kind, st, snap, &id)),
        None => not_found(),
    };
    match segs {
        [coll] => match Kind::from_segment(coll) {
            Some(kind) => page(&format!("/{coll}"), views(kind, all(kind))),
            None => not_found(),
        },
        [coll, key] => match Kind::from_segment(coll) {
            Some(kind) => one(kind, found(kind, key)),
            None => not_found(),
        },
        ["consumer_groups", g, "consumers"] => match st.find(Kind::ConsumerGroups, g) {
            Some(gi) => page(
                &format!("/consumer_groups/{g}/consumers"),
                views(Kind::Consumers, st.members(gi)),
            ),
            None => not_found(),
        },
        ["consumers", c, "consumer_groups"] => match found(Kind::Consumers, c) {
            Some(cid) => {
                let groups: Vec<String> = (0..st.list(Kind::ConsumerGroups).len())
                    .filter(|gi| st.members(*gi).contains(&cid))
                    .filter_map(|gi| st.id(Kind::ConsumerGroups, gi))
                    .collect();
                page(
                    &format!("/consumers/{c}/consumer_groups"),
                    views(Kind::ConsumerGroups, groups),
                )
            }
            None => not_found(),
        },
        [parent @ ("consumers" | "consumer_groups"), key, child @ ("plugins" | "key-auth")] => {
            let (kind, field) = if *parent == "consumers" {
                (Kind::Consumers, "consumer")
            } else {
                (Kind::ConsumerGroups, "consumer_group")
            };
            let ckind = if *child == "plugins" {
                Kind::Plugins
            } else {
                Kind::KeyauthCredentials
            };
            match found(kind, key) {
                Some(id) => page(
                    &format!("/{parent}/{key}/{child}"),
                    views(ckind, children(ckind, field, &id)),
                ),
                None => not_found(),
            }
        }
        ["key-auths", k, "consumer"] => {
            let consumer = st
                .find(Kind::KeyauthCredentials, k)
                .and_then(|i| st.get(Kind::KeyauthCredentials, i))
                .and_then(|e| state::ref_id(e.get("consumer")).map(str::to_string));
            one(Kind::Consumers, consumer)
        }
        [parent, pkey, child, ckey] => {
            let nested = match (*parent, *child) {
                ("services", "routes") => Some((Kind::Services, "service", Kind::Routes)),
                ("services", "plugins") => Some((Kind::Services, "service", Kind::Plugins)),
                ("routes", "plugins") => Some((Kind::Routes, "route", Kind::Plugins)),
                ("consumers", "plugins") => Some((Kind::Consumers, "consumer", Kind::Plugins)),
                ("consumers", "key-auth") => {
                    Some((Kind::Consumers, "consumer", Kind::KeyauthCredentials))
                }
                ("consumer_groups", "plugins") => {
                    Some((Kind::ConsumerGroups, "consumer_group", Kind::Plugins))
                }
                _ => None,
            };
            let Some((pkind, field, ckind)) = nested else {
                return not_found();
            };
            let pid = found(pkind, pkey);
            let cid = found(ckind, ckey).filter(|c| {
                pid.as_ref()
                    .is_some_and(|p| children(ckind, field, p).contains(c))
            });
            one(ckind, cid)
        }
        _ => not_found(),
    }
}

fn tags_of(v: &Value) -> Option<Vec<String>> {
    v.get("tags").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect()
    })
}

/// `GET /config` from the declarative state (secrets redacted).
fn config_of(st: &state::State) -> Resp {
    let mut doc = st.document();
    crate::gateway::snapshot::redact_secrets(&mut doc);
    write::redact_vaults(&mut doc);
    match serde_norway::to_string(&doc) {
        Ok(y) => reply(StatusCode::OK, json!({"config": y})),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"message": format!("An unexpected error occurred: {e}")}),
        ),
    }
}

fn find_service(snap: &Snapshot, key: &str) -> Option<usize> {
    snap.services
        .iter()
        .position(|s| s.id == key || s.name.as_deref() == Some(key))
}

fn find_route(snap: &Snapshot, key: &str) -> Option<usize> {
    snap.routes
        .iter()
        .position(|r| r.id == key || r.name.as_deref() == Some(key))
}

/// Kong's list shape with `size`/`offset` paging and `tags` filters (`a,b` = AND, `a/b` = OR).
fn list(
    _snap: &Snapshot,
    query: &[(String, String)],
    base: &str,
    items: Vec<(Value, &Option<Vec<String>>)>,
) -> Resp {
    let get = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    let size = match get("size").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(s)) if (1..=1000).contains(&s) => s,
        Some(_) => {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"code": 9, "name": "invalid size", "message": "size must be an integer between 1 and 1000"}),
            )
        }
    };
    let offset = match get("offset").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(o)) => o,
        Some(Err(_)) => {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"code": 7, "name": "invalid offset", "message": "invalid offset"}),
            )
        }
    };
    let tags = get("tags");
    let filtered: Vec<Value> = items
        .into_iter()
        .filter(|(_, t)| match tags {
            None => true,
            Some(spec) => {
                let have = t.as_deref().unwrap_or(&[]);
                if spec.contains('/') {
                    spec.split('/').any(|x| have.iter().any(|h| h == x))
                } else {
                    spec.split(',').all(|x| have.iter().any(|h| h == x))
                }
            }
        })
        .map(|(v, _)| v)
        .collect();
    let page: Vec<Value> = filtered.iter().skip(offset).take(size).cloned().collect();
    let more = offset + size < filtered.len();
    let mut body = json!({"data": page, "next": null});
    if more {
        let next_off = (offset + size).to_string();
        let mut next = format!("{base}?offset={next_off}&size={size}");
        if let Some(t) = tags {
            next.push_str("&tags=");
            next.push_str(&form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>());
        }
        body["next"] = Value::String(next);
        body["offset"] = Value::String(next_off);
    }
    reply(StatusCode::OK, body)
}

fn root(gw: &Gateway, snap: &Snapshot, clustered: bool) -> Resp {
    let available: serde_json::Map<String, Value> = crate::plugins::KONG_PLUGINS
        .into_iter()
        .map(|(n, p)| {
            (
                n.to_string(),
                json!({"version": crate::VERSION, "priority": p}),
            )
        })
        .collect();
    let mut enabled: Vec<&str> = snap.plugins.iter().map(|p| p.name.as_str()).collect();
    enabled.sort_unstable();
    enabled.dedup();
    reply(
        StatusCode::OK,
        json!({
            "tagline": "Welcome to tollgate",
            // The Kong version whose Admin API and plugins this serves: Kong's own tools
            // (the Ingress Controller, decK) gate features on it and refuse what is older
            // than they support. Tollgate's own version is `tollgate_version`.
            "version": crate::KONG_VERSION,
            "tollgate_version": crate::VERSION,
            "edition": "community",
            "hostname": hostname(),
            "node_id": gw.node_id,
            "lua_version": null,
            "plugins": {"available_on_server": available, "enabled_in_cluster": enabled},
            // A cluster node keeps its entities in PostgreSQL (Kong's traditional mode);
            // one node is DB-less, its configuration applied whole through `POST /config`.
            "configuration": {
                "database": if clustered { "postgres" } else { "off" },
                "role": "traditional",
                "router_flavor": "traditional_compatible",
                // The Ingress Controller reports these on Gateway API listeners.
                "proxy_listeners": proxy_listeners(gw),
                "stream_listeners": [],
            },
            "pids": {"master": std::process::id(), "workers": [std::process::id()]},
            "timers": {"running": 0, "pending": 0},
        }),
    )
}

/// The proxy's listeners as Kong's `GET /` lists them.
fn proxy_listeners(gw: &Gateway) -> Vec<Value> {
    gw.proxy_listeners
        .get()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|(a, tls)| {
            json!({
                "ip": a.ip().to_string(),
                "port": a.port(),
                "listener": format!("{a}{}", if *tls { " ssl http2" } else { "" }),
                "ssl": tls,
                "http2": tls,
                "proxy_protocol": false,
                "deferred": false,
                "reuseport": false,
                "bind": false,
            })
        })
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn status(gw: &Gateway, snap: &Snapshot, cluster: Option<&cluster::Cluster>) -> Resp {
    reply(StatusCode::OK, status_body(gw, snap, cluster))
}

/// The node's `/status` document (the Admin API's, and the status listener's).
pub fn status_of(admin: &Admin) -> Value {
    let snap = admin.gw.snapshot.load_full();
    status_body(&admin.gw, &snap, admin.control.cluster.as_deref())
}

fn status_body(gw: &Gateway, snap: &Snapshot, cluster: Option<&cluster::Cluster>) -> Value {
    let s = &gw.stats;
    let active = s.active.load(Ordering::Relaxed);
    // Kong's `database.reachable`: true without a database (DB-less), as Kong says.
    let reachable = cluster.is_none_or(cluster::Cluster::store_up);
    let store = match cluster {
        None => json!({"kind": "file"}),
        Some(c) => json!({"kind": "postgres", "reachable": c.store_up(), "version": c.version()}),
    };
    json!({
        "database": {"reachable": reachable},
        // Where the configuration lives, and the stored version this node runs.
        "configuration_store": store,
        // Each ai-proxy target: whether it takes requests, or what took it out.
        "ai_targets": ai_targets(snap),
        "server": {
            "connections_accepted": s.accepted.load(Ordering::Relaxed),
            "connections_active": active,
            "connections_handled": s.accepted.load(Ordering::Relaxed),
            "connections_reading": 0,
            "connections_writing": active,
            "connections_waiting": 0,
            "total_requests": s.total_requests.get(),
        },
        "memory": {"workers_lua_vms": [], "lua_shared_dicts": {}},
        "configuration_hash": snap.hash,
        // Tollgate's own counters (Kong's /status has no quota section).
        "quotas": {
            "rejections": s.quota_rejections.load(Ordering::Relaxed),
            "store_errors": s.quota_store_errors.load(Ordering::Relaxed),
        },
        // The last config reload (`--watch`, SIGHUP): null before the first.
        "config_reload": reload_status(gw),
        // Connections closed by the client limits (--client-header-timeout, …).
        "connection_limits": {
            "header_timeouts": s.header_timeouts.load(Ordering::Relaxed),
            "body_timeouts": s.body_timeouts.load(Ordering::Relaxed),
            "idle_timeouts": s.idle_timeouts.load(Ordering::Relaxed),
            "evicted": s.evicted.load(Ordering::Relaxed),
            "refused": s.refused.load(Ordering::Relaxed),
        },
        // Connections each proxy worker accepted (--workers): how the load spreads.
        "workers": s.worker_accepted.get().map_or(&[][..], |w| &w[..]).iter().enumerate()
            .map(|(id, n)| json!({"id": id, "connections_accepted": n.load(Ordering::Relaxed)}))
            .collect::<Vec<_>>(),
    })
}

/// Every ai-proxy(-advanced) target of the running config and its availability.
fn ai_targets(snap: &Snapshot) -> Value {
    let mut out = Vec::new();
    for_each_target(snap, |ai, i, upstream, (healthy, down_by)| {
        out.push(
            json!({"plugin": ai.plugin_id, "target": i, "upstream": upstream,
                        "healthy": healthy, "down_by": down_by}),
        );
    });
    Value::Array(out)
}

/// Calls `f` with every ai-proxy target: its plugin, index, `host:port` and availability.
fn for_each_target(
    snap: &Snapshot,
    mut f: impl FnMut(&crate::plugins::ai_proxy::AiProxy, usize, String, (bool, Option<&str>)),
) {
    for p in &snap.plugins {
        let crate::plugins::Plugin::AiProxy(ai) = &p.plugin else {
            continue;
        };
        for (i, t) in ai.targets.targets.iter().enumerate() {
            let upstream = format!("{}:{}", t.upstream.host, t.upstream.port);
            f(ai, i, upstream, ai.balancer.availability(i));
        }
    }
}

/// The last reload as `/status` shows it.
fn reload_status(gw: &Gateway) -> Value {
    let failures = gw.reload.failures.load(Ordering::Relaxed);
    match gw.reload.last() {
        None => json!({"last": null, "failures": failures}),
        Some(l) => json!({
            "last": {
                "ok": l.errors.is_empty(),
                "at": l.at_ms / 1000,
                "file": l.file,
                "errors": l.errors,
            },
            "failures": failures,
        }),
    }
}

/// A limit the current config has: what its counters' keys start and end with.
struct ConfiguredLimit {
    plugin: &'static str,
    /// `rl:<id>:` or `ai:<scope>:`.
    prefix: String,
    /// `:<period>` or `:<label>:<what>`.
    suffix: String,
    window: u64,
    limit: f64,
    sliding: bool,
    /// What counters are kept per (`consumer`, `ip`, …).
    kind: &'static str,
    /// Where its counters live (None: this node's memory).
    redis: Option<Arc<crate::quota::redis::RedisCounters>>,
}

impl ConfiguredLimit {
    fn matches(&self, key: &str, window: u64) -> bool {
        self.window == window && key.starts_with(&self.prefix) && key.ends_with(&self.suffix)
    }
}

/// Every quota limit of `snap`'s plugins.
fn configured_limits(snap: &Snapshot) -> Vec<ConfiguredLimit> {
    use crate::plugins::rate_limiting::{identity_kind, Store};
    let redis = |s: &Store| s.redis().cloned();
    let mut out = Vec::new();
    for p in &snap.plugins {
        match &p.plugin {
            Plugin::RateLimiting(rl) => {
                for (name, secs, limit) in &rl.periods {
                    out.push(ConfiguredLimit {
                        plugin: "rate-limiting",
                        prefix: format!("rl:{}:", rl.id),
                        suffix: format!(":{name}"),
                        window: *secs,
                        limit: *limit,
                        sliding: false,
                        kind: identity_kind(rl.config.limit_by),
                        redis: redis(&rl.store),
                    });
                }
            }
            Plugin::AiRateLimiting(arl) => {
                for (suffix, window, limit, sliding) in arl.configured() {
                    out.push(ConfiguredLimit {
                        plugin: "ai-rate-limiting-advanced",
                        prefix: format!("ai:{}:", arl.scope()),
                        suffix,
                        window,
                        limit,
                        sliding,
                        kind: identity_kind(arl.config.identifier),
                        redis: redis(&arl.store),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Most counters `/quotas` reads from one Redis prefix.
const REDIS_LIST_MAX: usize = 1000;

/// The current counters of the Redis-backed limits (by limit index), or why they could
/// not be read.
async fn redis_counters(
    limits: &[ConfiguredLimit],
    now: u64,
) -> Vec<(Option<usize>, Result<crate::quota::local::Listed, String>)> {
    let mut out = Vec::new();
    let mut asked: Vec<(String, String)> = Vec::new();
    for c in limits {
        let Some(r) = &c.redis else { continue };
        if asked.contains(&(r.address().to_string(), c.prefix.clone())) {
            continue;
        }
        asked.push((r.address().to_string(), c.prefix.clone()));
        let listed = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            r.list(&c.prefix, now, REDIS_LIST_MAX),
        )
        .await
        .unwrap_or_else(|_| Err(crate::quota::StoreError("redis: timed out".into())));
        match listed {
            Ok(rows) => out.extend(rows.into_iter().map(|l| {
                let found = limits
                    .iter()
                    .position(|c| c.redis.is_some() && c.matches(&l.key, l.window));
                (found, Ok(l))
            })),
            Err(e) => out.push((None, Err(e.to_string()))),
        }
    }
    out
}

/// `GET /quotas`: the quota counters (this node's memory and the Redis-backed ones), with
/// the limits the current config gives them, and a row (`used` 0) for every configured
/// limit no request has counted yet.
async fn quotas(gw: &Gateway) -> Resp {
    let now = crate::rt::clock::millis_since_epoch();
    let snap = gw.snapshot.load();
    // Counters are kept per consumer id; people read usernames.
    let readable = |who: &str| -> String {
        match who.strip_prefix("consumer:") {
            Some(rest) => {
                let (id, tail) = rest.split_once(':').unwrap_or((rest, ""));
                let name = snap
                    .consumers
                    .iter()
                    .find(|c| c.id == id)
                    .and_then(|c| c.username.clone())
                    .unwrap_or_else(|| id.to_string());
                if tail.is_empty() {
                    format!("consumer:{name}")
                } else {
                    format!("consumer:{name}:{tail}")
                }
            }
            None => who.to_string(),
        }
    };
    let limits = configured_limits(&snap);
    let mut seen = vec![false; limits.len()];
    let local = gw.quota.list(now).into_iter().map(|l| {
        let found = limits.iter().position(|c| c.matches(&l.key, l.window));
        (found, l, "local")
    });
    let mut errors = Vec::new();
    let shared: Vec<_> = redis_counters(&limits, now)
        .await
        .into_iter()
        .filter_map(|(found, r)| match r {
            Ok(l) => Some((found, l, "redis")),
            Err(e) => {
                errors.push(e);
                None
            }
        })
        .collect();
    let mut data: Vec<Value> = Vec::new();
    for (found, l, store) in local.chain(shared) {
        // Keys are `rl:<plugin>:<who>:<period>` and `ai:<plugin>:<who>:<name>:<what>`.
        let plugin = if l.key.starts_with("ai:") {
            "ai-rate-limiting-advanced"
        } else {
            "rate-limiting"
        };
        // The current config's limit: a PATCHed limit shows at once.
        let (limit, used) = match found.and_then(|i| limits.get(i).map(|c| (i, c))) {
            Some((i, c)) => {
                if let Some(s) = seen.get_mut(i) {
                    *s = true;
                }
                let weight = crate::quota::previous_weight(now, c.window);
                let used = l.cur + if c.sliding { l.prev * weight } else { 0.0 };
                (c.limit, used)
            }
            None => (l.limit, l.used),
        };
        let mut parts = l.key.splitn(3, ':');
        let (_, id, rest) = (parts.next(), parts.next(), parts.next());
        data.push(
            json!({"plugin": plugin, "plugin_id": id, "key": readable(rest.unwrap_or("")),
                         "window": l.window, "used": used, "limit": limit, "store": store}),
        );
    }
    for (c, _) in limits.iter().zip(&seen).filter(|(_, s)| !**s) {
        let id = c.prefix.split(':').nth(1).unwrap_or("");
        // Unread Redis counters are unknown, not zero.
        let used = if c.redis.is_some() && !errors.is_empty() {
            Value::Null
        } else {
            json!(0.0)
        };
        data.push(json!({"plugin": c.plugin, "plugin_id": id,
                         "key": format!("{}:*{}", c.kind, c.suffix), "window": c.window,
                         "used": used, "limit": c.limit,
                         "store": if c.redis.is_some() { "redis" } else { "local" }}));
    }
    if errors.is_empty() {
        reply(StatusCode::OK, json!({"data": data}))
    } else {
        reply(StatusCode::OK, json!({"data": data, "errors": errors}))
    }
}

/// `GET /analytics/{usage,top,status}`: aggregate usage queries (see docs/observability.md).
async fn analytics(gw: &Gateway, what: &str, query: &[(String, String)]) -> Resp {
    let Some(a) = gw.analytics.get() else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"message": "usage analytics are off (start with --analytics sqlite or postgres)"}),
        );
    };
    let now = crate::rt::clock::millis_since_epoch() as i64;
    let bad = |e: String| reply(StatusCode::BAD_REQUEST, json!({"message": e}));
    let out = match what {
        "status" => return reply(StatusCode::OK, a.status()),
        "usage" => match crate::observe::analytics::Query::parse(query, now) {
            Ok(q) => a.usage(q).await,
            Err(e) => return bad(e),
        },
        "top" => match crate::observe::analytics::TopQuery::parse(query, now) {
            Ok(q) => a.top(q).await,
            Err(e) => return bad(e),
        },
        _ => return reply(StatusCode::NOT_FOUND, json!({"message": "Not found"})),
    };
    match out {
        Ok(v) => reply(StatusCode::OK, v),
        Err(e) => {
            tracing::warn!(error = %e, "analytics query failed");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"message": format!("the analytics store did not answer: {e}")}),
            )
        }
    }
}

/// `GET /metrics`: Prometheus text format — the `prometheus` plugin's families plus the
/// gateway's own gauges and counters.
fn metrics(gw: &Gateway, cluster: Option<&cluster::Cluster>) -> Resp {
    use crate::observe::metrics::sample;
    let s = &gw.stats;
    let mut out = String::with_capacity(4096);
    let active = s.active.load(Ordering::Relaxed) as f64;
    let accepted = s.accepted.load(Ordering::Relaxed) as f64;
    out.push_str("# HELP kong_nginx_connections_total Number of connections by subsystem\n");
    out.push_str("# TYPE kong_nginx_connections_total gauge\n");
    for (state, v) in [
        ("accepted", accepted),
        ("active", active),
        ("handled", accepted),
        ("reading", 0.0),
        ("waiting", 0.0),
        ("writing", active),
    ] {
        out.push_str(&format!(
            "kong_nginx_connections_total{{node_id=\"{}\",subsystem=\"http\",state=\"{state}\"}} {v}\n",
            gw.node_id
        ));
    }
    sample(
        &mut out,
        "kong_nginx_requests_total",
        "gauge",
        "Number of requests total",
        &format!("{{node_id=\"{}\",subsystem=\"http\"}}", gw.node_id),
        s.total_requests.get() as f64,
    );
    sample(
        &mut out,
        "tollgate_open_streams",
        "gauge",
        "Responses being streamed from an upstream right now",
        "",
        crate::proxy::response::open_streams() as f64,
    );
    sample(
        &mut out,
        "tollgate_quota_rejections_total",
        "counter",
        "Requests refused by rate-limiting or ai-rate-limiting-advanced",
        "",
        s.quota_rejections.load(Ordering::Relaxed) as f64,
    );
    sample(
        &mut out,
        "tollgate_quota_store_errors_total",
        "counter",
        "Times the quota counters (Redis) could not be used",
        "",
        s.quota_store_errors.load(Ordering::Relaxed) as f64,
    );
    sample(
        &mut out,
        "tollgate_config_reload_failures_total",
        "counter",
        "Config reloads (--watch, SIGHUP) that failed; the running config was kept",
        "",
        gw.reload.failures.load(Ordering::Relaxed) as f64,
    );
    if let Some(last) = gw.reload.last() {
        sample(
            &mut out,
            "tollgate_config_last_reload_success",
            "gauge",
            "1 if the last config reload succeeded, 0 if it failed",
            "",
            if last.errors.is_empty() { 1.0 } else { 0.0 },
        );
        sample(
            &mut out,
            "tollgate_config_last_reload_timestamp_seconds",
            "gauge",
            "When the last config reload was attempted (Unix time)",
            "",
            (last.at_ms / 1000) as f64,
        );
    }
    out.push_str("# HELP tollgate_ai_target_healthy 1 if an ai-proxy target takes requests, 0 if its health check or circuit breaker took it out\n");
    out.push_str("# TYPE tollgate_ai_target_healthy gauge\n");
    let snap = gw.snapshot.load();
    for_each_target(&snap, |ai, i, upstream, (healthy, _)| {
        out.push_str(&format!(
            "tollgate_ai_target_healthy{{plugin=\"{}\",target=\"{i}\",upstream=\"{upstream}\"}} {}\n",
            ai.plugin_id,
            u8::from(healthy)
        ));
    });
    if let Some(c) = cluster {
        sample(
            &mut out,
            "tollgate_config_store_up",
            "gauge",
            "1 if the cluster's configuration store answered the last time it was asked",
            "",
            if c.store_up() { 1.0 } else { 0.0 },
        );
        sample(
            &mut out,
            "tollgate_config_store_version",
            "gauge",
            "The stored configuration version this node runs",
            "",
            c.version() as f64,
        );
    }
    out.push_str(
        "# HELP tollgate_connections_closed_total Client connections the gateway closed or refused, by limit\n",
    );
    out.push_str("# TYPE tollgate_connections_closed_total counter\n");
    for (reason, v) in [
        ("header_timeout", &s.header_timeouts),
        ("body_timeout", &s.body_timeouts),
        ("idle_timeout", &s.idle_timeouts),
        ("evicted", &s.evicted),
        ("refused", &s.refused),
    ] {
        out.push_str(&format!(
            "tollgate_connections_closed_total{{reason=\"{reason}\"}} {}\n",
            v.load(Ordering::Relaxed)
        ));
    }
    crate::observe::metrics::global().render(&mut out);
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `GET /config`: the loaded entities as a declarative document (secrets redacted).
fn config(snap: &Snapshot) -> Resp {
    let doc = json!({
        "_format_version": "3.0",
        "services": snap.services.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
        "routes": snap.routes.iter().map(|r| r.to_json(snap)).collect::<Vec<_>>(),
        "plugins": snap.plugins.iter().map(|p| p.to_json(snap)).collect::<Vec<_>>(),
    });
    match serde_norway::to_string(&doc) {
        Ok(y) => reply(StatusCode::OK, json!({"config": y})),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"message": format!("An unexpected error occurred: {e}")}),
        ),
    }
}
