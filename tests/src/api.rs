//! A small HTTP client for the node API: one cloneable [`Api`] knows the HTTP address of every
//! node of a cluster and returns raw [`Resp`]onses (status + body), so tests can assert on
//! both successes and errors.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
pub use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

/// Default timeout of one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of a `/raft/status` or `/health` probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of a `/raft/join` request (it answers once the node is a voter).
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP response: status, raw body text and the body parsed as JSON (if it is JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub raw: String,
    pub json: Option<Value>,
}

impl Resp {
    /// 200 OK.
    pub fn is_ok(&self) -> bool {
        self.status == 200
    }

    /// A top-level field of a JSON object body.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.json.as_ref()?.as_object()?.get(name)
    }

    /// A top-level string field of a JSON object body.
    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.field(name)?.as_str()
    }

    /// The `"code"` of an error body.
    pub fn code(&self) -> Option<&str> {
        self.str_field("code")
    }

    /// 200 with `{"ok": true}`.
    pub fn is_ok_true(&self) -> bool {
        self.is_ok() && self.field("ok") == Some(&Value::Bool(true))
    }
}

/// Asserts a JSON error body `{"error": "<non-empty>", "code": code}` with `status`.
pub fn assert_json_error(what: &str, r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{what}: expected HTTP {status}, got {r}");
    assert!(
        r.json.as_ref().is_some_and(Value::is_object),
        "{what}: body is not a JSON object: {r}"
    );
    assert_eq!(r.code(), Some(code), "{what}: wrong code: {r}");
    assert!(
        r.str_field("error").is_some_and(|e| !e.is_empty()),
        "{what}: no \"error\" message: {r}"
    );
}

impl fmt::Display for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = self.raw.clone();
        if raw.len() > 400 {
            let mut cut = 400;
            while !raw.is_char_boundary(cut) {
                cut -= 1;
            }
            raw.truncate(cut);
            raw.push_str("...");
        }
        write!(f, "HTTP {} {}", self.status, raw)
    }
}

/// A request body.
#[derive(Debug, Clone, Default)]
pub enum Body {
    /// No body.
    #[default]
    Empty,
    /// `application/x-www-form-urlencoded`.
    Form(Vec<(String, String)>),
    /// `application/json`.
    Json(Value),
    /// Any bytes with an explicit content type.
    Raw {
        content_type: String,
        bytes: Vec<u8>,
    },
}

impl Body {
    /// A form body from string pairs.
    pub fn form(pairs: &[(&str, &str)]) -> Body {
        Body::Form(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

/// The leader as reported by `/raft/status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LeaderInfo {
    pub node_id: u64,
    #[serde(default)]
    pub http: Option<String>,
    #[serde(default)]
    pub raft: Option<String>,
}

/// The body of `GET /raft/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct RaftStatus {
    pub node_id: u64,
    #[serde(default)]
    pub shard_id: Option<u64>,
    pub role: String,
    #[serde(default)]
    pub term: u64,
    #[serde(default)]
    pub leader: Option<LeaderInfo>,
    #[serde(default)]
    pub voters: Vec<u64>,
    #[serde(default)]
    pub learners: Vec<u64>,
    #[serde(default)]
    pub last_log_index: Option<u64>,
    #[serde(default)]
    pub applied_index: Option<u64>,
    #[serde(default)]
    pub snapshot_index: Option<u64>,
    #[serde(default)]
    pub purged_index: Option<u64>,
    /// What damaged data the node found, if any.
    #[serde(default)]
    pub corruption: Option<String>,
    /// Its data dir's space (`/raft/status` `disk`).
    #[serde(default)]
    pub disk: DiskStatus,
    #[serde(default)]
    pub uptime_ms: u64,
}

/// `/raft/status` `disk`: whether the data dir ran out of space, and what is held for it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct DiskStatus {
    #[serde(default)]
    pub full: bool,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub enospc_seen: u64,
    #[serde(default)]
    pub held: u64,
    #[serde(default)]
    pub recoveries: u64,
    #[serde(default)]
    pub ballast_bytes: u64,
    #[serde(default)]
    pub free_bytes: Option<u64>,
}

impl RaftStatus {
    /// The node id of the leader this node knows, if any.
    pub fn leader_id(&self) -> Option<u64> {
        self.leader.as_ref().map(|l| l.node_id)
    }

