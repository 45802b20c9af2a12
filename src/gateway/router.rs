//! Kong's traditional(-compatible) route matching: methods, hosts, headers and paths, tried
//! in Kong's priority order.

use std::borrow::Cow;
use std::collections::HashMap;

use regex::{Regex, RegexSet};

use crate::plugins::template::UriCaptures;

/// One matchable (route, path) pair; a route with several paths yields several entries,
/// as Kong splits them.
#[derive(Debug)]
struct Entry {
    route: usize,
    methods: Vec<String>,
    hosts: Vec<HostMatch>,
    headers: Vec<(String, Vec<HeaderValueMatch>)>,
    path: Option<PathMatch>,
    /// Kong's priority fields, compared in this order (higher first).
    priority: (u8, bool, usize, bool, i64, usize),
}

#[derive(Debug, Clone)]
enum HostMatch {
    Exact(String),
    /// `*.example.com`: the suffix including the dot.
    WildcardPrefix(String),
    /// `example.*`: the prefix including the dot.
    WildcardSuffix(String),
}

#[derive(Debug, Clone)]
enum HeaderValueMatch {
    Exact(String),
    Regex(Regex),
}

#[derive(Debug)]
enum PathMatch {
    Prefix(String),
    Regex(Regex),
}

/// Route matching criteria as the router needs them.
#[derive(Debug, Default, Clone)]
pub struct RouteSpec {
    pub methods: Vec<String>,
    pub hosts: Vec<String>,
    pub headers: Vec<(String, Vec<String>)>,
    pub paths: Vec<String>,
    pub regex_priority: i64,
    pub snis: usize,
}

/// A route path or header regex that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid regex '{pattern}': {message}")]
pub struct RouterError {
    pub pattern: String,
    pub message: String,
}

/// The compiled router of one snapshot.
#[derive(Debug, Default)]
pub struct Router {
    entries: Vec<Entry>,
    /// Candidate lookup for large tables; small ones are scanned in order.
    index: Option<Index>,
}

/// Narrows a request to the entries whose path can match, keeping priority order.
#[derive(Debug)]
struct Index {
    /// Prefix path → entries with that prefix (ascending = priority order).
    prefixes: HashMap<String, Vec<usize>>,
    /// Distinct prefix lengths, so a lookup tries only lengths that exist.
    prefix_lens: Vec<usize>,
    /// All regex paths at once; `regex_entries[i]` is the entry of pattern `i`.
    regexes: RegexSet,
    regex_entries: Vec<usize>,
    /// Entries without a path match every path.
    pathless: Vec<usize>,
}

/// Below this many entries a linear scan beats the index.
const INDEX_THRESHOLD: usize = 32;

/// A successful match.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    /// Index of the route in the snapshot.
    pub route: usize,
    /// The normalized request path.
    pub path: String,
    /// Length of the matched path prefix (what `strip_path` removes).
    pub matched_len: usize,
    pub captures: UriCaptures,
}

/// The parts of a request the router looks at.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
}

/// Turns a regex route path (without `~`) into a Rust regex anchored at the start.
pub fn compile_path_regex(pattern: &str) -> Result<Regex, RouterError> {
    // Kong uses PCRE: `(?<name>…)` named groups are valid in Rust's regex too.
    Regex::new(&format!("^(?:{pattern})")).map_err(|e| RouterError {
        pattern: pattern.to_string(),
        message: e.to_string(),
    })
}

