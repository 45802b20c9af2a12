//! The headers a request goes out with: the client's, read in place, and the gateway's
//! own, which replace the client's of the same name. The request head is written from
//! the two directly: building one merged `HeaderMap` per attempt (a copy of every client
//! header, a hash per name, the map's two allocations) was ~4k instructions of a proxied
//! chat request (callgrind, bench/callgrind.sh), more than writing the head itself.

use http::{HeaderMap, HeaderName, HeaderValue};

/// A request's outgoing headers (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct OutHeaders<'a> {
    /// Forwarded except the names `skip` rejects, `dropped` lists or `own` sets.
    client: Option<&'a HeaderMap>,
    skip: Option<fn(&HeaderName) -> bool>,
    dropped: Vec<HeaderName>,
    /// The gateway's headers, in the order set; a name may repeat (appended values).
    /// A short list scanned by name: fewer than twenty entries, where a map hashes each.
    own: Vec<(HeaderName, HeaderValue)>,
}

impl<'a> OutHeaders<'a> {
    /// The client's `headers` forwarded, except the names `skip` rejects (hop-by-hop ones,
    /// those the gateway recomputes); `own` entries expected (the list's first capacity).
    pub fn forwarding(
        client: &'a HeaderMap,
        skip: fn(&HeaderName) -> bool,
        own: usize,
    ) -> OutHeaders<'a> {
        OutHeaders {
            client: Some(client),
            skip: Some(skip),
            dropped: Vec::new(),
            own: Vec::with_capacity(own),
        }
    }

    /// Sets `name` to `value` alone, whatever the client or an earlier call set.
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        match self.own.iter().position(|(n, _)| *n == name) {
            Some(first) => {
                // The first entry takes the value in its place; later ones of the name go.
                self.own[first].1 = value;
                let mut at = 0;
                self.own.retain(|(n, _)| {
                    at += 1;
                    at <= first + 1 || *n != name
                });
            }
            None => self.own.push((name, value)),
        }
    }

    /// Adds a value for `name` after those the gateway set (the client's of that name are
    /// replaced all the same).
    pub fn append(&mut self, name: HeaderName, value: HeaderValue) {
        self.own.push((name, value));
    }

    /// Drops `name`, the client's and the gateway's.
    pub fn remove(&mut self, name: &HeaderName) {
        self.own.retain(|(n, _)| n != name);
        if self.client.is_some_and(|c| c.contains_key(name)) && !self.dropped.contains(name) {
            self.dropped.push(name.clone());
        }
    }

    /// The first value `name` goes out with.
    pub fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Whether `name` goes out.
    pub fn contains_key(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// Whether a client header of `name` goes out.
    fn forwards(&self, name: &HeaderName) -> bool {
        !self.skip.is_some_and(|skip| skip(name))
            && !self.dropped.contains(name)
            && !self.own.iter().any(|(n, _)| n == name)
    }

    /// Every header as it goes out: the client's forwarded ones first, then the gateway's.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let client = self.client.into_iter().flat_map(|c| c.iter());
        client
            .filter(|(n, _)| self.forwards(n))
            .chain(self.own.iter().map(|(n, v)| (n, v)))
    }

    /// Calls `f` with every header as it goes out, in `iter`'s order (two plain loops, for
    /// the head writer: the chained iterator cost ~500 instructions more per request).
    pub fn each(&self, mut f: impl FnMut(&HeaderName, &HeaderValue)) {
        if let Some(client) = self.client {
            for (n, v) in client {
                if self.forwards(n) {
                    f(n, v);
                }
            }
        }
        for (n, v) in &self.own {
            f(n, v);
        }
    }

    /// As one map (for a signer that reads and adds to it).
    pub fn to_map(&self) -> HeaderMap {
        let mut m = HeaderMap::with_capacity(self.own.len() + 8);
        for (n, v) in self.iter() {
            m.append(n.clone(), v.clone());
        }
        m
    }
}

impl From<HeaderMap> for OutHeaders<'_> {
    fn from(map: HeaderMap) -> Self {
        let mut own = Vec::with_capacity(map.len());
        let mut name = None;
        for (n, v) in map {
            // `HeaderMap`'s owned iterator names only a name's first value.
            if let Some(n) = n {
                name = Some(n);
            }
            if let Some(n) = &name {
                own.push((n.clone(), v));
            }
        }
        OutHeaders {
            own,
            ..OutHeaders::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn v(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    fn out(h: &OutHeaders<'_>) -> Vec<String> {
        h.iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect()
    }

    #[test]
    fn the_gateway_replaces_drops_and_adds_to_the_clients_headers() {
        let mut client = HeaderMap::new();
        client.insert("host", v("gw"));
        client.append("x-a", v("1"));
        client.append("x-a", v("2"));
        client.insert("authorization", v("Bearer client"));
        client.insert("connection", v("close"));
        client.insert("x-drop", v("d"));
        let skip = |n: &HeaderName| n == http::header::CONNECTION || n == http::header::HOST;
        let mut h = OutHeaders::forwarding(&client, skip, 4);
        h.insert(http::header::HOST, v("up"));
        h.insert(http::header::AUTHORIZATION, v("Bearer gateway"));
        h.remove(&HeaderName::from_static("x-drop"));
        h.append(HeaderName::from_static("x-b"), v("1"));
        h.append(HeaderName::from_static("x-b"), v("2"));
        assert_eq!(
            out(&h),
            [
                "x-a: 1",
                "x-a: 2",
                "host: up",
                "authorization: Bearer gateway",
                "x-b: 1",
                "x-b: 2"
            ]
        );
        // insert replaces every value the gateway had for the name, keeping its place.
        h.insert(HeaderName::from_static("x-b"), v("3"));
        h.insert(http::header::HOST, v("up2"));
        assert_eq!(
            out(&h)[2..],
            ["host: up2", "authorization: Bearer gateway", "x-b: 3"]
        );
        assert_eq!(
            h.get(&http::header::AUTHORIZATION),
            Some(&v("Bearer gateway"))
        );
        assert!(!h.contains_key(&HeaderName::from_static("x-drop")));
        assert!(!h.contains_key(&http::header::CONNECTION));
        // Removing a name the gateway set and the client sent drops both.
        h.remove(&http::header::AUTHORIZATION);
        assert_eq!(h.get(&http::header::AUTHORIZATION), None);
        let m = h.to_map();
        assert_eq!(m.get_all("x-a").iter().count(), 2);
        assert_eq!(m.len(), 4, "{m:?}");
    }

    #[test]
    fn a_map_becomes_the_gateways_own_with_every_value() {
        let mut m = HeaderMap::new();
        m.append("x-a", v("1"));
        m.append("x-a", v("2"));
        m.insert("host", v("h"));
        let h = OutHeaders::from(m);
        assert_eq!(out(&h), ["x-a: 1", "x-a: 2", "host: h"]);
    }
}
