//! Aggregate queries over usage rows (`rollup`): parsed from the Admin API's query string, turned
//! into one SQL statement (the grouping column comes from a fixed list, never from input).

use serde_json::{json, Value};

/// What a usage series is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Consumer,
    Application,
    /// The key-auth credential's id.
    Credential,
    ConsumerGroup,
    Model,
    Provider,
    Route,
    Service,
    Status,
    /// Everything together (one series).
    None,
}

impl GroupBy {
    fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "consumer" => GroupBy::Consumer,
            "application" => GroupBy::Application,
            "credential" => GroupBy::Credential,
            "consumer_group" => GroupBy::ConsumerGroup,
            "model" => GroupBy::Model,
            "provider" => GroupBy::Provider,
            "route" => GroupBy::Route,
            "service" => GroupBy::Service,
            "status" => GroupBy::Status,
            "none" | "" => GroupBy::None,
            _ => return None,
        })
    }

    /// The SQL expression of the group key.
    pub fn column(self) -> &'static str {
        match self {
            GroupBy::Status => "CAST(status AS TEXT)",
            GroupBy::None => "''",
            // The other keys are columns of the same name.
            other => other.name(),
        }
    }

    /// The name shown in answers.
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::Consumer => "consumer",
            GroupBy::Application => "application",
            GroupBy::Credential => "credential",
            GroupBy::ConsumerGroup => "consumer_group",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
            GroupBy::Route => "route",
            GroupBy::Service => "service",
            GroupBy::Status => "status",
            GroupBy::None => "none",
        }
    }
}

/// `GET /analytics/usage`.
#[derive(Debug, Clone)]
pub struct Query {
    pub from_ms: i64,
    pub to_ms: i64,
    pub bucket_ms: i64,
    pub bucket: &'static str,
    pub group_by: GroupBy,
    /// Only records whose `filter.0` column equals `filter.1`.
    pub filter: Option<(GroupBy, String)>,
}

/// `GET /analytics/top`.
#[derive(Debug, Clone)]
pub struct TopQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub by: GroupBy,
    pub measure: &'static str,
    pub limit: i64,
}

/// A time given as epoch seconds, epoch milliseconds or RFC 3339 (`2026-12-02T10:00:00Z`).
fn time(v: &str) -> Result<i64, String> {
    if let Ok(n) = v.parse::<i64>() {
        // Seconds until the year 5138; larger numbers are milliseconds.
        return Ok(if n < 100_000_000_000 { n * 1000 } else { n });
    }
    rfc3339_ms(v).ok_or_else(|| format!("'{v}' is not a time (epoch seconds or RFC 3339)"))
}