    /// Voters, sorted.
    pub fn sorted_voters(&self) -> Vec<u64> {
        let mut v = self.voters.clone();
        v.sort_unstable();
        v
    }

    /// A one-line summary for log and panic messages.
    pub fn summary(&self) -> String {
        format!(
            "node {} role={} term={} leader={:?} voters={:?} learners={:?} last_log={:?} applied={:?} snapshot={:?} purged={:?}",
            self.node_id,
            self.role,
            self.term,
            self.leader_id(),
            self.voters,
            self.learners,
            self.last_log_index,
            self.applied_index,
            self.snapshot_index,
            self.purged_index
        )
    }
}

/// HTTP client for every node of one cluster; cheap to clone, usable from spawned tasks.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    addrs: Arc<BTreeMap<u64, String>>,
    /// Sent as `Authorization: Bearer` on every request when the nodes have an admin token.
    admin_token: Option<Arc<str>>,
}

impl Api {
    /// `addrs`: node id -> `host:port` of its HTTP server.
    pub fn new(addrs: BTreeMap<u64, String>) -> Api {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build reqwest client");
        Api {
            client,
            addrs: Arc::new(addrs),
            admin_token: None,
        }
    }

    /// The same client, sending `token` as the admin bearer token.
    pub fn with_admin_token(mut self, token: Option<String>) -> Api {
        self.admin_token = token.map(Into::into);
        self
    }

    /// All node ids, ascending.
    pub fn node_ids(&self) -> Vec<u64> {
        self.addrs.keys().copied().collect()
    }

    /// `host:port` of a node's HTTP server.
    pub fn http_addr(&self, node: u64) -> &str {
        self.addrs
            .get(&node)
            .unwrap_or_else(|| panic!("no node {node} in this cluster"))
    }

