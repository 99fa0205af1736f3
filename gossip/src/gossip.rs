//! The running member: a chitchat server plus a task that keeps the [`ClusterView`] current.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::UdpTransport;
use chitchat::{
    spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    ProtocolVersion,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use crate::config::{GossipConfig, MemberKind};
use crate::error::{Error, Result};
use crate::keys::{self, NodeState};
use crate::sealed::{SealStats, SealedUdp};
use crate::view::{ClusterView, MemberView};

/// Phi threshold of chitchat's failure detector. Phi is "time since a member's heartbeat was last
/// seen to advance / mean interval between such observations". Measured on loopback with 2 to 20
/// members at 200 ms rounds, that mean is 0.1-0.15 s whatever the cluster size (it scales with the
/// interval), so 30 reports a silent member dead after about 3-4.5 s (15-22 rounds).
const PHI_THRESHOLD: f64 = 30.0;
/// Heartbeat samples kept per member (recent behaviour matters more than history).
const SAMPLING_WINDOW: usize = 100;
/// How long a leaving member keeps its server up so peers can fetch its "leaving" key.
const LEAVE_ANNOUNCE: Duration = Duration::from_millis(250);
/// How long we wait for the chitchat server and the view task to stop before aborting them.
const STOP_TIMEOUT: Duration = Duration::from_millis(300);
/// Attempts at binding a free port when the listen port is 0.
const BIND_ATTEMPTS: usize = 5;

/// A running gossip member. Cheap to clone; the member stops when [`Gossip::shutdown`] is called
/// or the last clone is dropped.
#[derive(Clone)]
pub struct Gossip {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    kind: MemberKind,
    local_addr: SocketAddr,
    advertise: SocketAddr,
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    handle: Mutex<Option<ChitchatHandle>>,
    view_tx: Arc<watch::Sender<Arc<ClusterView>>>,
    builder: Arc<tokio::sync::Mutex<ViewBuilder>>,
    stop_tx: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// What the sealed transport passed and dropped (all zero when gossip is in the clear).
    seal_stats: Arc<SealStats>,
    sealed: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the chitchat handle closes its command channel, which stops its server.
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

/// Resolves "host:port" to one socket address, preferring IPv4; "localhost" is 127.0.0.1.
pub async fn resolve_addr(addr: &str) -> Result<SocketAddr> {
    let all = resolve_all(addr).await?;
    all.into_iter()
        .next()
        .ok_or_else(|| Error::Config(format!("{addr:?} resolves to no address")))
}

/// All addresses of "host:port", IPv4 first; "localhost" is 127.0.0.1 only.
async fn resolve_all(addr: &str) -> Result<Vec<SocketAddr>> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(vec![sa]);
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| Error::Config(format!("expected host:port, got {addr:?}")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| Error::Config(format!("bad port in {addr:?}")))?;
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)]);
    }
    let mut found: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    found.sort_by_key(|a| !a.is_ipv4());
    found.dedup();
    Ok(found)
}

async fn resolve_seeds(seeds: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for seed in seeds {
        match resolve_all(seed).await {
            Ok(addrs) if !addrs.is_empty() => {
                let v4: Vec<_> = addrs.iter().filter(|a| a.is_ipv4()).collect();
                let chosen = if v4.is_empty() {
                    addrs.iter().collect()
                } else {
                    v4
                };
                out.extend(chosen.into_iter().map(|a| a.to_string()));
            }
            Ok(_) => warn!(seed = %seed, "gossip seed resolves to no address; skipped"),
            Err(e) => warn!(seed = %seed, error = %e, "cannot resolve gossip seed; skipped"),
        }
    }
    out.sort();
    out.dedup();
    out
}

fn pick_free_port(listen: SocketAddr) -> Result<u16> {
    let socket =
        std::net::UdpSocket::bind(listen).map_err(|e| Error::Bind(format!("{listen}: {e}")))?;
    Ok(socket.local_addr()?.port())
}

