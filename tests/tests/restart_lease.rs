//! Regression test for the stale read the nemesis found with lease reads on
//! (docs/reliability.md): a follower restarted by kill -9 forgot the leader lease it had granted
//! and could vote at once, so a second leader could be elected while the first still served
//! reads from its lease.
//!
//! The scenario makes that race the only way forward: the leader L loses its link to follower B
//! (B stops hearing heartbeats, its lease on L expires and it campaigns); then follower A — whose
//! acknowledgements keep L's lease alive — is killed, L is isolated entirely and A restarts.
//! B can now only win with A's vote. A restarted node must withhold that vote for one lease
//! (`--election_max_ms`) after it starts, so a write through B is acknowledged no earlier than
//! that, and no read served by the isolated L after that write may return the old value.
//! Needs root and iptables (scripts/setup.sh installs it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::Mutex;
use unikv_tests::nemesis::firewall::{Cut, Firewall};
use unikv_tests::{Api, Cluster, WAIT};

/// The lease: the harness's `--election_max_ms`.
const LEASE: Duration = Duration::from_millis(1000);
const KEY: &str = "lease-key";

/// One read on the isolated old leader: when it was sent, when it returned, what it said
/// (`Some(value)` for a 200, `None` for any refusal or timeout).
struct Read {
    sent: Instant,
    value: Option<String>,
}

async fn get_quick(api: &Api, node: u64) -> Option<String> {
    api.value_within(node, KEY, Duration::from_millis(300))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_follower_cannot_elect_a_second_leader_inside_the_old_lease() {
    let c = Cluster::start_with(&[("--lease_reads", "true")]).await;
    let l = c.wait_converged(WAIT).await;
    let followers = c.followers(l);
    let (a, b) = (followers[0], followers[1]);
    c.put_ok(l, KEY, "old").await;
    assert_eq!(c.get_value(l, KEY).await.as_deref(), Some("old"));

    let fw = Firewall::new().expect("iptables chain (run as root; scripts/setup.sh)");
    fw.cut_link(&c.udp_ports(l), &c.udp_ports(b)).unwrap();
    // B's lease on L must run out before it campaigns; elapsed time is the condition itself,
    // there is nothing to poll. Twice the lease covers B's last heartbeat and its timer.
    tokio::time::sleep(2 * LEASE).await;
    assert_eq!(
        c.status(l).await.unwrap().role,
        "leader",
        "L keeps its quorum through A while cut from B"
    );

    // A is the only follower whose acknowledgements L's lease rests on.
    c.kill9(a);
    fw.isolate(&c.udp_ports(l), Cut::Both).unwrap();
    let a_spawned = Instant::now();

    // Reads on the isolated L, from now until well after its lease must have expired.
    let reads = Arc::new(Mutex::new(Vec::<Read>::new()));
    let reader = {
        let api = c.api();
        let reads = reads.clone();
        tokio::spawn(async move {
            while a_spawned.elapsed() < 4 * LEASE {
                let sent = Instant::now();
                let value = get_quick(&api, l).await;
                reads.lock().unwrap().push(Read { sent, value });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    c.restart(a).await;
    // The new value, written through B as soon as B leads with A's vote.
    let api = c.api();
    let acked = unikv_tests::wait_until(WAIT, "a write acknowledged through B", || async {
        let r = api
            .put_timeout(b, KEY, "new", Duration::from_millis(500))
            .await
            .ok()?;
        r.is_ok().then(Instant::now)
    })
    .await;
    reader.await.unwrap();

    let since_restart = acked - a_spawned;
    assert!(
        since_restart >= LEASE,
        "a second leader was elected {since_restart:?} after A restarted, inside the {LEASE:?} \
         lease L may still serve reads under"
    );
    let reads = std::mem::take(&mut *reads.lock().unwrap());
    let served: Vec<_> = reads.iter().filter(|r| r.value.is_some()).collect();
    for r in &served {
        assert!(
            r.sent < acked || r.value.as_deref() == Some("new"),
            "stale read: L answered {:?} {:?} after the write of \"new\" was acknowledged",
            r.value,
            r.sent - acked
        );
    }
    eprintln!(
        "[lease] write through B acked {since_restart:?} after A restarted; L served {} of {} reads, the last {:?} after A restarted",
        served.len(),
        reads.len(),
        served.last().map(|r| r.sent - a_spawned)
    );

    fw.heal().unwrap();
    c.wait_converged(WAIT).await;
    assert_eq!(c.get_value(l, KEY).await.as_deref(), Some("new"));
}
