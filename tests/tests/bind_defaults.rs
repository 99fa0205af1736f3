//! Safe defaults: a node started without `--http_host` serves its HTTP API (admin calls
//! included) on loopback only — this machine's other addresses refuse the connection — and
//! `--http_host 0.0.0.0` is what lets other machines in.

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use unikv_tests::Cluster;

/// This machine's address on its default route (no packet is sent), if it has one.
fn non_loopback_ip() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.255:1").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn port_of(http_addr: &str) -> u16 {
    http_addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("host:port")
}

fn reachable(ip: IpAddr, port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(2)).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_listens_on_loopback_unless_told_otherwise() {
    let Some(ip) = non_loopback_ip() else {
        panic!("this test needs an address besides loopback (a default route)");
    };
    let c = Cluster::start().await;
    let port = port_of(&c.http_addr(1));
    assert!(
        reachable("127.0.0.1".parse().unwrap(), port),
        "loopback serves"
    );
    assert!(
        !reachable(ip, port),
        "node 1's HTTP answered on {ip}:{port} without --http_host"
    );
    drop(c);

    let c = Cluster::start_with(&[("--http_host", "0.0.0.0")]).await;
    let port = port_of(&c.http_addr(1));
    assert!(
        reachable(ip, port),
        "--http_host 0.0.0.0 serves {ip}:{port}"
    );
}
