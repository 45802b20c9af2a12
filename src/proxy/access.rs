//! The access phase: the route's plugins in PRIORITY order through their phase methods —
//! authentication first (after which the consumer's own chain applies), then the rewrite
//! handlers (the trace starts), then every access handler. The prompt plugins share one
//! parse of the JSON body, written back once at the end.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, Request, Uri};

use crate::config::entities::Route;
use crate::error::GatewayError;
use crate::gateway::snapshot::PluginInstance;
use crate::gateway::{Gateway, Snapshot};
use crate::observe::log::RequestLog;
use crate::plugins::ai_proxy::AiProxy;
use crate::plugins::ai_sanitizer_filter::Filter;
use crate::plugins::ai_transformer::Transformer;
use crate::plugins::phases::Access;
pub use crate::plugins::phases::Headers;
use crate::plugins::request_transformer::UpstreamRequest;
use crate::plugins::template::UriCaptures;
use crate::plugins::Plugin;

use super::exchange::Exchange;

/// The client as the access phase and the log record see it.
pub struct Client<'a> {
    pub ip: &'a str,
    pub scheme: &'static str,
    pub host: &'a str,
    pub uri: &'a Uri,
}

/// What the access phase hands on to the upstream phase.
pub struct Admitted {
    /// The route's ai-proxy instance (the consumer's, when its chain has its own).
    pub ai: Option<Arc<AiProxy>>,
    /// The client's headers as they came, kept when a plugin may have changed them.
    pub original_headers: Option<HeaderMap>,
    /// Headers plugins set for the client (quota state, the trace id).
    pub headers: Headers,
    /// `ai-sanitizer`'s work on the answer.
    pub filter: Option<Filter>,
    /// `ai-response-transformer`, to run on the service's answer.
    pub respond: Option<Arc<Transformer>>,
    /// `ai-semantic-cache`, armed for this request.
    pub cache: Option<crate::plugins::phases::ArmedCache>,
    /// `ai-semantic-response-guard`, armed for this request.
    pub guard: Option<crate::plugins::phases::ArmedGuard>,
    /// `ai-mcp-proxy` answers the request as MCP.
    pub mcp: Option<crate::plugins::phases::ArmedMcp>,
}

/// Why the access phase ended the request: the error, and the headers plugins had set.
pub type Refused = (GatewayError, Headers);

/// Runs the access phase of `route` for the request `up`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    gw: &Gateway,
    snap: &Snapshot,
    (route, index): (&Route, usize),
    log: &mut Exchange,
    up: &mut UpstreamRequest,
    client: &Client<'_>,
    (query, captures): (&[(String, String)], &UriCaptures),
    (ai, original_headers): (Option<Arc<AiProxy>>, Option<HeaderMap>),
) -> Result<Admitted, Refused> {
    let Exchange {
        record, charges, ..
    } = log;
    let mut cx = Access::new(
        &snap.entities,
        up,
        record,
        client.ip,
        client.uri.path(),
        route.service,
        query,
        captures,
        &gw.quota,
        (&gw.stats.quota_rejections, &gw.stats.quota_store_errors),
        &gw.upstreams,
    );
    cx.original_headers = original_headers;
    cx.ai = ai;
    let ran = handlers(snap, route, index, &mut cx, client).await;
    // Charges taken before a refusal are settled (given back) by the log phase too.
    charges.append(&mut cx.charges);
    ran?;
    Ok(Admitted {
        ai: cx.ai.take(),
        original_headers: cx.original_headers.take(),
        headers: std::mem::take(&mut cx.headers),
        filter: cx.filter.take(),
        respond: cx.respond.take(),
        cache: cx.cache.take(),
        guard: cx.response_guard.take(),
        mcp: cx.mcp.take(),
    })
}

