//! Real gossip over UDP on 127.0.0.1 between several members in one process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use unikv_gossip::{ClusterView, Gossip, GossipConfig, MemberKind, NodeState};
use unikv_types::{Epoch, NodeId, Role, ShardId, ShardState, SlotRange, SLOT_COUNT};

/// Starts a member on a free port of 127.0.0.1.
async fn start(cluster: &str, name: &str, kind: MemberKind, seeds: &[&Gossip]) -> Gossip {
    let any = "127.0.0.1:0".parse().unwrap();
    let mut config = GossipConfig::new(
        name,
        kind,
        any,
        any,
        seeds.iter().map(|g| g.local_addr().to_string()).collect(),
    );
    config.cluster = cluster.to_string();
    Gossip::start(config).await.expect("start gossip")
}

/// Waits until `pred` holds for the member's view, following its watch channel; panics after
/// `limit` with the last view. Returns the view and how long it took.
async fn wait_for(
    g: &Gossip,
    what: &str,
    limit: Duration,
    pred: impl Fn(&ClusterView) -> bool,
) -> (Arc<ClusterView>, Duration) {
    let started = Instant::now();
    let mut rx = g.watch();
    loop {
        let view = rx.borrow_and_update().clone();
        if pred(&view) {
            return (view, started.elapsed());
        }
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            panic!(
                "{}: timed out after {limit:?} waiting for {what}; view: {view:#?}",
                g.name()
            );
        }
        // A change, or a periodic re-check in case the condition depends on nothing new.
        let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), rx.changed()).await;
    }
}

fn node_state(shard: u64, node: u64, slots: Vec<(SlotRange, Epoch)>) -> NodeState {
    NodeState {
        shard: ShardId(shard),
        node: NodeId(node),
        role: Role::Leader,
        leader: Some(NodeId(node)),
        term: 1,
        http: format!("127.0.0.1:{}", 18000 + shard * 10 + node),
        raft: format!("127.0.0.1:{}", 19000 + shard * 10 + node),
        state: ShardState::Active,
        descriptor_version: 1,
        initialised: true,
        initial_shards: None,
        keys: 0,
        bytes: 0,
        chunks: 0,
        tags: Vec::new(),
        catalog_version: 0,
        slots,
    }
}