/// RFC 3339 in UTC (`Z`) or with an offset, to epoch ms. Written here because it is the only
/// date parsing the gateway needs.
fn rfc3339_ms(v: &str) -> Option<i64> {
    let (date, rest) = v.split_once(['T', ' '])?;
    let mut d = date.split('-');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (clock, offset_s) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0)
    } else {
        let i = rest.rfind(['+', '-'])?;
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let mut t = clock.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let sec: f64 = t.next().unwrap_or("0").parse().ok()?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 - offset_s;
    Some(secs * 1000 + (sec * 1000.0) as i64)
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn range(q: &[(String, String)], now_ms: i64) -> Result<(i64, i64), String> {
    let to = match param(q, "to") {
        Some(v) => time(v)?,
        None => now_ms + 1,
    };
    let from = match param(q, "from") {
        Some(v) => time(v)?,
        None => to - 24 * 3600 * 1000,
    };
    if from >= to {
        return Err("'from' must be before 'to'".into());
    }
    Ok((from, to))
}

impl Query {
    /// From `from`, `to` (default: the last 24 h), `bucket` (minute, hour, day; default
    /// hour), `group_by` and an optional `consumer`/`model`/`route`/… filter.
    pub fn parse(q: &[(String, String)], now_ms: i64) -> Result<Query, String> {
        let (from_ms, to_ms) = range(q, now_ms)?;
        let (bucket, bucket_ms) = match param(q, "bucket").unwrap_or("hour") {
            "minute" => ("minute", 60_000),
            "hour" => ("hour", 3_600_000),
            "day" => ("day", 86_400_000),
            other => return Err(format!("bucket '{other}': expected minute, hour or day")),
        };
        if (to_ms - from_ms) / bucket_ms > 10_000 {
            return Err("more than 10000 buckets: use a larger bucket or a shorter range".into());
        }
        let g = param(q, "group_by").unwrap_or("none");
        let group_by = GroupBy::parse(g).ok_or_else(|| {
            format!("group_by '{g}': expected consumer, application, credential, consumer_group, model, provider, route, service, status or none")
        })?;
        let filter = [
            "consumer",
            "application",
            "credential",
            "consumer_group",
            "model",
            "provider",
            "route",
            "service",
        ]
        .iter()
        .find_map(|k| param(q, k).and_then(|v| GroupBy::parse(k).map(|g| (g, v.to_string()))));
        Ok(Query {
            from_ms,
            to_ms,
            bucket_ms,
            bucket,
            group_by,
            filter,
        })
    }

    /// The SQL with `$1`-style (`pg`) or `?1`-style placeholders: $1 bucket ms, $2 from,
    /// $3 to, $4 the filter value.
    pub fn sql(&self, pg: bool) -> String {
        let p = |n: u8| if pg { format!("${n}") } else { format!("?{n}") };
        let filter = match &self.filter {
            Some((g, _)) => format!(" AND {} = {}", g.column(), p(4)),
            None => String::new(),
        };
        format!(
            "SELECT (ts_ms / {b}) * {b} AS t, {k} AS k, {requests}, \
             {prompt}, {completion}, {total}, CAST(COALESCE(SUM(cost), 0) AS DOUBLE PRECISION), \
             {errors}, {latency_avg}, \
             CAST(COALESCE(MAX(latency_max), 0) AS BIGINT), {unauthenticated}, {cached}, {saved} \
             FROM tollgate_usage WHERE ts_ms >= {from} AND ts_ms < {to}{filter} \
             GROUP BY 1, 2 ORDER BY 1, 2",
            b = p(1),
            k = self.group_by.column(),
            requests = sum("requests"),
            latency_avg = LATENCY_AVG,
            prompt = sum("prompt_tokens"),
            completion = sum("completion_tokens"),
            total = sum("total_tokens"),
            errors = ERRORS,
            unauthenticated = sum("unauthenticated"),
            cached = sum("cached"),
            saved = SAVED,
            from = p(2),
            to = p(3),
        )
    }
}

impl TopQuery {
    /// From `by` (default consumer), `measure` (total_tokens, prompt_tokens,
    /// completion_tokens, cost, requests, errors, unauthenticated; default total_tokens),
    /// `limit` (1–100, default 10), `from`, `to`.
    pub fn parse(q: &[(String, String)], now_ms: i64) -> Result<TopQuery, String> {
        let (from_ms, to_ms) = range(q, now_ms)?;
        let b = param(q, "by").unwrap_or("consumer");
        let by = GroupBy::parse(b)
            .filter(|g| *g != GroupBy::None)
            .ok_or_else(|| format!("by '{b}': expected consumer, application, credential, consumer_group, model, provider, route, service or status"))?;
        let measure = match param(q, "measure").unwrap_or("total_tokens") {
            "total_tokens" => "total_tokens",
            "prompt_tokens" => "prompt_tokens",
            "completion_tokens" => "completion_tokens",
            "cost" => "cost",
            "requests" => "requests",
            "errors" => "errors",
            "unauthenticated" => "unauthenticated",
            "cached" => "cached",
            "saved_cost" => "saved_cost",
            other => return Err(format!("measure '{other}': expected total_tokens, prompt_tokens, completion_tokens, cost, requests, errors, unauthenticated, cached or saved_cost")),
        };
        let limit = match param(q, "limit") {
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| format!("limit '{v}': expected 1 to 100"))?,
            None => 10,
        };
        Ok(TopQuery {
            from_ms,
            to_ms,
            by,
            measure,
            limit,
        })
    }

    /// The SQL: $1 from, $2 to, $3 limit.
    pub fn sql(&self, pg: bool) -> String {
        let p = |n: u8| if pg { format!("${n}") } else { format!("?{n}") };
        format!(
            "SELECT {k} AS k, {requests} AS requests, {prompt} AS prompt_tokens, \
             {completion} AS completion_tokens, {total} AS total_tokens, \
             CAST(COALESCE(SUM(cost), 0) AS DOUBLE PRECISION) AS cost, {errors} AS errors, \
             {unauthenticated} AS unauthenticated, {cached} AS cached, {saved} AS saved_cost \
             FROM tollgate_usage WHERE ts_ms >= {from} AND ts_ms < {to} \
             GROUP BY 1 ORDER BY {m} DESC, 1 LIMIT {limit}",
            k = self.by.column(),
            requests = sum("requests"),
            prompt = sum("prompt_tokens"),
            completion = sum("completion_tokens"),
            total = sum("total_tokens"),
            errors = ERRORS,
            unauthenticated = sum("unauthenticated"),
            cached = sum("cached"),
            saved = SAVED,
            from = p(1),
            to = p(2),
            m = self.measure,
            limit = p(3),
        )
    }
}

/// A column's sum as a 64-bit integer in both backends (PostgreSQL's SUM of BIGINT is
/// NUMERIC).
fn sum(col: &str) -> String {
    format!("CAST(COALESCE(SUM({col}), 0) AS BIGINT)")
}

/// What the semantic cache saved, as a double in both backends.
const SAVED: &str = "CAST(COALESCE(SUM(saved_cost), 0) AS DOUBLE PRECISION)";

/// Requests of applications that failed (4xx and 5xx); key-auth's refusals are counted
/// apart (`unauthenticated`), so a flood of bad keys does not read as applications failing.
/// A row's requests are all refused or none (`rollup`: refusal is one of its dimensions).
const ERRORS: &str = "CAST(COALESCE(SUM(CASE WHEN status >= 400 AND unauthenticated = 0 THEN requests ELSE 0 END), 0) AS BIGINT)";