/// Every handler of the chain in phase order.
async fn handlers<'a>(
    snap: &'a Snapshot,
    route: &'a Route,
    index: usize,
    cx: &mut Access<'a>,
    client: &Client<'_>,
) -> Result<(), Refused> {
    let instance = |i: &usize| snap.plugins.get(*i);
    let mut chain: Cow<'_, [usize]> = Cow::Borrowed(&route.chain);
    let mut next = 0;
    while let Some(p) = chain
        .get(next)
        .and_then(instance)
        .filter(|p| p.plugin.authenticates())
    {
        run_one(p, cx).await?;
        next += 1;
    }
    if snap.consumer_plugins && cx.record.consumer.is_some() {
        if let Some(own) = consumer_chain(snap, route, index, cx.record) {
            adopt_chain(snap, &own, cx, client);
            cx.ai = find_ai(snap, &own);
            chain = Cow::Owned(own);
        }
    }
    for p in chain[next..].iter().filter_map(instance) {
        p.plugin.rewrite(cx);
    }
    let prompt_plugins = || {
        chain
            .iter()
            .filter_map(instance)
            .map(|p| &p.plugin)
            .filter(|p| p.shapes_prompt())
    };
    for p in chain[next..].iter().filter_map(instance) {
        if p.plugin.shapes_prompt() {
            cx.open_prompt(prompt_plugins())
                .map_err(|e| refused(cx, e))?;
        }
        run_one(p, cx).await?;
    }
    cx.close_prompt().map_err(|e| refused(cx, e))?;
    if cx.masked {
        cx.record.guardrail = Some("masked");
    }
    Ok(())
}

/// One instance's access handler, with its scope.
async fn run_one<'a>(p: &'a PluginInstance, cx: &mut Access<'a>) -> Result<(), Refused> {
    cx.instance_group = p.consumer_group.as_deref();
    match p.plugin.access(cx).await {
        Ok(()) => Ok(()),
        Err(e) => Err(refused(cx, e)),
    }
}

/// The refusal, with what the record says about it (a quota's or a guardrail's decision).
fn refused(cx: &mut Access<'_>, e: GatewayError) -> Refused {
    match &e {
        GatewayError::RateLimited { .. } | GatewayError::PromptOverQuota(_) => {
            cx.record.guardrail = Some(e.code());
            cx.record.refusal = Some(e.to_string());
        }
        GatewayError::PromptBlocked(_) => cx.record.guardrail = Some("blocked"),
        _ => {}
    }
    (e, std::mem::take(&mut cx.headers))
}

/// The authenticated consumer's own chain, when consumer- or group-scoped instances make
/// it differ from the route's (Kong resolves them after authentication).
fn consumer_chain(
    snap: &Snapshot,
    route: &Route,
    index: usize,
    record: &RequestLog,
) -> Option<Vec<usize>> {
    let who = record.consumer.as_ref()?.0;
    let consumer = snap.consumers.get(who)?;
    let groups: Vec<&str> = snap
        .member_of
        .get(who)
        .into_iter()
        .flatten()
        .filter_map(|g| snap.groups.get(*g).map(|(id, _)| id.as_str()))
        .collect();
    let chain = crate::gateway::snapshot::resolve_chain(
        &snap.plugins,
        Some(index),
        route.service,
        Some(&consumer.id),
        &groups,
    );
    (chain != route.chain).then_some(chain)
}

/// What a consumer's own chain changes for the rest of the request: the client's headers
/// kept for its request-transformer, the request captured for its log plugins, its
/// metrics, and the chain the log phase runs.
fn adopt_chain(snap: &Snapshot, chain: &[usize], cx: &mut Access<'_>, client: &Client<'_>) {
    let has = |f: fn(&Plugin) -> bool| {
        chain
            .iter()
            .any(|i| snap.plugins.get(*i).is_some_and(|p| f(&p.plugin)))
    };
    if has(|p| matches!(p, Plugin::RequestTransformer(_))) && cx.original_headers.is_none() {
        cx.original_headers = Some(cx.up.headers.clone());
    }
    if has(Plugin::logs) && !cx.record.enabled {
        let mut seen = Request::new(());
        *seen.method_mut() = cx.up.method.clone();
        *seen.uri_mut() = client.uri.clone();
        *seen.headers_mut() = cx.up.headers.clone();
        cx.record
            .capture_request(&seen.into_parts().0, client.ip, client.scheme, client.host);
    }
    cx.record.metrics = has(|p| matches!(p, Plugin::Prometheus(_)));
    cx.record.chain = Some(chain.to_vec());
}

/// The ai-proxy instance of a chain.
pub fn find_ai(snap: &Snapshot, chain: &[usize]) -> Option<Arc<AiProxy>> {
    chain
        .iter()
        .find_map(|i| match snap.plugins.get(*i).map(|p| &p.plugin) {
            Some(Plugin::AiProxy(a)) => Some(a.clone()),
            _ => None,
        })
}