fn member_live(v: &ClusterView, name: &str) -> Option<bool> {
    v.member(name).map(|m| m.live)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_converge_follow_updates_and_detect_departures() {
    let cluster = "converge";
    let n1 = start(cluster, "node-1-1", MemberKind::Node, &[]).await;
    let n2 = start(cluster, "node-2-1", MemberKind::Node, &[&n1]).await;
    // The router knows only one seed.
    let router = start(cluster, "router-1", MemberKind::Router, &[&n1]).await;
    assert_ne!(n1.local_addr().port(), 0);
    assert_eq!(n1.advertise_addr(), n1.local_addr());

    let s1 = node_state(1, 1, vec![(SlotRange(0, 8191), Epoch(1))]);
    let s2 = node_state(2, 1, vec![(SlotRange(8192, 16383), Epoch(1))]);
    n1.publish(&s1).await;
    n2.publish(&s2).await;
    // A node sees its own state at once.
    assert_eq!(
        n1.view().member("node-1-1").unwrap().node.as_ref(),
        Some(&s1)
    );

    let (view, took) = wait_for(&router, "both shards", Duration::from_secs(10), |v| {
        v.shard(ShardId(1)).is_some_and(|s| s.slots == s1.slots)
            && v.shard(ShardId(2)).is_some_and(|s| s.slots == s2.slots)
            && v.members.iter().all(|m| m.live)
            && v.members.len() == 3
    })
    .await;
    eprintln!("router converged in {took:?}");
    let table = view.slot_table();
    assert!(table.iter().all(Option::is_some));
    assert_eq!(view.owner_of(0), Some((ShardId(1), Epoch(1))));
    assert_eq!(view.owner_of(SLOT_COUNT - 1), Some((ShardId(2), Epoch(1))));
    assert_eq!(view.topology_version(), 2);
    let shard1 = view.shard(ShardId(1)).unwrap();
    assert_eq!(shard1.state, ShardState::Active);
    assert_eq!(shard1.leader.as_ref().unwrap().http, s1.http);
    assert_eq!(view.member("router-1").unwrap().kind, MemberKind::Router);
    assert!(view.member("router-1").unwrap().node.is_none());
    assert_eq!(
        view.member("node-2-1").unwrap().gossip_addr,
        n2.advertise_addr()
    );
    // The nodes see each other (and the router) too.
    wait_for(&n2, "shard 1 at node 2", Duration::from_secs(10), |v| {
        v.shard(ShardId(1)).is_some() && member_live(v, "router-1") == Some(true)
    })
    .await;

    // A new term and leader reaches the router.
    let revision_before = router.view().revision;
    let mut s2b = s2.clone();
    s2b.role = Role::Follower;
    s2b.leader = Some(NodeId(3));
    s2b.term = 4;
    n2.publish(&s2b).await;
    // Publishing the same state again changes nothing.
    n2.publish(&s2b).await;
    let (view, took) = wait_for(&router, "term 4 in shard 2", Duration::from_secs(10), |v| {
        v.shard(ShardId(2)).is_some_and(|s| s.term == 4)
    })
    .await;
    eprintln!("term change seen in {took:?}");
    assert!(view.revision > revision_before);
    // Node 3's own state is unknown, so there is no address to give for the leader.
    assert_eq!(view.shard(ShardId(2)).unwrap().leader, None);

    // A graceful shutdown is reported at once (the member announces it).
    let started = Instant::now();
    n1.shutdown().await;
    let stop_took = started.elapsed();
    assert!(stop_took < Duration::from_millis(1500), "{stop_took:?}");
    n1.shutdown().await; // idempotent
    let (view, took) = wait_for(&router, "node-1-1 gone", Duration::from_secs(15), |v| {
        member_live(v, "node-1-1") == Some(false)
            && v.shard(ShardId(1))
                .is_some_and(|s| s.state == ShardState::Unreachable)
    })
    .await;
    eprintln!("graceful leave took {stop_took:?}, seen by the router after {took:?}");
    // Its slots stay known, so a router can name the unreachable shard.
    assert_eq!(view.owner_of(5), Some((ShardId(1), Epoch(1))));
    assert!(!view.shard(ShardId(1)).unwrap().members[0].live);

    // A crash (no announcement) is found by the failure detector.
    n2.abort();
    let (view, took) = wait_for(&router, "node-2-1 dead", Duration::from_secs(15), |v| {
        member_live(v, "node-2-1") == Some(false)
            && v.shard(ShardId(2))
                .is_some_and(|s| s.state == ShardState::Unreachable)
    })
    .await;
    eprintln!("crash detected after {took:?}");
    // Failure detection is not trigger-happy (a short stall must not mark a member dead).
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert_eq!(view.owner_of(SLOT_COUNT - 1), Some((ShardId(2), Epoch(1))));
    assert_eq!(member_live(&view, "router-1"), Some(true));
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_member_replaces_its_previous_incarnation() {
    let cluster = "restart";
    let router = start(cluster, "router-1", MemberKind::Router, &[]).await;
    let n1 = start(cluster, "node-1-1", MemberKind::Node, &[&router]).await;
    let s1 = node_state(1, 1, vec![(SlotRange(0, 99), Epoch(1))]);
    n1.publish(&s1).await;
    wait_for(&router, "node 1", Duration::from_secs(10), |v| {
        v.shard(ShardId(1)).is_some_and(|s| s.slots == s1.slots)
    })
    .await;
    n1.abort();
    // The same name comes back on another port with a newer state.
    let n1b = start(cluster, "node-1-1", MemberKind::Node, &[&router]).await;
    let mut s1b = s1.clone();
    s1b.term = 2;
    s1b.descriptor_version = 2;
    s1b.slots = vec![(SlotRange(0, 199), Epoch(2))];
    n1b.publish(&s1b).await;
    let (view, _) = wait_for(&router, "restarted node 1", Duration::from_secs(10), |v| {
        v.member("node-1-1")
            .is_some_and(|m| m.live && m.gossip_addr == n1b.advertise_addr())
            && v.shard(ShardId(1)).is_some_and(|s| s.slots == s1b.slots)
    })
    .await;
    assert_eq!(
        view.members.iter().filter(|m| m.name == "node-1-1").count(),
        1
    );
    n1b.shutdown().await;
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worst_case_slot_table_travels_and_other_clusters_are_ignored() {
    let n1 = start("big", "node-1-1", MemberKind::Node, &[]).await;
    let router = start("big", "router-1", MemberKind::Router, &[&n1]).await;
    let stranger = start("another-cluster", "router-x", MemberKind::Router, &[&n1]).await;
    // Every other slot, alternating epochs: the value is chunked across several keys.
    let slots: Vec<_> = (0..SLOT_COUNT)
        .step_by(2)
        .map(|s| (SlotRange(s, s), Epoch(if s % 4 == 0 { 7 } else { 9 })))
        .collect();
    let mut state = node_state(1, 1, slots);
    n1.publish(&state).await;
    let (view, _) = wait_for(&router, "worst-case slots", Duration::from_secs(15), |v| {
        v.shard(ShardId(1)).is_some_and(|s| s.slots == state.slots)
    })
    .await;
    assert_eq!(view.owner_of(2), Some((ShardId(1), Epoch(9))));
    assert_eq!(view.owner_of(3), None);

    // Back to a short value: the chunks are replaced by a single key.
    state.slots = vec![(SlotRange(0, 16383), Epoch(10))];
    state.descriptor_version = 2;
    n1.publish(&state).await;
    wait_for(&router, "compact slots", Duration::from_secs(15), |v| {
        v.shard(ShardId(1)).is_some_and(|s| s.slots == state.slots)
    })
    .await;

    // The member of another cluster had every chance to join and did not.
    let foreign = stranger.view();
    assert_eq!(foreign.members.len(), 1, "{foreign:#?}");
    assert!(router.view().member("router-x").is_none());
    assert!(n1.view().member("router-x").is_none());
    stranger.shutdown().await;
    router.shutdown().await;
    n1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_from_the_network_is_ignored() {
    let router = start("garbage", "router-1", MemberKind::Router, &[]).await;

    // Raw UDP junk at the gossip port.
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for payload in [
        &b""[..],
        b"\x00",
        b"\xff\xff\xff\xff",
        b"hello world",
        &[7u8; 2000],
    ] {
        junk.send_to(payload, router.local_addr()).await.unwrap();
    }

    // A chitchat member of the same cluster publishing nonsense values.
    let addr: std::net::SocketAddr = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let id = chitchat::ChitchatId::new("node-9-9", 1, addr);
    let config = chitchat::ChitchatConfig {
        chitchat_id: id,
        cluster_id: "garbage".into(),
        gossip_interval: Duration::from_millis(100),
        listen_addr: addr,
        seed_nodes: vec![router.local_addr().to_string()],
        failure_detector_config: Default::default(),
        marked_for_deletion_grace_period: Duration::from_secs(60),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V0,
    };
    let bad_keys = vec![
        ("kind".to_string(), "node".to_string()),
        ("shard".to_string(), "nine".to_string()),
        ("node".to_string(), "9".to_string()),
        ("slots".to_string(), "0-99999@1".to_string()),
        ("term".to_string(), "-3".to_string()),
    ];
    let rogue = chitchat::spawn_chitchat(config, bad_keys, &chitchat::transport::UdpTransport)
        .await
        .unwrap();
    let alien_addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let alien_config = chitchat::ChitchatConfig {
        chitchat_id: chitchat::ChitchatId::new("alien", 1, alien_addr),
        cluster_id: "garbage".into(),
        gossip_interval: Duration::from_millis(100),
        listen_addr: alien_addr,
        seed_nodes: vec![router.local_addr().to_string()],
        failure_detector_config: Default::default(),
        marked_for_deletion_grace_period: Duration::from_secs(60),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V0,
    };
    let alien = chitchat::spawn_chitchat(
        alien_config,
        vec![("kind".to_string(), "martian".to_string())],
        &chitchat::transport::UdpTransport,
    )
    .await
    .unwrap();

    // A proper node joins too, and is seen normally.
    let n1 = start("garbage", "node-1-1", MemberKind::Node, &[&router]).await;
    let s1 = node_state(1, 1, vec![(SlotRange(0, 10), Epoch(1))]);
    n1.publish(&s1).await;
    let (view, _) = wait_for(
        &router,
        "rogue and good node",
        Duration::from_secs(10),
        |v| v.member("node-9-9").is_some() && v.shard(ShardId(1)).is_some(),
    )
    .await;
    // The rogue is a member without a usable node state; it creates no shard.
    assert!(view.member("node-9-9").unwrap().node.is_none());
    assert_eq!(view.shards.len(), 1);
    // Members of an unknown kind are left out.
    assert!(view.member("alien").is_none());
    // And the router is still working: a fresh update arrives.
    let mut s1b = s1.clone();
    s1b.term = 5;
    n1.publish(&s1b).await;
    wait_for(&router, "term 5", Duration::from_secs(10), |v| {
        v.shard(ShardId(1)).is_some_and(|s| s.term == 5)
    })
    .await;
    rogue.shutdown().await.unwrap();
    alien.shutdown().await.unwrap();
    n1.shutdown().await;
    router.shutdown().await;
}

#[tokio::test]
async fn binding_a_busy_port_fails_with_bind_error() {
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let config = GossipConfig::new("node-1-1", MemberKind::Node, addr, addr, vec![]);
    match Gossip::start(config).await {
        Err(unikv_gossip::Error::Bind(msg)) => assert!(msg.contains(&addr.to_string()), "{msg}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("bound a busy port"),
    }
    // Unresolvable seeds are skipped, not fatal.
    let any = "127.0.0.1:0".parse().unwrap();
    let config = GossipConfig::new(
        "router-1",
        MemberKind::Router,
        any,
        any,
        vec!["no-such-host.invalid:1".into(), "garbage".into()],
    );
    let g = Gossip::start(config).await.unwrap();
    assert_eq!(g.view().members.len(), 1);
    assert!(g.view().members[0].live);
    g.shutdown().await;
}
