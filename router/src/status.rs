//! What `GET /status` reports: the router's addresses, the cluster map as gossip shows it, and
//! request counters, so an operator can see at a glance whether every slot is owned, who leads
//! each shard, and whether requests are being redirected or retried.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde_json::{json, Value};
use unikv_gossip::{ClusterView, ShardView};

/// Request counters (monotonic since start).
#[derive(Debug, Default)]
pub struct Counters {
    /// KV requests received.
    requests: AtomicU64,
    /// KV requests answered by a node (including "key not found").
    ok: AtomicU64,
    /// KV requests answered with an error (including `unavailable`).
    errors: AtomicU64,
    /// `NotLeader` and `WrongShard` replies followed.
    redirects: AtomicU64,
    /// Attempts repeated after `Unavailable`, an unknown outcome or a transport failure.
    retries: AtomicU64,
    /// Requests that ran out of time.
    unavailable: AtomicU64,
}

impl Counters {
    pub fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    pub fn finished(&self, ok: bool) {
        let counter = if ok { &self.ok } else { &self.errors };
        counter.fetch_add(1, Relaxed);
    }

    pub fn redirect(&self) {
        self.redirects.fetch_add(1, Relaxed);
    }

    pub fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    pub fn gave_up(&self) {
        self.unavailable.fetch_add(1, Relaxed);
    }

    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.requests.load(Relaxed),
            "ok": self.ok.load(Relaxed),
            "errors": self.errors.load(Relaxed),
            "redirects": self.redirects.load(Relaxed),
            "retries": self.retries.load(Relaxed),
            "unavailable": self.unavailable.load(Relaxed),
        })
    }
}

/// Where this router can be reached.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub http: String,
    pub gossip: String,
}

/// The `/status` document.
pub fn render(addresses: &Addresses, view: &ClusterView, counters: &Counters) -> Value {
    let unowned = view.slot_table().iter().filter(|s| s.is_none()).count();
    json!({
        "router": {"http": addresses.http, "gossip": addresses.gossip},
        "view_revision": view.revision,
        "version": view.topology_version(),
        "shards": view.shards.values().map(shard).collect::<Vec<_>>(),
        "unowned_slots": unowned,
        "counters": counters.to_json(),
    })
}

fn shard(s: &ShardView) -> Value {
    let members: Vec<Value> = s
        .members
        .iter()
        .map(|m| {
            json!({
                "node_id": m.node_id,
                "http": m.http,
                "raft": m.raft,
                "role": m.role,
                "live": m.live,
            })
        })
        .collect();
    let slots: Vec<[u16; 2]> = s.slots.iter().map(|(r, _)| [r.0, r.1]).collect();
    let slot_count: usize = s.slots.iter().map(|(r, _)| r.len()).sum();
    json!({
        "id": s.id,
        "state": s.state,
        "leader": s.leader,
        "term": s.term,
        "members": members,
        "slots": slots,
        "slot_count": slot_count,
        "descriptor_version": s.descriptor_version,
        "keys": s.keys,
        "bytes": s.bytes,
        "chunk_count": s.chunks,
        "tags": s.tags.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count() {
        let c = Counters::default();
        c.request();
        c.request();
        c.finished(true);
        c.finished(false);
        c.redirect();
        c.retry();
        c.retry();
        c.gave_up();
        assert_eq!(
            c.to_json(),
            json!({"requests": 2, "ok": 1, "errors": 1, "redirects": 1, "retries": 2, "unavailable": 1})
        );
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;
    use crate::view::tests::sample_view;

    #[test]
    fn status_document_shape() {
        let addresses = Addresses {
            http: "127.0.0.1:3000".into(),
            gossip: "0.0.0.0:3000".into(),
        };
        let view = sample_view();
        let doc = render(&addresses, &view, &Counters::default());
        assert_eq!(doc["router"]["http"], "127.0.0.1:3000");
        assert_eq!(doc["router"]["gossip"], "0.0.0.0:3000");
        assert_eq!(doc["view_revision"], 9);
        assert_eq!(doc["version"], view.topology_version());
        assert_eq!(doc["unowned_slots"], 0);
        assert_eq!(doc["counters"]["requests"], 0);
        let shards = doc["shards"].as_array().unwrap();
        assert_eq!(shards.len(), 2);
        let s1 = &shards[0];
        assert_eq!(s1["id"], 1);
        assert_eq!(s1["state"], "active");
        assert_eq!(s1["term"], 4);
        assert_eq!(s1["leader"]["node_id"], 2);
        assert_eq!(s1["leader"]["raft"], "127.0.0.1:18012");
        assert_eq!(s1["slots"], json!([[0, 8191]]));
        assert_eq!(s1["slot_count"], 8192);
        assert_eq!(s1["descriptor_version"], 1);
        let m = &s1["members"][0];
        assert_eq!(m["node_id"], 1);
        assert_eq!(m["http"], "127.0.0.1:8011");
        assert_eq!(m["raft"], "127.0.0.1:18011");
        assert_eq!(m["role"], "follower");
        assert_eq!(m["live"], true);
        let s2 = &shards[1];
        assert_eq!(s2["slots"], json!([[100, 199], [8192, 16383]]));
        assert_eq!(s2["slot_count"], 100 + 8192);
        assert_eq!(s2["members"][0]["live"], false);

        let empty = render(&addresses, &ClusterView::default(), &Counters::default());
        assert_eq!(empty["unowned_slots"], 16384);
        assert_eq!(empty["shards"], json!([]));
    }
}
