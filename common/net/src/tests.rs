//! End-to-end tests over real QUIC on 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::pki::CA_FILE;
use crate::tls::Material;
use crate::{
    read_frame, write_frame, CertRole, ClusterTls, Error, Handler, Identity, Incoming, Transport,
};

pub(crate) const ECHO: u8 = 1;
const SLOW: u8 = 2;
const FRAMES: u8 = 3;
const HUGE_FRAME: u8 = 4;
/// Answered like [`ECHO`], but only to nodes.
pub(crate) const NODES_ONLY: u8 = 5;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ping {
    pub(crate) n: u64,
    text: String,
    data: Vec<u8>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pong {
    pub(crate) n: u64,
    text: String,
    len: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Chunk {
    index: u32,
    bytes: Vec<u8>,
}

pub(crate) struct TestHandler;

impl Handler for TestHandler {
    fn permits(&self, kind: u8, role: CertRole) -> bool {
        kind != NODES_ONLY || role == CertRole::Node
    }

    async fn handle(&self, kind: u8, mut incoming: Incoming) {
        match kind {
            ECHO | SLOW | NODES_ONLY => {
                let ping: Ping = match incoming.read().await {
                    Ok(ping) => ping,
                    Err(e) => panic!("bad request: {e}"),
                };
                if kind == SLOW {
                    tokio::time::sleep(Duration::from_millis(ping.n)).await;
                }
                let pong = Pong {
                    n: ping.n + 1,
                    text: ping.text,
                    len: ping.data.len(),
                };
                incoming.reply(&pong).await.expect("reply");
            }
            FRAMES => {
                let mut count = 0u32;
                let mut total = 0usize;
                while let Some(chunk) = read_frame::<Option<Chunk>>(&mut incoming.recv)
                    .await
                    .expect("frame")
                {
                    assert_eq!(chunk.index, count);
                    count += 1;
                    total += chunk.bytes.len();
                }
                write_frame(&mut incoming.send, &(count, total))
                    .await
                    .expect("write frame");
                incoming.send.finish().expect("finish");
            }
            HUGE_FRAME => {
                // A header announcing more than MAX_MESSAGE bytes.
                incoming
                    .send
                    .write_all(&u32::MAX.to_be_bytes())
                    .await
                    .expect("write header");
                incoming.send.finish().expect("finish");
            }
            _ => {}
        }
    }
}

pub(crate) struct Server {
    pub(crate) transport: Transport,
    pub(crate) addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task.await.expect("serve task");
        self.transport.close().await;
    }
}

/// Local development TLS: "node-N" is node N of shard 1, any other name a router.
fn tls(dir: &Path, name: &str) -> ClusterTls {
    ClusterTls::development(dir, &identity(name)).expect("cluster tls")
}

fn identity(name: &str) -> Identity {
    match name.strip_prefix("node-") {
        Some(n) => Identity::node(1, n.parse().expect("node id")),
        None => Identity::router(name).expect("router name"),
    }
}

pub(crate) fn start(tls: &ClusterTls, addr: SocketAddr) -> Server {
    let transport = Transport::bind(addr, tls).expect("bind");
    let addr = transport.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = transport.clone();
    let task = tokio::spawn(async move {
        serving
            .serve(Arc::new(TestHandler), async {
                let _ = stopped.await;
            })
            .await;
    });
    Server {
        transport,
        addr,
        stop,
        task,
    }
}

pub(crate) fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

pub(crate) fn ping(n: u64) -> Ping {
    Ping {
        n,
        text: format!("ping {n}"),
        data: vec![7; n as usize % 1000],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn call_round_trips_and_shares_one_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&tls(dir.path(), "node-1"), localhost());
    let client = Transport::bind(localhost(), &tls(dir.path(), "node-2")).expect("bind client");
    let addr = server.addr.to_string();

    let pong: Pong = client
        .call(&addr, ECHO, &ping(41), TIMEOUT)
        .await
        .expect("call");
    assert_eq!(
        pong,
        Pong {
            n: 42,
            text: "ping 41".into(),
            len: 41
        }
    );

    // "localhost" must resolve (to IPv4) and reach the same server.
    let by_name = format!("localhost:{}", server.addr.port());
    let pong: Pong = client
        .call(&by_name, ECHO, &ping(1), TIMEOUT)
        .await
        .expect("localhost");
    assert_eq!(pong.n, 2);

    // 200 concurrent calls on a fresh pool entry: one dial, all succeed.
    let fresh = Transport::client(&tls(dir.path(), "router")).expect("client");
    let calls = (0..200u64).map(|i| {
        let fresh = fresh.clone();
        let addr = addr.clone();
        tokio::spawn(async move {
            let kind = if i % 2 == 0 { ECHO } else { SLOW };
            let pong: Pong = fresh.call(&addr, kind, &ping(i), TIMEOUT).await?;
            Ok::<_, Error>((i, pong))
        })
    });
    let calls: Vec<_> = calls.collect();
    for call in calls {
        let (i, pong) = call.await.expect("task").expect("concurrent call");
        assert_eq!(pong.n, i + 1);
        assert_eq!(pong.text, format!("ping {i}"));
    }
    assert_eq!(fresh.inner.endpoint.stats().outgoing_handshakes, 1);

    fresh.close().await;
    client.close().await;
    server.shutdown().await;
}

#[test]
fn ca_is_created_once_under_a_race() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("certs");
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let dir = dir.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                ClusterTls::development(&dir, &Identity::node(1, i))
            })
        })
        .collect();
    let loaded: Vec<ClusterTls> = threads
        .into_iter()
        .map(|t| t.join().expect("thread").expect("load_or_create"))
        .collect();
    for tls in &loaded {
        assert_eq!(tls.ca_cert_der(), loaded[0].ca_cert_der());
    }
    // Leaves are fresh per process, and no temp files are left behind.
    assert_ne!(loaded[0].inner.leaf_cert, loaded[1].inner.leaf_cert);
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(entries, vec![CA_FILE]);

    // A later load reuses the same CA.
    let again = ClusterTls::development(&dir, &identity("late")).expect("reload");
    assert_eq!(again.ca_cert_der(), loaded[0].ca_cert_der());
}