/// The average latency: a row holds its requests' latencies summed.
const LATENCY_AVG: &str = "CAST(COALESCE(SUM(latency_ms), 0) AS DOUBLE PRECISION) / \
    CAST(COALESCE(SUM(requests), 1) AS DOUBLE PRECISION)";

/// One aggregated row, as both backends read it.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub t: i64,
    pub key: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost: f64,
    pub errors: i64,
    pub latency_avg: f64,
    pub latency_max: i64,
    /// Requests key-auth refused.
    pub unauthenticated: i64,
    /// Requests the semantic cache answered, and what they would have cost.
    pub cached: i64,
    pub saved_cost: f64,
}

/// The answer of a usage query: one series per key, points in time order, and totals.
pub fn usage_answer(q: &Query, rows: Vec<Row>) -> Value {
    let mut series: Vec<(String, Vec<Value>)> = Vec::new();
    let mut totals = Row::default();
    for r in rows {
        totals.requests += r.requests;
        totals.prompt_tokens += r.prompt_tokens;
        totals.completion_tokens += r.completion_tokens;
        totals.total_tokens += r.total_tokens;
        totals.cost += r.cost;
        totals.errors += r.errors;
        totals.unauthenticated += r.unauthenticated;
        totals.cached += r.cached;
        totals.saved_cost += r.saved_cost;
        let point = json!({
            "t": r.t / 1000, "requests": r.requests, "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens, "total_tokens": r.total_tokens,
            "cost": r.cost, "errors": r.errors, "unauthenticated": r.unauthenticated,
            "cached": r.cached, "saved_cost": r.saved_cost,
            "latency_ms_avg": (r.latency_avg * 10.0).round() / 10.0, "latency_ms_max": r.latency_max,
        });
        match series.iter_mut().find(|(k, _)| *k == r.key) {
            Some((_, pts)) => pts.push(point),
            None => series.push((r.key, vec![point])),
        }
    }
    json!({
        "from": q.from_ms / 1000, "to": q.to_ms / 1000, "bucket": q.bucket,
        "group_by": q.group_by.name(),
        "series": series.into_iter().map(|(k, p)| json!({"key": k, "points": p})).collect::<Vec<_>>(),
        "totals": {
            "requests": totals.requests, "prompt_tokens": totals.prompt_tokens,
            "completion_tokens": totals.completion_tokens, "total_tokens": totals.total_tokens,
            "cost": totals.cost, "errors": totals.errors,
            "unauthenticated": totals.unauthenticated,
            "cached": totals.cached, "saved_cost": totals.saved_cost,
        },
    })
}

/// The answer of a top query.
pub fn top_answer(q: &TopQuery, rows: Vec<Row>) -> Value {
    json!({
        "from": q.from_ms / 1000, "to": q.to_ms / 1000, "by": q.by.name(), "measure": q.measure,
        "data": rows.into_iter().map(|r| json!({
            "key": r.key, "requests": r.requests, "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens, "total_tokens": r.total_tokens,
            "cost": r.cost, "errors": r.errors, "unauthenticated": r.unauthenticated,
            "cached": r.cached, "saved_cost": r.saved_cost,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn times_and_parameters() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("2026-12-02T10:00:00Z"), Some(1_796_205_600_000));
        assert_eq!(
            rfc3339_ms("2026-12-02T12:00:00+02:00"),
            Some(1_796_205_600_000)
        );
        assert_eq!(time("1796205600").unwrap(), 1_796_205_600_000);
        let p = Query::parse(
            &q(&[
                ("from", "1796205600"),
                ("to", "1796292000"),
                ("group_by", "model"),
                ("consumer", "alice"),
            ]),
            0,
        )
        .unwrap();
        assert_eq!((p.bucket_ms, p.group_by), (3_600_000, GroupBy::Model));
        assert_eq!(p.filter, Some((GroupBy::Consumer, "alice".into())));
        assert!(p.sql(true).contains("AND consumer = $4"));
        assert!(Query::parse(&q(&[("group_by", "x; DROP TABLE")]), 1).is_err());
        assert!(Query::parse(
            &q(&[("bucket", "minute"), ("from", "0")]),
            1_000_000_000_000
        )
        .is_err());
        let t = TopQuery::parse(
            &q(&[("by", "model"), ("measure", "cost"), ("limit", "3")]),
            10_000_000,
        )
        .unwrap();
        assert!(t.sql(false).contains("ORDER BY cost DESC"));
        let t = TopQuery::parse(
            &q(&[("by", "credential"), ("measure", "unauthenticated")]),
            10_000_000,
        )
        .unwrap();
        assert_eq!(t.by, GroupBy::Credential);
        assert!(t.sql(true).contains("ORDER BY unauthenticated DESC"));
        let p = Query::parse(&q(&[("application", "mobile-app")]), 10_000_000).unwrap();
        assert_eq!(p.filter, Some((GroupBy::Application, "mobile-app".into())));
        assert!(TopQuery::parse(&q(&[("limit", "0")]), 10_000_000).is_err());
    }
}
