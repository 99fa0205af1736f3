//! Node configuration: the seed's flags (`--shard_id --node_id --port --raft_addr --peer_shards`,
//! snake_case or kebab-case) plus storage, TLS, Raft timing and limit flags with defaults that
//! work from a fresh directory.

use std::path::PathBuf;

use clap::Parser;
use unikv_types::{Limits, NodeId, ShardId};

use crate::error::{Error, Result};

/// Most slots one hand-off carries (`--move_batch_slots`); a target refuses a larger batch.
pub const MAX_MOVE_BATCH: usize = 1024;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "unikv-node",
    about = "A unikv shard replica (Raft over QUIC, RocksDB storage)",
    // A flag given twice takes its last value, so extra flags (UNIKV_NODE_ARGS in the scripts)
    // can override the scripts' own.
    args_override_self = true
)]
pub struct Config {
    /// Shard (Raft group) this replica belongs to.
    #[arg(long = "shard_id", alias = "shard-id")]
    pub shard_id: u64,
    /// Replica id within the shard (1 bootstraps a fresh group).
    #[arg(long = "node_id", alias = "node-id")]
    pub node_id: u64,
    /// HTTP port (admin and direct KV API).
    #[arg(long)]
    pub port: u16,
    /// QUIC address for Raft and KV RPCs, `host:port`; also how peers reach this node.
    #[arg(long = "raft_addr", alias = "raft-addr")]
    pub raft_addr: String,
    /// HTTP addresses of nodes of the other initial shards, comma separated.
    #[arg(long = "peer_shards", alias = "peer-shards", default_value = "")]
    pub peer_shards: String,
    /// Data directory [default: data/unikv_<shard>_<node>].
    #[arg(long = "data_dir", alias = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// This node's certificate directory, as `unikv-node certs` writes it (ca.pem, cert.pem,
    /// key.pem, gossip.key). Without cert.pem: a local development CA shared by the nodes of
    /// this machine, created by the first one, loopback only [default: data/tls].
    #[arg(long = "tls_dir", alias = "tls-dir")]
    pub tls_dir: Option<PathBuf>,
    /// UDP port for gossip [default: the HTTP port number]. Nodes named in --peer_shards are
    /// reached for gossip at the same port number over UDP.
    #[arg(long = "gossip_port", alias = "gossip-port")]
    pub gossip_port: Option<u16>,
    /// Gossip round interval.
    #[arg(
        long = "gossip_interval_ms",
        alias = "gossip-interval-ms",
        default_value_t = 200
    )]
    pub gossip_interval_ms: u64,
    /// Interface the HTTP server (and gossip) binds. Loopback by default, so only this
    /// machine reaches the node's API (admin calls included); give this host's address, or
    /// `0.0.0.0`, to serve other machines (then an admin token is required).
    #[arg(long = "http_host", alias = "http-host", default_value = "127.0.0.1")]
    pub http_host: String,
    /// File holding the admin token (at least 16 characters; or set UNIKV_ADMIN_TOKEN):
    /// calls that change the cluster then need `Authorization: Bearer <token>`. Without one,
    /// only callers on this machine may make them, and HTTP must stay on loopback.
    #[arg(long = "admin_token_file", alias = "admin-token-file")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding the data token (or set UNIKV_DATA_TOKEN): data calls then need it (or
    /// the admin token) as `Authorization: Bearer`. Off by default.
    #[arg(long = "data_token_file", alias = "data-token-file")]
    pub data_token_file: Option<PathBuf>,
    /// Host names (comma-separated) this node's HTTP answers to besides IP addresses,
    /// `localhost` and `--http_host`: a request with another `Host` is refused as a possible
    /// DNS-rebinding attack from a web page.
    #[arg(long = "allowed_hosts", alias = "allowed-hosts", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Whether this node initialises a fresh Raft group [default: true for node 1].
    #[arg(long)]
    pub bootstrap: Option<bool>,
    /// Number of shards the cluster starts with; the initial slot split depends on it
    /// [default: 1 + number of --peer_shards].
    #[arg(long = "initial_shards", alias = "initial-shards")]
    pub initial_shards: Option<u64>,
    /// Raft heartbeat interval.
    #[arg(long = "heartbeat_ms", alias = "heartbeat-ms", default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Raft election timeout, lower bound.
    #[arg(
        long = "election_min_ms",
        alias = "election-min-ms",
        default_value_t = 600
    )]
    pub election_min_ms: u64,
    /// Raft election timeout, upper bound.
    #[arg(
        long = "election_max_ms",
        alias = "election-max-ms",
        default_value_t = 1200
    )]
    pub election_max_ms: u64,
    /// Take a snapshot after this many log entries since the last one.
    #[arg(
        long = "snapshot_logs",
        alias = "snapshot-logs",
        default_value_t = 20_000
    )]
    pub snapshot_logs: u64,
    /// Log entries kept behind a snapshot when purging (lets slightly lagging followers catch
    /// up from the log instead of a snapshot).
    #[arg(long = "keep_logs", alias = "keep-logs", default_value_t = 5_000)]
    pub keep_logs: u64,
    /// Largest accepted key, in bytes.
    #[arg(
        long = "max_key_bytes",
        alias = "max-key-bytes",
        default_value_t = 1024
    )]
    pub max_key_bytes: usize,
    /// Largest accepted value, in bytes.
    #[arg(long = "max_value_bytes", alias = "max-value-bytes", default_value_t = 1024 * 1024)]
    pub max_value_bytes: usize,
    /// Most HTTP connections served at once; beyond it new ones wait to be accepted.
    #[arg(
        long = "max_http_connections",
        alias = "max-http-connections",
        default_value_t = 1024
    )]
    pub max_http_connections: usize,
    /// How long a request may wait for a leader, a quorum or a forwarded answer.
    #[arg(
        long = "request_timeout_ms",
        alias = "request-timeout-ms",
        default_value_t = 5_000
    )]
    pub request_timeout_ms: u64,
    /// Longest a slot hand-off may keep the slot frozen before the target confirmed it has
    /// the data: past it the source aborts the move and serves writes again, whatever gossip
    /// says of the target (once `Done` is committed the move always completes).
    #[arg(
        long = "handoff_timeout_ms",
        alias = "handoff-timeout-ms",
        default_value_t = 30_000
    )]
    pub handoff_timeout_ms: u64,
    /// Slot hand-offs a shard leader runs at once while rebalancing (one hand-off may carry
    /// up to `--move_batch_slots` small slots; each frozen slot waits only for its own).
    #[arg(long = "parallel_moves", alias = "parallel-moves", default_value_t = 8)]
    pub parallel_moves: usize,
    /// Most megabytes per second this node's slot hand-offs send, paced before each piece of
    /// a copy (never while a slot is frozen; 0: unlimited).
    #[arg(long = "move_rate_mb", alias = "move-rate-mb", default_value_t = 0.0)]
    pub move_rate_mb: f64,
    /// A slot moves in pieces of about this many KiB (one message and one Raft entry each):
    /// what bounds the memory and the log entries of a move, whatever the slot's size.
    #[arg(
        long = "move_piece_kb",
        alias = "move-piece-kb",
        default_value_t = 1024
    )]
    pub move_piece_kb: u64,
    /// Slots holding at most this many KiB move frozen, sent whole in one `In` (a copy first
    /// would cost more commits than the freeze it saves); larger ones are copied while they
    /// serve. 0: every slot is copied first (the nemesis runs so).
    #[arg(
        long = "move_copy_min_kb",
        alias = "move-copy-min-kb",
        default_value_t = 64
    )]
    pub move_copy_min_kb: u64,
    /// Small slots (see `--move_copy_min_kb`) planned for the same target hand off together,
    /// up to this many and `--move_piece_kb` of data per hand-off: one freeze and one message
    /// for all of them. 1 (default): one slot per hand-off. Batches move
    /// many small slots ~3x faster but freeze each slot longer (docs/benchmarks.md): for
    /// draining or filling a shard fast, not under a latency-sensitive load.
    #[arg(
        long = "move_batch_slots",
        alias = "move-batch-slots",
        default_value_t = 1
    )]
    pub move_batch_slots: usize,
    /// The balancer keeps every active shard's bytes within this percentage of the mean (or
    /// `--balance_min_kb`, whichever is larger).
    #[arg(
        long = "balance_tolerance_pct",
        alias = "balance-tolerance-pct",
        default_value_t = 10
    )]
    pub balance_tolerance_pct: u64,
    /// The least the balancer's bound on bytes per shard is, in KiB (64 MiB): below it, bytes
    /// are not worth a move and slot counts alone decide.
    #[arg(
        long = "balance_min_kb",
        alias = "balance-min-kb",
        default_value_t = 65_536
    )]
    pub balance_min_kb: u64,
    /// A chunk of a range collection splits in two once it holds more than this many bytes
    /// (keys + values). Chunks are also what the balancer moves to even out bytes per shard.
    #[arg(
        long = "chunk_max_bytes",
        alias = "chunk-max-bytes",
        default_value_t = 64 << 20
    )]
    pub chunk_max_bytes: u64,
    /// How long a client's at-most-once record is kept in a slot after its last write there
    /// (decided on the leader's clock, written into the log). A retry first sent longer ago
    /// than this may be refused with `session_expired`, never applied twice; the records
    /// kept grow with the clients that wrote within the window.
    #[arg(
        long = "dedup_window_s",
        alias = "dedup-window-s",
        default_value_t = 600
    )]
    pub dedup_window_s: u64,
    /// Test-only: never fsync the Raft log's WAL, so writes are acknowledged without being
    /// durable and are lost on power loss. The power-cut test's negative control uses it to
    /// prove the test can see a loss. Hidden from `--help`; never use it for data you keep.
    #[arg(
        long = "unsafe_skip_fsync_for_tests",
        hide = true,
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub unsafe_skip_fsync_for_tests: bool,
    /// Serve linearizable reads under the leader lease (no round trip while a quorum has
    /// acknowledged the leader within `--election_max_ms`), falling back to ReadIndex.
    /// Safe while clock *rates* agree between nodes; a restarted node withholds its vote for
    /// one lease so it cannot break the lease it granted before a crash (see `vote_hold`).
    /// `false` sends every read through ReadIndex (one heartbeat round per batch of reads).
    #[arg(
        long = "lease_reads",
        alias = "lease-reads",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub lease_reads: bool,
    /// How much faster a follower's clock may run than the leader's before a lease read could
    /// be stale. Followers promise not to vote for another leader for `--election_max_ms` by
    /// their own clock after a heartbeat; the leader trusts its lease for only
    /// `--election_max_ms / --lease_drift_margin` by its clock, so the lease holds while clock
    /// *rates* differ by less than this factor (1.5: a leader clock up to 1.5x slower than a
    /// follower's).
    #[arg(
        long = "lease_drift_margin",
        alias = "lease-drift-margin",
        default_value_t = 1.5
    )]
    pub lease_drift_margin: f64,
    /// Threads running the node's async work (network, Raft, HTTP). `1` runs everything on
    /// one thread (tokio's current-thread runtime): no hand-offs between worker threads, the
    /// better choice when many nodes share a machine (`scripts/run_unified.sh` runs nine on
    /// one host and passes 1). `0`, the default, means one worker per CPU core. WAL fsyncs
    /// and large applies run on their own threads either way.
    #[arg(long = "worker_threads", alias = "worker-threads", default_value_t = 0)]
    pub worker_threads: usize,
    /// RocksDB memtables of all column families together, in MiB.
    #[arg(long = "memtable_mb", alias = "memtable-mb", default_value_t = 64)]
    pub memtable_mb: usize,
    /// Space kept in reserve in the data dir for a full disk, in MiB (a file named `ballast`,
    /// reserved with fallocate). It is let go at the first "no space left on device" so the
    /// node can finish what it had started and keep serving reads while writes are refused
    /// (507); reserved again once there is room. Default: twice `--memtable_mb` plus 8;
    /// 0 turns it off.
    #[arg(long = "ballast_mb", alias = "ballast-mb")]
    pub ballast_mb: Option<usize>,
    /// Free space, in MiB, below which this node counts its disk as full before any write
    /// fails (a leader then refuses writes with 507): the room RocksDB needs to resume. It
    /// matters most when a shard's nodes share one disk. Default: two memtable write buffers (`--memtable_mb` rounded down to even, 128 at most); 0 waits
    /// for "no space left on device".
    #[arg(long = "disk_reserve_mb", alias = "disk-reserve-mb")]
    pub disk_reserve_mb: Option<usize>,
    /// RocksDB block cache (shared by all column families), in MiB.
    #[arg(
        long = "block_cache_mb",
        alias = "block-cache-mb",
        default_value_t = 64
    )]
    pub block_cache_mb: usize,
    /// Write logs to this file instead of stderr (filter with RUST_LOG, default info).
    #[arg(long = "log_file", alias = "log-file")]
    pub log_file: Option<PathBuf>,
}