impl Router {
    /// Compiles routes (in snapshot order) into priority-sorted entries.
    pub fn new(routes: &[RouteSpec]) -> Result<Router, RouterError> {
        let mut entries = Vec::new();
        for (idx, r) in routes.iter().enumerate() {
            let mut hosts = Vec::new();
            let mut plain_host_only = !r.hosts.is_empty();
            for h in &r.hosts {
                let h = h.to_ascii_lowercase();
                if let Some(s) = h.strip_prefix('*') {
                    plain_host_only = false;
                    hosts.push(HostMatch::WildcardPrefix(s.to_string()));
                } else if let Some(p) = h.strip_suffix('*') {
                    plain_host_only = false;
                    hosts.push(HostMatch::WildcardSuffix(p.to_string()));
                } else {
                    hosts.push(HostMatch::Exact(h));
                }
            }
            let mut headers = Vec::new();
            for (name, values) in &r.headers {
                let mut vs = Vec::new();
                for v in values {
                    match v.strip_prefix("~*") {
                        Some(re) => vs.push(HeaderValueMatch::Regex(
                            Regex::new(&format!("(?i){re}")).map_err(|e| RouterError {
                                pattern: v.clone(),
                                message: e.to_string(),
                            })?,
                        )),
                        None => vs.push(HeaderValueMatch::Exact(v.to_ascii_lowercase())),
                    }
                }
                headers.push((name.to_ascii_lowercase(), vs));
            }
            let base_weight = u8::from(!r.methods.is_empty())
                + u8::from(!r.hosts.is_empty())
                + u8::from(!r.headers.is_empty())
                + u8::from(r.snis > 0);
            let methods: Vec<String> = r.methods.iter().map(|m| m.to_ascii_uppercase()).collect();
            let mut paths: Vec<Option<PathMatch>> = Vec::new();
            for p in &r.paths {
                if let Some(re) = p.strip_prefix('~') {
                    paths.push(Some(PathMatch::Regex(compile_path_regex(re)?)));
                } else {
                    paths.push(Some(PathMatch::Prefix(normalize_path(p).into_owned())));
                }
            }
            if paths.is_empty() {
                paths.push(None);
            }
            for path in paths {
                let (weight, regex, len) = match &path {
                    Some(PathMatch::Regex(_)) => (base_weight + 1, true, 0),
                    Some(PathMatch::Prefix(p)) => (base_weight + 1, false, p.len()),
                    None => (base_weight, false, 0),
                };
                let regex_priority = if regex { r.regex_priority } else { 0 };
                entries.push(Entry {
                    route: idx,
                    methods: methods.clone(),
                    hosts: hosts.clone(),
                    headers: headers.clone(),
                    path,
                    priority: (
                        weight,
                        plain_host_only,
                        r.headers.len(),
                        regex,
                        regex_priority,
                        len,
                    ),
                });
            }
        }
        // Stable sort keeps declaration order among equal priorities.
        entries.sort_by_key(|e| std::cmp::Reverse(e.priority));
        let index = if entries.len() > INDEX_THRESHOLD {
            Some(build_index(&entries)?)
        } else {
            None
        };
        Ok(Router { entries, index })
    }

    /// Finds the route for a request, or `None` (Kong's 404).
    pub fn find(&self, req: &RequestView<'_>) -> Option<RouteMatch> {
        let host = strip_port(req.host);
        let host: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        let path = normalize_path(req.path);
        match &self.index {
            None => self
                .entries
                .iter()
                .find_map(|e| try_entry(e, req, &host, &path)),
            Some(ix) => {
                let mut candidates: Vec<usize> = ix.pathless.clone();
                for &len in &ix.prefix_lens {
                    if let Some(list) = path.get(..len).and_then(|p| ix.prefixes.get(p)) {
                        candidates.extend_from_slice(list);
                    }
                }
                candidates.extend(
                    ix.regexes
                        .matches(&path)
                        .iter()
                        .map(|i| ix.regex_entries[i]),
                );
                candidates.sort_unstable();
                candidates
                    .into_iter()
                    .find_map(|i| try_entry(&self.entries[i], req, &host, &path))
            }
        }
    }
}

fn build_index(entries: &[Entry]) -> Result<Index, RouterError> {
    let mut prefixes: HashMap<String, Vec<usize>> = HashMap::new();
    let mut patterns = Vec::new();
    let mut regex_entries = Vec::new();
    let mut pathless = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match &e.path {
            None => pathless.push(i),
            Some(PathMatch::Prefix(p)) => prefixes.entry(p.clone()).or_default().push(i),
            Some(PathMatch::Regex(re)) => {
                patterns.push(re.as_str().to_string());
                regex_entries.push(i);
            }
        }
    }
    let mut prefix_lens: Vec<usize> = prefixes.keys().map(String::len).collect();
    prefix_lens.sort_unstable();
    prefix_lens.dedup();
    let regexes = RegexSet::new(&patterns).map_err(|e| RouterError {
        pattern: "(route regex set)".into(),
        message: e.to_string(),
    })?;
    Ok(Index {
        prefixes,
        prefix_lens,
        regexes,
        regex_entries,
        pathless,
    })
}