    /// Sends one request. Transport failures (refused, timeout) are `Err`; every HTTP answer,
    /// whatever its status, is `Ok`.
    pub async fn request(
        &self,
        node: u64,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Body,
        timeout: Duration,
    ) -> anyhow::Result<Resp> {
        let url = format!("http://{}{}", self.http_addr(node), path);
        let mut req = self.client.request(method.clone(), &url).timeout(timeout);
        if let Some(t) = &self.admin_token {
            req = req.bearer_auth(t);
        }
        if !query.is_empty() {
            req = req.query(query);
        }
        req = match body {
            Body::Empty => req,
            Body::Form(pairs) => req.form(&pairs),
            Body::Json(v) => req.json(&v),
            Body::Raw {
                content_type,
                bytes,
            } => req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes),
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url} on node {node}"))?;
        let status = resp.status().as_u16();
        let raw = resp
            .text()
            .await
            .with_context(|| format!("reading body of {method} {url} on node {node}"))?;
        let json = serde_json::from_str(&raw).ok();
        Ok(Resp { status, raw, json })
    }

    /// `GET path?query` with the default timeout.
    pub async fn get_path(
        &self,
        node: u64,
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<Resp> {
        self.request(node, Method::GET, path, query, Body::Empty, REQUEST_TIMEOUT)
            .await
    }

    /// `POST /put?key=K&val=V`.
    pub async fn put(&self, node: u64, key: &str, val: &str) -> anyhow::Result<Resp> {
        self.put_timeout(node, key, val, REQUEST_TIMEOUT).await
    }

    /// `POST /put?key=K&val=V` with an explicit timeout.
    pub async fn put_timeout(
        &self,
        node: u64,
        key: &str,
        val: &str,
        timeout: Duration,
    ) -> anyhow::Result<Resp> {
        self.request(
            node,
            Method::POST,
            "/put",
            &[("key", key), ("val", val)],
            Body::Empty,
            timeout,
        )
        .await
    }

    /// `POST /put?key=K&val=V&client_id=C&seq=S`.
    pub async fn put_seq(
        &self,
        node: u64,
        key: &str,
        val: &str,
        client_id: &str,
        seq: u64,
    ) -> anyhow::Result<Resp> {
        let seq = seq.to_string();
        self.request(
            node,
            Method::POST,
            "/put",
            &[
                ("key", key),
                ("val", val),
                ("client_id", client_id),
                ("seq", &seq),
            ],
            Body::Empty,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// The value a `GET /get?key=K` answers with a 200 within `timeout`; None for anything
    /// else (a refusal, a timeout, a missing key): for polling a node that may not serve.
    pub async fn value_within(&self, node: u64, key: &str, timeout: Duration) -> Option<String> {
        let r = self
            .request(
                node,
                Method::GET,
                "/get",
                &[("key", key)],
                Body::Empty,
                timeout,
            )
            .await
            .ok()?;
        if !r.is_ok() {
            return None;
        }
        r.str_field("value").map(str::to_string)
    }

    /// `GET /get?key=K`.
    pub async fn get(&self, node: u64, key: &str) -> anyhow::Result<Resp> {
        self.get_path(node, "/get", &[("key", key)]).await
    }

    /// `POST /append?key=K&val=V`.
    pub async fn append(&self, node: u64, key: &str, val: &str) -> anyhow::Result<Resp> {
        self.append_timeout(node, key, val, REQUEST_TIMEOUT).await
    }

    /// `POST /append?key=K&val=V` with an explicit timeout.
    pub async fn append_timeout(
        &self,
        node: u64,
        key: &str,
        val: &str,
        timeout: Duration,
    ) -> anyhow::Result<Resp> {
        self.request(
            node,
            Method::POST,
            "/append",
            &[("key", key), ("val", val)],
            Body::Empty,
            timeout,
        )
        .await
    }

    /// `POST /append?key=K&val=V&client_id=C&seq=S`.
    pub async fn append_seq(
        &self,
        node: u64,
        key: &str,
        val: &str,
        client_id: &str,
        seq: u64,
    ) -> anyhow::Result<Resp> {
        let seq = seq.to_string();
        self.request(
            node,
            Method::POST,
            "/append",
            &[
                ("key", key),
                ("val", val),
                ("client_id", client_id),
                ("seq", &seq),
            ],
            Body::Empty,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `DELETE /delete?key=K`.
    pub async fn delete(&self, node: u64, key: &str) -> anyhow::Result<Resp> {
        self.request(
            node,
            Method::DELETE,
            "/delete",
            &[("key", key)],
            Body::Empty,
            REQUEST_TIMEOUT,
        )
        .await
    }

    /// `GET /get?key=K` as a value: `Some(v)` on 200, `None` on 404 `not_found`, `Err` on
    /// anything else.
    pub async fn get_value(&self, node: u64, key: &str) -> anyhow::Result<Option<String>> {
        let r = self.get(node, key).await?;
        match r.status {
            200 => {
                let got_key = r.str_field("key");
                if got_key != Some(key) {
                    bail!("GET /get?key={key:?} on node {node}: body has key {got_key:?}: {r}");
                }
                match r.field("value") {
                    Some(Value::String(v)) => Ok(Some(v.clone())),
                    _ => Err(anyhow!(
                        "GET /get?key={key:?} on node {node}: no string \"value\": {r}"
                    )),
                }
            }
            404 if r.code() == Some("not_found") => Ok(None),
            _ => Err(anyhow!("GET /get?key={key:?} on node {node}: {r}")),
        }
    }

    /// `GET /raft/status`, parsed.
    pub async fn status(&self, node: u64) -> anyhow::Result<RaftStatus> {
        let r = self
            .request(
                node,
                Method::GET,
                "/raft/status",
                &[],
                Body::Empty,
                PROBE_TIMEOUT,
            )
            .await?;
        if r.status != 200 {
            bail!("GET /raft/status on node {node}: {r}");
        }
        let v = r
            .json
            .clone()
            .ok_or_else(|| anyhow!("GET /raft/status on node {node}: not JSON: {r}"))?;
        serde_json::from_value(v)
            .with_context(|| format!("GET /raft/status on node {node}: unexpected shape: {r}"))
    }

    /// `GET /health` answered 200 `{"ok":true}`.
    pub async fn healthy(&self, node: u64) -> bool {
        match self
            .request(
                node,
                Method::GET,
                "/health",
                &[],
                Body::Empty,
                PROBE_TIMEOUT,
            )
            .await
        {
            Ok(r) => r.status == 200 && r.field("ok") == Some(&Value::Bool(true)),
            Err(_) => false,
        }
    }

    /// `POST /raft/join` with form body `nodeid=N&addr=A`, sent to `via`.
    pub async fn join(&self, via: u64, node_id: &str, raft_addr: &str) -> anyhow::Result<Resp> {
        self.request(
            via,
            Method::POST,
            "/raft/join",
            &[],
            Body::form(&[("nodeid", node_id), ("addr", raft_addr)]),
            JOIN_TIMEOUT,
        )
        .await
    }
}
