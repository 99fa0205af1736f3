//! What a test asks a running unified cluster: each process's typed status (`/config`,
//! `/status`, `/raft/status`, `/rebalance/status`, `/stats`), the shard admin calls, and the
//! waits built on them (agreement, balance, a shard's leader, a node catching up).

use super::*;

impl Unified {
    /// `GET /config` of a node, parsed.
    pub async fn config(&self, node: u64) -> anyhow::Result<ClusterConfig> {
        let r = self
            .api
            .request(
                node,
                Method::GET,
                "/config",
                &[],
                Body::Empty,
                PROBE_TIMEOUT,
            )
            .await?;
        if r.status != 200 {
            bail!("GET /config on node {node}: {r}");
        }
        let v = r
            .json
            .clone()
            .ok_or_else(|| anyhow!("GET /config on node {node}: not JSON: {r}"))?;
        serde_json::from_value(v)
            .with_context(|| format!("GET /config on node {node}: unexpected shape: {r}"))
    }

    /// `GET /config` of every node of `nodes`, once.
    pub async fn configs(&self, nodes: &[u64]) -> anyhow::Result<Vec<(u64, ClusterConfig)>> {
        let mut out = Vec::new();
        for &n in nodes {
            out.push((n, self.config(n).await?));
        }
        Ok(out)
    }

    /// Polls `/config` on every node until all report the same [`ConfigView`] (shards,
    /// leaders, slot ranges, epochs); returns every node's config from that round.
    pub async fn agreed_configs(&self) -> Vec<(u64, ClusterConfig)> {
        let nodes = self.all_nodes();
        wait_until_ok(
            UNIFIED_WAIT,
            "every node's /config to agree on shards, leaders, slots and epochs",
            || async {
                let all = self.configs(&nodes).await.map_err(|e| format!("{e:#}"))?;
                let first = all[0].1.view();
                match all.iter().find(|(_, c)| c.view() != first) {
                    None => Ok(all),
                    Some((n, c)) => Err(format!(
                        "node {} sees {:?}; node {n} sees {:?}",
                        all[0].0,
                        first,
                        c.view()
                    )),
                }
            },
        )
        .await
    }

    /// The slot map every node agrees on.
    pub async fn agreed_slot_map(&self) -> SlotMap {
        self.agreed_configs().await[0].1.slot_map()
    }

    /// The router's `GET /status`, parsed.
    pub async fn router_status(&self) -> anyhow::Result<RouterStatus> {
        let r = self.api.get_path(ROUTER, "/status", &[]).await?;
        if r.status != 200 {
            bail!("GET /status on the router: {r}");
        }
        let v = r
            .json
            .clone()
            .ok_or_else(|| anyhow!("GET /status on the router: not JSON: {r}"))?;
        serde_json::from_value(v)
            .with_context(|| format!("GET /status on the router: unexpected shape: {r}"))
    }

    /// `/raft/status` of a node.
    pub async fn raft_status(&self, node: u64) -> anyhow::Result<RaftStatus> {
        self.api.status(node).await
    }