/// Checks one entry against the request; the match when every criterion holds.
fn try_entry(e: &Entry, req: &RequestView<'_>, host: &str, path: &str) -> Option<RouteMatch> {
    if !e.methods.is_empty() && !e.methods.iter().any(|m| m == req.method) {
        return None;
    }
    if !e.hosts.is_empty() && !e.hosts.iter().any(|h| host_matches(h, host, req.host)) {
        return None;
    }
    if !e
        .headers
        .iter()
        .all(|(name, values)| header_matches(req.headers, name, values))
    {
        return None;
    }
    match &e.path {
        None => Some(RouteMatch {
            route: e.route,
            path: path.to_string(),
            matched_len: 0,
            captures: UriCaptures::default(),
        }),
        Some(PathMatch::Prefix(p)) => path.starts_with(p.as_str()).then(|| RouteMatch {
            route: e.route,
            matched_len: p.len(),
            path: path.to_string(),
            captures: UriCaptures::default(),
        }),
        Some(PathMatch::Regex(re)) => {
            let caps = re.captures(path)?;
            let mut captures = UriCaptures::default();
            for (i, name) in re.capture_names().enumerate().skip(1) {
                let value = caps.get(i).map(|m| m.as_str().to_string());
                if let (Some(n), Some(v)) = (name, &value) {
                    captures.named.push((n.to_string(), v.clone()));
                }
                captures.positional.push(value.unwrap_or_default());
            }
            Some(RouteMatch {
                route: e.route,
                path: path.to_string(),
                matched_len: caps.get(0).map(|m| m.end()).unwrap_or(0),
                captures,
            })
        }
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map(|(h, _)| &host[..h.len() + 1])
            .unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

fn host_matches(m: &HostMatch, host: &str, host_with_port: &str) -> bool {
    match m {
        // A route host may carry a port (`example.com:8000`), compared with the full header.
        HostMatch::Exact(h) => h == host || h.eq_ignore_ascii_case(host_with_port),
        HostMatch::WildcardPrefix(suffix) => {
            host.len() > suffix.len() && host.ends_with(suffix.as_str())
        }
        HostMatch::WildcardSuffix(prefix) => {
            host.len() > prefix.len() && host.starts_with(prefix.as_str())
        }
    }
}

fn header_matches(headers: &http::HeaderMap, name: &str, values: &[HeaderValueMatch]) -> bool {
    headers.get_all(name).iter().any(|v| {
        let Ok(v) = v.to_str() else { return false };
        values.iter().any(|m| match m {
            HeaderValueMatch::Exact(e) => e.eq_ignore_ascii_case(v.trim()),
            HeaderValueMatch::Regex(r) => r.is_match(v),
        })
    })
}

/// Kong's path normalization: percent-triplets upper-cased, unreserved characters decoded,
/// dot-segments removed, duplicate slashes merged.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if is_normal(path) {
        return Cow::Borrowed(path);
    }
    Cow::Owned(normalize_slow(path))
}

/// Already normalized: absolute, nothing percent-encoded, no empty, `.` or `..` segment
/// (a trailing `/` is kept as is). Most request paths are.
fn is_normal(path: &str) -> bool {
    // One pass over the bytes (a `contains` and a `split` scanned the path twice and cost
    // ~400 instructions per request).
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    // The segment after each '/': empty (unless last), "." and ".." are not normal.
    let mut start = 1;
    for i in 1..=b.len() {
        let end = i == b.len();
        if !end && b[i] == b'%' {
            return false;
        }
        if end || b[i] == b'/' {
            let seg = &b[start..i];
            if seg == b"." || seg == b".." || (seg.is_empty() && !end) {
                return false;
            }
            start = i + 1;
        }
    }
    true
}