impl Gossip {
    /// Binds UDP and starts gossiping (spawns chitchat). Must be called in a tokio runtime.
    pub async fn start(config: GossipConfig) -> Result<Gossip> {
        config.validate()?;
        let seeds = resolve_seeds(&config.seeds).await;
        if seeds.is_empty() && !config.seeds.is_empty() {
            warn!(name = %config.name, "no gossip seed could be resolved; waiting to be contacted");
        }
        // A fresh generation per start: a restarted member replaces its previous incarnation.
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let seal_stats = Arc::new(SealStats::default());
        let mut attempt = 0;
        let (handle, listen, chitchat_id) = loop {
            attempt += 1;
            let listen = if config.listen.port() == 0 {
                SocketAddr::new(config.listen.ip(), pick_free_port(config.listen)?)
            } else {
                config.listen
            };
            let advertise = if config.advertise.port() == 0 {
                SocketAddr::new(config.advertise.ip(), listen.port())
            } else {
                config.advertise
            };
            let chitchat_id = ChitchatId::new(config.name.clone(), generation, advertise);
            let cc_config = ChitchatConfig {
                chitchat_id: chitchat_id.clone(),
                cluster_id: config.cluster.clone(),
                gossip_interval: config.interval,
                listen_addr: listen,
                seed_nodes: seeds.clone(),
                failure_detector_config: FailureDetectorConfig {
                    phi_threshold: PHI_THRESHOLD,
                    sampling_window_size: SAMPLING_WINDOW,
                    max_interval: (config.interval * 25).max(Duration::from_secs(2)),
                    initial_interval: config.interval,
                    dead_node_grace_period: config.dead_grace_period,
                },
                marked_for_deletion_grace_period: config
                    .dead_grace_period
                    .max(Duration::from_secs(300)),
                catchup_callback: None,
                extra_liveness_predicate: None,
                protocol_version: ProtocolVersion::V0,
            };
            let initial = vec![(keys::KIND.to_string(), config.kind.to_string())];
            let spawned = match &config.key {
                Some(key) => {
                    let sealed = SealedUdp {
                        key: key.clone(),
                        stats: seal_stats.clone(),
                    };
                    spawn_chitchat(cc_config, initial, &sealed).await
                }
                None => spawn_chitchat(cc_config, initial, &UdpTransport).await,
            };
            match spawned {
                Ok(handle) => break (handle, listen, chitchat_id),
                // Someone took the port we picked between our probe and chitchat's bind.
                Err(e) if config.listen.port() == 0 && attempt < BIND_ATTEMPTS => {
                    debug!(listen = %listen, error = %e, "gossip bind failed; retrying");
                }
                Err(e) => return Err(Error::Bind(format!("{listen}: {e:#}"))),
            }
        };

        let chitchat = handle.chitchat();
        let live_rx = chitchat.lock().await.live_nodes_watcher();
        let mut builder = ViewBuilder::new(chitchat.clone());
        let initial = builder
            .refresh()
            .await
            .unwrap_or_else(|| Arc::new(ClusterView::default()));
        let view_tx = Arc::new(watch::Sender::new(initial));
        let builder = Arc::new(tokio::sync::Mutex::new(builder));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(view_loop(
            builder.clone(),
            view_tx.clone(),
            live_rx,
            stop_rx,
            config.interval,
        ));
        info!(
            name = %config.name,
            kind = %config.kind,
            listen = %listen,
            advertise = %chitchat_id.gossip_advertise_addr,
            seeds = ?seeds,
            "gossip started"
        );
        Ok(Gossip {
            inner: Arc::new(Inner {
                name: config.name,
                kind: config.kind,
                local_addr: listen,
                advertise: chitchat_id.gossip_advertise_addr,
                chitchat,
                handle: Mutex::new(Some(handle)),
                view_tx,
                builder,
                stop_tx,
                task: Mutex::new(Some(task)),
                seal_stats,
                sealed: config.key.is_some(),
            }),
        })
    }

    /// Datagrams the sealed transport accepted and dropped (forged, replayed, too large);
    /// `None` when this member gossips in the clear.
    pub fn seal_stats(&self) -> Option<&SealStats> {
        self.inner.sealed.then_some(&*self.inner.seal_stats)
    }

    /// Sets this node's keys. Only keys whose value changed are written, so publishing an
    /// unchanged state causes no gossip traffic. When it returns, this member's own view reflects
    /// the new state. Ignored (with a warning) on a router.
    pub async fn publish(&self, state: &NodeState) {
        if self.inner.kind != MemberKind::Node {
            warn!(name = %self.inner.name, "a router has no node state to publish; ignored");
            return;
        }
        let desired = keys::encode_node_state(state);
        if let Err(e) = keys::decode_node_state(&desired.iter().cloned().collect()) {
            warn!(name = %self.inner.name, error = %e, "node state will not parse at peers");
        }
        {
            let mut chitchat = self.inner.chitchat.lock().await;
            let me = chitchat.self_node_state();
            for (key, value) in &desired {
                me.set(key, value);
            }
            let wanted: HashSet<&str> = desired.iter().map(|(k, _)| k.as_str()).collect();
            let obsolete: Vec<String> = me
                .key_values()
                .filter(|(k, _)| keys::is_node_state_key(k) && !wanted.contains(k))
                .map(|(k, _)| k.to_string())
                .collect();
            for key in obsolete {
                me.delete(&key);
            }
        }
        refresh_view(&self.inner.builder, &self.inner.view_tx).await;
    }

