//! Issued certificates over real QUIC on 127.0.0.1: what each role may send, who may serve,
//! another CA refused with a clear error (and not redialed in a loop), and the CA key kept out
//! of every process's directory.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::pki::{CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE};
use crate::secrets::GOSSIP_KEY_FILE;
use crate::tests::{localhost, ping, start, Pong, ECHO, NODES_ONLY};
use crate::{issue_certificates, ClusterTls, Error, Identity, Transport};

const SHORT: Duration = Duration::from_secs(2);

fn issue(ca: &Path, out: &Path, identity: &Identity) -> ClusterTls {
    issue_certificates(ca, out, identity).expect("certs");
    ClusterTls::load(out, identity).expect("load issued certificates")
}

fn node(shard: u64, node: u64) -> Identity {
    Identity::node(shard, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_sends_only_what_it_may_and_only_nodes_serve() {
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("ca");
    let server_tls = issue(&ca, &root.path().join("n11"), &node(1, 1));
    let peer_tls = issue(&ca, &root.path().join("n12"), &node(1, 2));
    let router_id = Identity::router("router").unwrap();
    let router_tls = issue(&ca, &root.path().join("router"), &router_id);
    assert!(!server_tls.is_development());
    let server = start(&server_tls, localhost());
    let addr = server.addr.to_string();

    let router = Transport::client(&router_tls).unwrap();
    let pong: Pong = router.call(&addr, ECHO, &ping(1), SHORT).await.unwrap();
    assert_eq!(pong.n, 2);
    let refused = router
        .call::<_, Pong>(&addr, NODES_ONLY, &ping(1), SHORT)
        .await;
    assert!(matches!(refused, Err(Error::Refused(_))), "{refused:?}");
    let text = refused.unwrap_err().to_string();
    assert!(text.contains("certificate role may not send"), "{text}");
    // The connection survives a refused stream: the router's next allowed call works.
    let pong: Pong = router.call(&addr, ECHO, &ping(3), SHORT).await.unwrap();
    assert_eq!(pong.n, 4);

    let peer = Transport::client(&peer_tls).unwrap();
    let pong: Pong = peer.call(&addr, NODES_ONLY, &ping(5), SHORT).await.unwrap();
    assert_eq!(pong.n, 6);

    // A router's certificate cannot serve: a node dialing it refuses the handshake.
    let fake = start(&router_tls, localhost());
    let e = peer
        .call::<_, Pong>(&fake.addr.to_string(), ECHO, &ping(1), SHORT)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Tls(m) if m.contains("not a unikv node")),
        "{e}"
    );

    for t in [router, peer] {
        t.close().await;
    }
    fake.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_ca_is_refused_clearly_and_not_redialed_in_a_loop() {
    let root = tempfile::tempdir().unwrap();
    let server = start(
        &issue(
            &root.path().join("ca"),
            &root.path().join("n11"),
            &node(1, 1),
        ),
        localhost(),
    );
    let addr = server.addr.to_string();
    let other = issue(
        &root.path().join("other-ca"),
        &root.path().join("other"),
        &node(1, 2),
    );
    let stranger = Transport::client(&other).unwrap();
    let e = stranger
        .call::<_, Pong>(&addr, ECHO, &ping(1), SHORT)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::Tls(_)), "{text}");
    assert!(
        text.contains("from another cluster CA") && text.contains("unikv-node certs"),
        "{text}"
    );
    // Callers that keep asking get the refusal at once; no handshake per call.
    for _ in 0..50 {
        let e = stranger
            .call::<_, Pong>(&addr, ECHO, &ping(1), SHORT)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Tls(_)), "{e}");
    }
    let handshakes = stranger.inner.endpoint.stats().outgoing_handshakes;
    assert!(handshakes <= 2, "{handshakes} handshakes for 51 calls");
    stranger.close().await;
    server.shutdown().await;
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn certs_keep_the_ca_key_out_of_every_process_directory() {
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("ca");
    let out = root.path().join("n12");
    let issued = issue_certificates(&ca, &out, &node(1, 2)).unwrap();
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [CA_FILE, CERT_FILE, GOSSIP_KEY_FILE, KEY_FILE]);
    assert_eq!(issued.files.len(), 4);
    let ca_pem = fs::read_to_string(out.join(CA_FILE)).unwrap();
    assert!(!ca_pem.contains("PRIVATE KEY"), "{ca_pem}");
    assert_eq!(
        fs::read(ca.join(GOSSIP_KEY_FILE)).unwrap(),
        fs::read(out.join(GOSSIP_KEY_FILE)).unwrap()
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&ca), 0o700);
        assert_eq!(mode(&ca.join(CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&out), 0o700);
        for f in [KEY_FILE, GOSSIP_KEY_FILE] {
            assert_eq!(mode(&out.join(f)), 0o600, "{f}");
        }
    }

    // The CA's own directory is no process's directory.
    let e = issue_certificates(&ca, &ca, &node(1, 3))
        .unwrap_err()
        .to_string();
    assert!(e.contains("must not hold the CA key"), "{e}");

    // With the CA directory gone entirely, the process still loads what it was given.
    fs::remove_dir_all(&ca).unwrap();
    let tls = ClusterTls::load(&out, &node(1, 2)).unwrap();
    assert_eq!(tls.identity(), &node(1, 2));
    assert_eq!(crate::load_or_create_gossip_key(&out).unwrap().len(), 32);

    // Another node's certificate, or a router's, is not this node's.
    let e = ClusterTls::load(&out, &node(1, 3)).unwrap_err().to_string();
    assert!(e.contains("not a certificate for node 1/3"), "{e}");
    let router_dir = root.path().join("router");
    issue_certificates(
        &root.path().join("ca2"),
        &router_dir,
        &Identity::router("r").unwrap(),
    )
    .unwrap();
    let e = ClusterTls::load(&router_dir, &node(1, 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("it is a router's"), "{e}");

    // A ca.pem that carries the CA's key is refused in a process's directory.
    let dev = root.path().join("dev");
    ClusterTls::development(&dev, &node(1, 1)).unwrap();
    fs::copy(dev.join(CA_FILE), out.join(CA_FILE)).unwrap();
    let e = ClusterTls::load(&out, &node(1, 2)).unwrap_err().to_string();
    assert!(e.contains("holds the CA's private key"), "{e}");

    // Without its gossip key, a certificate directory does not make up a new one.
    fs::remove_file(out.join(GOSSIP_KEY_FILE)).unwrap();
    let e = crate::load_or_create_gossip_key(&out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("copy it from the CA directory"), "{e}");
}

#[test]
fn the_development_ca_stays_on_loopback() {
    let root = tempfile::tempdir().unwrap();
    let dev = ClusterTls::load(root.path(), &node(1, 1)).unwrap();
    assert!(dev.is_development());
    let local = ["127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()];
    dev.check_exposure("node", &local).unwrap();
    let e = dev
        .check_exposure("node", &["10.1.2.3:4".parse().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("10.1.2.3:4") && e.contains("unikv-node certs"),
        "{e}"
    );
    let issued = issue(&root.path().join("ca"), &root.path().join("n"), &node(1, 1));
    issued
        .check_exposure("node", &["10.1.2.3:4".parse().unwrap()])
        .unwrap();
}