fn normalize_slow(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]));
            if let (Some(h), Some(l)) = hex {
                let c = h * 16 + l;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(c as char);
                } else {
                    decoded.push('%');
                    decoded.push(bytes[i + 1].to_ascii_uppercase() as char);
                    decoded.push(bytes[i + 2].to_ascii_uppercase() as char);
                }
                i += 3;
                continue;
            }
        }
        // Push the char starting here (paths are valid UTF-8 since they come from &str).
        let ch_len = utf8_len(b);
        let end = (i + ch_len).min(bytes.len());
        decoded.push_str(path.get(i..end).unwrap_or(""));
        i = end.max(i + 1);
    }
    // Remove dot segments and merge slashes.
    let mut out: Vec<&str> = Vec::new();
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(decoded.len() + 1);
    for s in &out {
        result.push('/');
        result.push_str(s);
    }
    if result.is_empty() || (trailing && !out.is_empty()) {
        result.push('/');
    }
    result
}

fn utf8_len(b: u8) -> usize {
    match b {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(paths: &[&str]) -> RouteSpec {
        RouteSpec {
            paths: paths.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn find(r: &Router, method: &str, host: &str, path: &str) -> Option<RouteMatch> {
        let headers = http::HeaderMap::new();
        r.find(&RequestView {
            method,
            host,
            path,
            headers: &headers,
        })
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize_path("/a//b/./c/../d"), "/a/b/d");
        assert_eq!(normalize_path("/%61%2fb%7e"), "/a%2Fb~");
        assert_eq!(normalize_path("/a/"), "/a/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/../.."), "/");
        assert_eq!(normalize_path("/%"), "/%");
        assert_eq!(normalize_path("/%zz/é"), "/%zz/é");
        // The one-pass check agrees with the rule it implements, and its answer is the
        // slow path's fixed point.
        let rule = |p: &str| {
            let Some(rest) = p.strip_prefix('/') else {
                return false;
            };
            let segs: Vec<&str> = rest.split('/').collect();
            !p.contains('%')
                && segs
                    .iter()
                    .enumerate()
                    .all(|(i, s)| *s != "." && *s != ".." && (!s.is_empty() || i + 1 == segs.len()))
        };
        for p in [
            "",
            "/",
            "//",
            "/.",
            "/..",
            "/./",
            "/a/.",
            "/a/..",
            "/a/../",
            "/a//",
            "/a/.b",
            "/..a",
            "/a%",
            "a/b",
            "/a/b/",
            "/v1/chat/completions",
            "/é/./x",
            "/x/...",
        ] {
            assert_eq!(is_normal(p), rule(p), "{p:?}");
            if is_normal(p) {
                assert_eq!(normalize_slow(p), p, "{p:?}");
            }
        }
        for p in ["/", "/a", "/a/", "/v1/chat/completions", "/é/x"] {
            assert!(
                matches!(normalize_path(p), Cow::Borrowed(b) if b == p),
                "{p}"
            );
        }
        for (p, n) in [
            ("a/b", "/a/b"),
            ("/a//", "/a/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("//", "/"),
        ] {
            assert_eq!(normalize_path(p), n, "{p}");
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let r = Router::new(&[spec(&["/"]), spec(&["/codex"]), spec(&["/co"])]).unwrap();
        assert_eq!(
            find(&r, "POST", "x", "/codex/responses").map(|m| m.route),
            Some(1)
        );
        assert_eq!(find(&r, "POST", "x", "/cox").map(|m| m.route), Some(2));
        assert_eq!(find(&r, "POST", "x", "/other").map(|m| m.route), Some(0));
    }

    #[test]
    fn regex_before_prefix_with_captures() {
        let r = Router::new(&[
            spec(&["/gpt-4"]),
            spec(&["~/(?<model>[^#?/]+)/chat/completions$"]),
        ])
        .unwrap();
        let m = find(&r, "POST", "x", "/gpt-4/chat/completions").unwrap();
        assert_eq!(m.route, 1);
        assert_eq!(m.captures.get("model"), Some("gpt-4"));
        assert_eq!(m.captures.get("1"), Some("gpt-4"));
        assert_eq!(
            find(&r, "POST", "x", "/gpt-4/chat/completions/x").map(|m| m.route),
            Some(0)
        );
    }

    #[test]
    fn regex_priority_orders_regexes() {
        let mut a = spec(&["~/v1/.*"]);
        a.regex_priority = 1;
        let mut b = spec(&["~/v1/chat"]);
        b.regex_priority = 5;
        let r = Router::new(&[a, b]).unwrap();
        assert_eq!(find(&r, "GET", "x", "/v1/chat").map(|m| m.route), Some(1));
    }

    #[test]
    fn more_criteria_first_and_methods_hosts_headers() {
        let plain = spec(&["/api"]);
        let mut with_method = spec(&["/api"]);
        with_method.methods = vec!["post".into()];
        let mut with_host = spec(&["/api"]);
        with_host.hosts = vec!["*.example.com".into()];
        with_host.methods = vec!["POST".into()];
        let mut with_header = spec(&["/api"]);
        with_header.headers = vec![("X-Team".into(), vec!["ml".into(), "~*^ai-.*".into()])];
        let r = Router::new(&[plain, with_method, with_host, with_header]).unwrap();
        assert_eq!(find(&r, "GET", "x", "/api").map(|m| m.route), Some(0));
        assert_eq!(find(&r, "POST", "x", "/api").map(|m| m.route), Some(1));
        assert_eq!(
            find(&r, "POST", "a.example.com:8000", "/api").map(|m| m.route),
            Some(2)
        );
        assert_eq!(
            find(&r, "POST", "example.com", "/api").map(|m| m.route),
            Some(1)
        );
        let mut h = http::HeaderMap::new();
        h.insert("x-team", http::HeaderValue::from_static("AI-Research"));
        let m = r.find(&RequestView {
            method: "GET",
            host: "x",
            path: "/api",
            headers: &h,
        });
        assert_eq!(m.map(|m| m.route), Some(3));
    }

    #[test]
    fn the_index_keeps_kong_priority_order() {
        // Same expectations as the small-table tests, with enough routes to use the index.
        let mut specs: Vec<RouteSpec> = (0..100)
            .map(|i| spec(&[&format!("/filler-{i}/x")]))
            .collect();
        specs.push(spec(&["/"]));
        specs.push(spec(&["/codex"]));
        specs.push(spec(&["/co"]));
        specs.push(spec(&["~/(?<model>[^#?/]+)/chat/completions$"]));
        let mut m = spec(&["/codex"]);
        m.methods = vec!["GET".into()];
        specs.push(m);
        specs.push(RouteSpec {
            hosts: vec!["only.host".into()],
            ..Default::default()
        });
        let r = Router::new(&specs).unwrap();
        assert!(r.index.is_some());
        assert_eq!(
            find(&r, "POST", "x", "/codex/responses").map(|m| m.route),
            Some(101)
        );
        assert_eq!(
            find(&r, "GET", "x", "/codex/responses").map(|m| m.route),
            Some(104)
        );
        assert_eq!(find(&r, "POST", "x", "/cox").map(|m| m.route), Some(102));
        assert_eq!(
            find(&r, "POST", "x", "/filler-7/x").map(|m| m.route),
            Some(7)
        );
        let cm = find(&r, "POST", "x", "/gpt-4/chat/completions").unwrap();
        assert_eq!((cm.route, cm.captures.get("model")), (103, Some("gpt-4")));
        assert_eq!(
            find(&r, "POST", "only.host", "/anything").map(|m| m.route),
            Some(105)
        );
        assert_eq!(
            find(&r, "POST", "x", "/anything").map(|m| m.route),
            Some(100)
        );
    }

    #[test]
    fn no_match_and_bad_regex() {
        let r = Router::new(&[spec(&["/a"])]).unwrap();
        assert!(find(&r, "GET", "x", "/b").is_none());
        assert!(Router::new(&[spec(&["~/(unclosed"])]).is_err());
    }
}