    /// The current view and every change after it. The receiver starts with the current view
    /// marked as seen: read it with `borrow()`, then wait with `changed()`.
    pub fn watch(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.inner.view_tx.subscribe()
    }

    /// The current view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.inner.view_tx.borrow().clone()
    }

    /// Announces that this member leaves (peers then report it dead within a gossip round or
    /// two), stops the gossip server and freezes the view. Returns within about 1 s. Idempotent.
    pub async fn shutdown(&self) {
        let handle = self
            .inner
            .handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(handle) = handle else {
            return;
        };
        let peers: Vec<SocketAddr> = {
            let mut chitchat = self.inner.chitchat.lock().await;
            chitchat
                .self_node_state()
                .set(keys::LEAVING, keys::LEAVING_VALUE);
            let me = chitchat.self_chitchat_id().clone();
            chitchat
                .live_nodes()
                .filter(|id| **id != me)
                .map(|id| id.gossip_advertise_addr)
                .collect()
        };
        if !peers.is_empty() {
            // Start a handshake with every live peer; their replies make us send the new key.
            for peer in peers {
                let _ = handle.gossip(peer);
            }
            tokio::time::sleep(LEAVE_ANNOUNCE).await;
        }
        let _ = handle.initiate_shutdown();
        if tokio::time::timeout(STOP_TIMEOUT, handle.termination_watcher())
            .await
            .is_err()
        {
            handle.abort();
        }
        drop(handle);
        // Let the view task publish a last view (this member no longer live), then stop it.
        let _ = self.inner.stop_tx.send(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut task) = task {
            if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
                task.abort();
            }
        }
        info!(name = %self.inner.name, "gossip stopped");
    }

    /// Stops at once without announcing anything, as if the process had crashed: peers notice
    /// only through failure detection. Meant for tests and emergencies; prefer `shutdown`.
    pub fn abort(&self) {
        if let Some(handle) = self
            .inner
            .handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            handle.abort();
        }
        if let Some(task) = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }

    /// The bound UDP address (with the actual port when the configured port was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The address peers use to reach this member.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.inner.advertise
    }

    /// This member's name (its chitchat node id).
    pub fn name(&self) -> &str {
        &self.inner.name
    }
}

/// Rebuilds the view and publishes it if it changed (under the builder lock, so revisions are
/// sent in order).
async fn refresh_view(
    builder: &tokio::sync::Mutex<ViewBuilder>,
    view_tx: &watch::Sender<Arc<ClusterView>>,
) {
    let mut builder = builder.lock().await;
    if let Some(view) = builder.refresh().await {
        debug!(revision = view.revision, "cluster view changed");
        view_tx.send_replace(view);
    }
}

async fn view_loop(
    builder: Arc<tokio::sync::Mutex<ViewBuilder>>,
    view_tx: Arc<watch::Sender<Arc<ClusterView>>>,
    mut live_rx: watch::Receiver<BTreeMap<ChitchatId, chitchat::NodeState>>,
    mut stop_rx: watch::Receiver<bool>,
    interval: Duration,
) {
    // Chitchat signals changes of the live set and of live members' versions; the periodic tick
    // catches the rest (deaths of members already dead to chitchat, garbage collection).
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut live_open = true;
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            changed = live_rx.changed(), if live_open => {
                live_open = changed.is_ok();
                false
            }
            _ = stop_rx.changed() => true,
        };
        refresh_view(&builder, &view_tx).await;
        if stop {
            return;
        }
    }
}

/// What was parsed from one chitchat member state, cached by its version.
struct Parsed {
    max_version: u64,
    kind: Option<MemberKind>,
    leaving: bool,
    node: Option<NodeState>,
}

/// Turns chitchat's member states into [`ClusterView`]s.
struct ViewBuilder {
    chitchat: Arc<tokio::sync::Mutex<Chitchat>>,
    cache: HashMap<ChitchatId, Parsed>,
    /// Members of the previous build that chitchat still knew, by name.
    last_present: BTreeMap<String, MemberView>,
    /// Members chitchat has forgotten (garbage-collected) whose last state is still the only
    /// source of their shard's slot ownership.
    retained: BTreeMap<String, MemberView>,
    current: Arc<ClusterView>,
}