impl Config {
    pub fn shard(&self) -> ShardId {
        ShardId(self.shard_id)
    }

    pub fn node(&self) -> NodeId {
        NodeId(self.node_id)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            PathBuf::from(format!("data/unikv_{}_{}", self.shard_id, self.node_id))
        })
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.tls_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("data/tls"))
    }

    pub fn gossip_port(&self) -> u16 {
        self.gossip_port.unwrap_or(self.port)
    }

    /// Gossip seeds: the `--peer_shards` entries, `host:port` (a bare port means localhost).
    pub fn peer_shards(&self) -> Vec<String> {
        self.peer_shards
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.parse::<u16>().is_ok() {
                    format!("localhost:{s}")
                } else {
                    s.to_string()
                }
            })
            .collect()
    }

    pub fn initial_shards(&self) -> u64 {
        self.initial_shards
            .unwrap_or(1 + self.peer_shards().len() as u64)
    }

    pub fn bootstrap(&self) -> bool {
        self.bootstrap.unwrap_or(self.node_id == 1)
    }

    /// The host part of `--raft_addr`, used to advertise the HTTP address too.
    pub fn advertise_host(&self) -> &str {
        self.raft_addr
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or("localhost")
    }

    /// The HTTP address other nodes and clients use for this node.
    pub fn http_addr(&self) -> String {
        format!("{}:{}", self.advertise_host(), self.port)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
        }
    }

    pub fn http_limits(&self) -> unikv_http::HttpLimits {
        unikv_http::HttpLimits {
            max_connections: self.max_http_connections,
            ..Default::default()
        }
    }

    pub fn db_options(&self) -> unikv_storage::DbOptions {
        unikv_storage::DbOptions {
            memtable_mb: self.memtable_mb,
            block_cache_mb: self.block_cache_mb,
            unsafe_skip_fsync: self.unsafe_skip_fsync_for_tests,
            ballast_mb: self
                .ballast_mb
                .unwrap_or(2 * self.memtable_mb.saturating_add(4)),
            reserve_mb: self.disk_reserve_mb,
        }
    }

    /// Whether `--http_host` lets other machines in (anything but a loopback address).
    pub fn http_exposed(&self) -> bool {
        unikv_http::bind::is_exposed(&self.http_host)
    }

    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.request_timeout_ms)
    }

    /// How long the leader trusts a quorum's acknowledgement for a lease read: the followers'
    /// promise (`--election_max_ms`) shortened by `--lease_drift_margin`.
    pub fn lease_age(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.election_max_ms)
            .div_f64(self.lease_drift_margin.max(1.0))
    }

    /// `--move_copy_min_kb` in bytes.
    pub fn move_copy_min_bytes(&self) -> u64 {
        self.move_copy_min_kb.saturating_mul(1024)
    }

    /// `--move_piece_kb` in bytes.
    pub fn move_piece_bytes(&self) -> u64 {
        self.move_piece_kb * 1024
    }

    pub fn handoff_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.handoff_timeout_ms)
    }

    /// Checks the flags for contradictions before anything starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.shard_id == 0 {
            return bad("--shard_id must be at least 1".into());
        }
        if self.parallel_moves == 0 {
            return bad("--parallel_moves must be at least 1".into());
        }
        if !(self.move_rate_mb >= 0.0 && self.move_rate_mb.is_finite()) {
            return bad(format!(
                "--move_rate_mb must be 0 (unlimited) or a positive number of MB/s, got {}",
                self.move_rate_mb
            ));
        }
        if !(1..=100).contains(&self.balance_tolerance_pct) {
            return bad(format!(
                "--balance_tolerance_pct must be 1..=100, got {}",
                self.balance_tolerance_pct
            ));
        }
        if !(1..=MAX_MOVE_BATCH).contains(&self.move_batch_slots) {
            return bad(format!(
                "--move_batch_slots must be 1..={MAX_MOVE_BATCH}, got {}",
                self.move_batch_slots
            ));
        }
        if !(16..=65_536).contains(&self.move_piece_kb) {
            return bad(format!(
                "--move_piece_kb must be 16..=65536, got {}",
                self.move_piece_kb
            ));
        }
        if self.handoff_timeout_ms == 0 {
            return bad("--handoff_timeout_ms must be at least 1".into());
        }
        if !(1024..=(1 << 40)).contains(&self.chunk_max_bytes) {
            return bad("--chunk_max_bytes must be 1024..=1099511627776 (1 TiB)".into());
        }
        if !(1..=30 * 86_400).contains(&self.dedup_window_s) {
            return bad("--dedup_window_s must be 1..=2592000 (30 days)".into());
        }
        if self.node_id == 0 {
            return bad("--node_id must be at least 1".into());
        }
        if self.disk_reserve_mb.is_some_and(|b| b > 1_048_576) {
            return bad("--disk_reserve_mb must be at most 1048576 (1 TiB)".into());
        }
        if self.ballast_mb.is_some_and(|b| b > 1_048_576) {
            return bad("--ballast_mb must be at most 1048576 (1 TiB)".into());
        }
        if !(4..=65_536).contains(&self.memtable_mb)
            || !(1..=1_048_576).contains(&self.block_cache_mb)
        {
            return bad("--memtable_mb must be 4..=65536 and --block_cache_mb 1..=1048576".into());
        }
        match self.raft_addr.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0) => {}
            _ => {
                return bad(format!(
                    "--raft_addr must be host:port, got {:?}",
                    self.raft_addr
                ))
            }
        }
        if self.heartbeat_ms == 0 || self.election_min_ms <= self.heartbeat_ms {
            return bad("--election_min_ms must exceed --heartbeat_ms (> 0)".into());
        }
        if self.election_max_ms <= self.election_min_ms {
            return bad("--election_max_ms must exceed --election_min_ms".into());
        }
        if self.max_http_connections == 0 {
            return bad("--max_http_connections must be positive".into());
        }
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return bad("--max_key_bytes and --max_value_bytes must be positive".into());
        }
        if self.snapshot_logs == 0 {
            return bad("--snapshot_logs must be positive".into());
        }
        if !(1.0..=10.0).contains(&self.lease_drift_margin) {
            return bad("--lease_drift_margin must be between 1.0 and 10.0".into());
        }
        Ok(())
    }

    /// The openraft configuration derived from the flags.
    pub fn raft_config(&self) -> Result<openraft::Config> {
        let c = openraft::Config {
            cluster_name: format!("unikv-shard-{}", self.shard_id),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            max_in_snapshot_log_to_keep: self.keep_logs,
            install_snapshot_timeout: 10_000,
            // A restarted or partitioned node asks before campaigning, so it cannot force a
            // healthy leader through needless elections.
            enable_pre_vote: Some(true),
            // A leader that restarts must not resume leadership without an election: its own
            // log may lack the tail of its term that the followers had already made durable and
            // committed (the leader's fsync completes after theirs), which a power cut drops;
            // resumed, it served reads without those writes (docs/reliability.md).
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        c.validate().map_err(|e| Error::Config(e.to_string()))
    }
}