#[test]
fn garbage_ca_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(CA_FILE), b"not a pem").expect("write");
    let err = ClusterTls::development(dir.path(), &identity("node")).expect_err("must fail");
    assert!(matches!(err, Error::Tls(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_ca_is_rejected() {
    let ours = tempfile::tempdir().expect("tempdir");
    let theirs = tempfile::tempdir().expect("tempdir");
    let server_tls = tls(ours.path(), "node-1");
    let server = start(&server_tls, localhost());
    let addr = server.addr.to_string();
    let short = Duration::from_secs(2);

    // Entirely foreign: neither side accepts the other.
    let stranger = Transport::client(&tls(theirs.path(), "stranger")).expect("client");
    let result = stranger.call::<_, Pong>(&addr, ECHO, &ping(1), short).await;
    assert!(
        matches!(result, Err(Error::Tls(_))),
        "foreign client got through: {result:?}"
    );

    // Trusts our CA but presents a leaf from another CA: only the server's client-certificate
    // check can refuse it, which is what makes the TLS mutual.
    let foreign = tls(theirs.path(), "impostor");
    let impostor = ClusterTls {
        inner: Arc::new(Material {
            roots: server_tls.inner.roots.clone(),
            leaf_cert: foreign.inner.leaf_cert.clone(),
            leaf_key: foreign.inner.leaf_key.clone(),
            identity: identity("impostor"),
            reset_seed: foreign.inner.reset_seed,
            development: true,
        }),
    };
    let impostor = Transport::client(&impostor).expect("client");
    let result = impostor.call::<_, Pong>(&addr, ECHO, &ping(1), short).await;
    assert!(
        matches!(result, Err(Error::Tls(_))),
        "impostor got through: {result:?}"
    );

    // A proper member still gets in.
    let member = Transport::client(&tls(ours.path(), "member")).expect("client");
    let pong: Pong = member
        .call(&addr, ECHO, &ping(1), short)
        .await
        .expect("member");
    assert_eq!(pong.n, 2);

    stranger.close().await;
    impostor.close().await;
    member.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer_is_unreachable_within_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Transport::client(&tls(dir.path(), "router")).expect("client");
    let port = std::net::UdpSocket::bind(localhost())
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();

    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = client
        .call::<_, Pong>(&format!("127.0.0.1:{port}"), ECHO, &ping(1), timeout)
        .await
        .expect_err("nobody listens");
    assert!(err.is_unreachable(), "{err}");
    assert!(started.elapsed() < timeout + Duration::from_millis(500));

    let err = client
        .call::<_, Pong>("no-such-host.invalid:1", ECHO, &ping(1), timeout)
        .await
        .expect_err("unresolvable");
    assert!(err.is_unreachable(), "{err}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&tls(dir.path(), "node-1"), localhost());
    let client = Transport::client(&tls(dir.path(), "router")).expect("client");
    let err = client
        .call::<_, Pong>(
            &server.addr.to_string(),
            SLOW,
            &ping(1_000),
            Duration::from_millis(200),
        )
        .await
        .expect_err("too slow");
    assert!(matches!(err, Error::Timeout { after_ms: 200, .. }), "{err}");
    client.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_server_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_tls = tls(dir.path(), "node-1");
    let server = start(&server_tls, localhost());
    let bound = server.addr;
    let addr = bound.to_string();
    let client = Transport::client(&tls(dir.path(), "router")).expect("client");
    let pong: Pong = client
        .call(&addr, ECHO, &ping(1), TIMEOUT)
        .await
        .expect("first");
    assert_eq!(pong.n, 2);

    server.shutdown().await;
    let server = start(&server_tls, bound);
    assert_eq!(server.addr, bound);

    let mut failures = 0;
    loop {
        match client
            .call::<_, Pong>(&addr, ECHO, &ping(5), Duration::from_secs(2))
            .await
        {
            Ok(pong) => {
                assert_eq!(pong.n, 6);
                break;
            }
            Err(e) => {
                failures += 1;
                assert!(failures < 2, "still failing after reconnect: {e}");
            }
        }
    }
    assert_eq!(client.inner.endpoint.stats().outgoing_handshakes, 2);
    client.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_round_trip_and_oversize_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&tls(dir.path(), "node-1"), localhost());
    let client = Transport::client(&tls(dir.path(), "router")).expect("client");
    let addr = server.addr.to_string();

    let (mut send, mut recv) = client.open(&addr, FRAMES, TIMEOUT).await.expect("open");
    let mut total = 0;
    for index in 0..20u32 {
        let bytes = vec![index as u8; 100_000 + index as usize];
        total += bytes.len();
        write_frame(&mut send, &Some(Chunk { index, bytes }))
            .await
            .expect("write frame");
    }
    write_frame(&mut send, &None::<Chunk>).await.expect("end");
    send.finish().expect("finish");
    let (count, received): (u32, usize) = read_frame(&mut recv).await.expect("summary");
    assert_eq!((count, received), (20, total));
    // The stream ends cleanly after the last frame.
    let end = read_frame::<(u32, usize)>(&mut recv).await;
    assert!(matches!(end, Err(Error::Stream(_))), "{end:?}");

    let (_send, mut recv) = client.open(&addr, HUGE_FRAME, TIMEOUT).await.expect("open");
    let err = read_frame::<Chunk>(&mut recv).await.expect_err("oversized");
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");

    client.close().await;
    server.shutdown().await;
}