fn parse_member(
    id: &ChitchatId,
    max_version: u64,
    kv: &BTreeMap<String, String>,
    previous: Option<NodeState>,
) -> Parsed {
    let kind = match kv.get(keys::KIND).map(|v| keys::parse_kind(v)) {
        Some(Ok(kind)) => Some(kind),
        Some(Err(e)) => {
            debug!(member = ?id, error = %e, "ignoring gossip member with a bad kind");
            None
        }
        None => None,
    };
    let node = if kind == Some(MemberKind::Node) {
        match keys::decode_node_state(kv) {
            Ok(state) => Some(state),
            Err(e) => {
                // Not published yet, a partial update, or garbage: keep the last good state.
                debug!(member = ?id, error = %e, "ignoring unusable node state");
                previous
            }
        }
    } else {
        None
    };
    Parsed {
        max_version,
        kind,
        leaving: keys::is_leaving(kv),
        node,
    }
}

/// Whether a forgotten member's last state is still worth showing: it owns slots and no member
/// chitchat knows reports the same node or a newer-or-equal descriptor for its shard.
fn worth_retaining(member: &MemberView, present: &BTreeMap<String, MemberView>) -> bool {
    let Some(state) = &member.node else {
        return false;
    };
    if state.slots.is_empty() || present.contains_key(&member.name) {
        return false;
    }
    !present.values().filter_map(|m| m.node.as_ref()).any(|p| {
        p.shard == state.shard
            && (p.node == state.node || p.descriptor_version >= state.descriptor_version)
    })
}

impl ViewBuilder {
    fn new(chitchat: Arc<tokio::sync::Mutex<Chitchat>>) -> Self {
        Self {
            chitchat,
            cache: HashMap::new(),
            last_present: BTreeMap::new(),
            retained: BTreeMap::new(),
            current: Arc::new(ClusterView::default()),
        }
    }

    /// Rebuilds the view; returns it if it differs from the previous one.
    async fn refresh(&mut self) -> Option<Arc<ClusterView>> {
        let mut changed = Vec::new();
        let mut known = HashSet::new();
        let live: HashSet<ChitchatId> = {
            let chitchat = self.chitchat.lock().await;
            for (id, state) in chitchat.node_states() {
                known.insert(id.clone());
                let version = state.max_version();
                if self.cache.get(id).map(|p| p.max_version) != Some(version) {
                    let kv: BTreeMap<String, String> = state
                        .key_values()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    changed.push((id.clone(), version, kv));
                }
            }
            chitchat.live_nodes().cloned().collect()
        };
        self.cache.retain(|id, _| known.contains(id));
        for (id, version, kv) in changed {
            let previous = self.cache.get(&id).and_then(|p| p.node.clone());
            let parsed = parse_member(&id, version, &kv, previous);
            self.cache.insert(id, parsed);
        }

        // One member per name: the newest generation.
        let mut newest: BTreeMap<&str, &ChitchatId> = BTreeMap::new();
        for id in self.cache.keys() {
            let slot = newest.entry(&id.node_id).or_insert(id);
            if id.generation_id > slot.generation_id {
                *slot = id;
            }
        }
        let mut present = BTreeMap::new();
        for id in newest.values() {
            let parsed = &self.cache[*id];
            let Some(kind) = parsed.kind else {
                continue;
            };
            present.insert(
                id.node_id.to_string(),
                MemberView {
                    name: id.node_id.to_string(),
                    kind,
                    live: live.contains(*id) && !parsed.leaving,
                    gossip_addr: id.gossip_advertise_addr,
                    node: parsed.node.clone(),
                },
            );
        }

        for (name, mut member) in std::mem::take(&mut self.last_present) {
            if !present.contains_key(&name) {
                member.live = false;
                self.retained.insert(name, member);
            }
        }
        self.retained.retain(|_, m| worth_retaining(m, &present));
        self.last_present = present.clone();

        let members = present
            .into_values()
            .chain(self.retained.values().cloned())
            .collect();
        let mut view = ClusterView::from_members(members);
        if self.current.revision > 0 && self.current.same_content(&view) {
            return None;
        }
        view.revision = self.current.revision + 1;
        self.current = Arc::new(view);
        Some(self.current.clone())
    }
}

#[cfg(test)]
#[path = "gossip_tests.rs"]
mod tests;