/// Resolves `host:port` the one way the cluster does (`unikv_gossip::resolve_addr`: IPv4
/// preferred, `localhost` is 127.0.0.1), as a configuration error of this node.
pub async fn resolve(addr: &str) -> Result<std::net::SocketAddr> {
    unikv_gossip::resolve_addr(addr)
        .await
        .map_err(|e| Error::Config(format!("{addr} does not resolve: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("unikv-node").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn seed_flags_parse_in_both_spellings() {
        let a = parse(&[
            "--shard_id",
            "1",
            "--node_id",
            "2",
            "--port",
            "8012",
            "--raft_addr",
            "localhost:18012",
            "--peer_shards",
            "localhost:8021,localhost:8031",
        ]);
        let b = parse(&[
            "--shard-id",
            "1",
            "--node-id",
            "2",
            "--port",
            "8012",
            "--raft-addr",
            "localhost:18012",
            "--peer-shards",
            "localhost:8021,localhost:8031",
        ]);
        for c in [a, b] {
            c.validate().unwrap();
            assert_eq!(c.shard(), ShardId(1));
            assert_eq!(c.node(), NodeId(2));
            assert_eq!(c.http_addr(), "localhost:8012");
            assert_eq!(c.initial_shards(), 3);
            assert!(!c.bootstrap());
            assert_eq!(c.data_dir(), PathBuf::from("data/unikv_1_2"));
        }
    }

    #[test]
    fn http_binds_loopback_unless_told_otherwise() {
        let mut c = parse(&MINIMAL);
        assert_eq!(c.http_host, "127.0.0.1");
        assert!(!c.http_exposed());
        for (host, exposed) in [
            ("localhost", false),
            ("::1", false),
            ("0.0.0.0", true),
            ("10.1.2.3", true),
        ] {
            c.http_host = host.into();
            assert_eq!(c.http_exposed(), exposed, "{host}");
        }
    }

    /// The fewest flags a node starts with.
    const MINIMAL: [&str; 8] = [
        "--shard_id",
        "1",
        "--node_id",
        "1",
        "--port",
        "1",
        "--raft_addr",
        "x:1",
    ];

    #[test]
    fn validate_rejects_nonsense() {
        let mut c = parse(&MINIMAL);
        assert!(c.validate().is_ok());
        assert!(c.bootstrap());
        c.raft_addr = "nohost".into();
        assert!(c.validate().is_err());
        c.raft_addr = "x:1".into();
        c.election_max_ms = c.election_min_ms;
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_repeated_flag_takes_its_last_value() {
        assert_eq!(parse(&MINIMAL).worker_threads, 0);
        let mut args = MINIMAL.to_vec();
        args.extend(["--worker_threads", "1", "--worker_threads", "4"]);
        assert_eq!(parse(&args).worker_threads, 4);
    }
}