    /// `GET path?query` on a node (probe timeout), answered 200 with a body of type `T`.
    async fn get_typed<T: DeserializeOwned>(
        &self,
        node: u64,
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<T> {
        let r = self
            .api
            .request(node, Method::GET, path, query, Body::Empty, PROBE_TIMEOUT)
            .await?;
        if r.status != 200 {
            bail!("GET {path} on node {node}: {r}");
        }
        let v = r
            .json
            .clone()
            .ok_or_else(|| anyhow!("GET {path} on node {node}: not JSON: {r}"))?;
        serde_json::from_value(v)
            .with_context(|| format!("GET {path} on node {node}: unexpected shape: {r}"))
    }

    /// `GET /rebalance/status` of a node, parsed.
    pub async fn rebalance_status(&self, node: u64) -> anyhow::Result<RebalanceStatus> {
        self.get_typed(node, "/rebalance/status", &[]).await
    }

    /// `GET /stats` of a node (with `?slots=1` if `per_slot`), parsed.
    pub async fn stats(&self, node: u64, per_slot: bool) -> anyhow::Result<Stats> {
        let query: &[(&str, &str)] = if per_slot { &[("slots", "1")] } else { &[] };
        self.get_typed(node, "/stats", query).await
    }

    /// `run_unified.sh addshard S`: starts shard `shard`'s three nodes, joins them and asks
    /// node 1/1 to `/addshard` it; returns the JSON answer the script printed (whatever its
    /// status: check `"ok"`).
    pub async fn add_shard(&self, shard: u64) -> anyhow::Result<Value> {
        assert!(
            (1..=MAX_SHARDS).contains(&shard),
            "shard {shard}: ports are reserved for shards 1..={MAX_SHARDS} only"
        );
        // Known before the script runs, so its pids are recorded and cleaned up whatever
        // happens.
        self.lock_added().insert(shard);
        let s = shard.to_string();
        let out = self.script(&["addshard", &s]).await;
        self.record_pids();
        let out = out?;
        last_json_line(&out)
            .ok_or_else(|| anyhow!("run_unified.sh addshard {shard} printed no JSON:\n{out}"))
    }

    /// `run_unified.sh removeshard S`: asks node 1/1 to drain shard `shard`; returns the JSON
    /// answer the script printed.
    pub async fn remove_shard(&self, shard: u64) -> anyhow::Result<Value> {
        let s = shard.to_string();
        let out = self.script(&["removeshard", &s]).await?;
        last_json_line(&out)
            .ok_or_else(|| anyhow!("run_unified.sh removeshard {shard} printed no JSON:\n{out}"))
    }

    /// Polls every node (every `every`, at most `timeout`) until each one's
    /// `/rebalance/status` sees the cluster balanced at `expected` slots per shard (see
    /// [`RebalanceStatus::balanced_at`]) and all `/config`s agree on leaders, slots and epochs
    /// with exactly those counts; returns every node's config from that round.
    pub async fn wait_balanced(
        &self,
        expected: &BTreeMap<u64, usize>,
        every: Duration,
        timeout: Duration,
    ) -> Vec<(u64, ClusterConfig)> {
        let nodes = self.all_nodes();
        let what = format!("the cluster to balance at {expected:?} slots per shard");
        wait_until_ok_every(every, timeout, &what, || async {
            for &n in &nodes {
                let st = self
                    .rebalance_status(n)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                st.balanced_at(expected)
                    .map_err(|e| format!("node {n}: {e}"))?;
            }
            let all = self.configs(&nodes).await.map_err(|e| format!("{e:#}"))?;
            let first = all[0].1.view();
            if let Some((n, c)) = all.iter().find(|(_, c)| c.view() != first) {
                return Err(format!(
                    "/config differs: node {} sees {:?}; node {n} sees {:?}",
                    all[0].0,
                    first,
                    c.view()
                ));
            }
            let counts = all[0].1.slot_counts();
            let want: BTreeMap<u64, usize> = counts
                .keys()
                .chain(expected.keys())
                .map(|s| (*s, expected.get(s).copied().unwrap_or(0)))
                .collect();
            let have: BTreeMap<u64, usize> = want
                .keys()
                .map(|s| (*s, counts.get(s).copied().unwrap_or(0)))
                .collect();
            if have != want {
                return Err(format!("/config slot counts {have:?}, want {want:?}"));
            }
            Ok(all)
        })
        .await
    }

    /// One look at the given nodes of a shard: `Ok(n)` if node `n` says it leads and a
    /// majority of the shard (counting it) names it leader; else a description.
    pub async fn observe_shard_leader(&self, shard: u64, among: &[u64]) -> Result<u64, String> {
        let mut statuses = Vec::new();
        let mut notes = Vec::new();
        for &n in among {
            match self.raft_status(node_ref(shard, n)).await {
                Ok(s) => {
                    notes.push(format!("{}/{}", shard, s.summary()));
                    statuses.push(s);
                }
                Err(e) => notes.push(format!("node {shard}/{n}: {e:#}")),
            }
        }
        let leader = statuses
            .iter()
            .filter(|s| s.role == "leader")
            .max_by_key(|s| s.term)
            .map(|s| s.node_id);
        if let Some(l) = leader {
            let agree = statuses.iter().filter(|s| s.leader_id() == Some(l)).count();
            if agree as u64 * 2 > NODES_PER_SHARD {
                return Ok(l);
            }
        }
        Err(notes.join(" | "))
    }

    /// Waits for a leader of `shard` among nodes `among`, acknowledged by a majority.
    pub async fn wait_shard_leader(&self, shard: u64, among: &[u64], timeout: Duration) -> u64 {
        let what = format!("a leader of shard {shard} among nodes {among:?}");
        wait_until_ok(timeout, &what, || self.observe_shard_leader(shard, among)).await
    }

    /// Waits until a restarted node is a voter of its shard again, follows (or is) the
    /// leader a majority acknowledges, and has applied at least what the leader had applied
    /// when this wait began.
    pub async fn wait_node_caught_up(&self, shard: u64, node: u64) {
        let all: Vec<u64> = (1..=NODES_PER_SHARD).collect();
        let leader = self.wait_shard_leader(shard, &all, UNIFIED_WAIT).await;
        let target = self
            .raft_status(node_ref(shard, leader))
            .await
            .ok()
            .and_then(|s| s.applied_index)
            .unwrap_or(0);
        let what = format!("node {shard}/{node} to rejoin and apply index {target}");
        wait_until_ok(UNIFIED_WAIT, &what, || async {
            let s = self
                .raft_status(node_ref(shard, node))
                .await
                .map_err(|e| format!("{e:#}"))?;
            let voter = s.voters.contains(&node);
            let applied = s.applied_index.unwrap_or(0);
            if voter && s.leader_id().is_some() && applied >= target {
                Ok(())
            } else {
                Err(s.summary())
            }
        })
        .await;
    }
}
