//! Safe defaults and admin auth, on real processes:
//! - a node started without `--http_host` serves its HTTP API on loopback only: this
//!   machine's other address refuses the connection;
//! - a node told to listen beyond loopback without an admin token refuses to start, saying why;
//! - with `--admin_token_file`, it serves other machines, and calls that change the cluster
//!   need `Authorization: Bearer <token>` from everyone (401 without, 403 with another), while
//!   data calls stay open;
//! - with `--data_token_file`, data calls need the data token (or the admin token);
//! - requests a web page could forge (cross-site `Origin` or `Sec-Fetch-Site`, a `Host` of
//!   another name) are refused by nodes and the router.

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use unikv_tests::{node_bin, Cluster};

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

const TOKEN: &str = "s3cret-admin-token-for-tests";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_listens_on_loopback_unless_told_otherwise() {
    let ip = non_loopback_ip().expect("this test needs an address besides loopback");
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
}

#[test]
fn a_node_exposed_without_an_admin_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = unikv_tests::alloc_port();
    let out = std::process::Command::new(node_bin())
        .args([
            "--shard_id",
            "1",
            "--node_id",
            "1",
            "--http_host",
            "0.0.0.0",
        ])
        .args(["--port", &port.to_string()])
        .args([
            "--raft_addr",
            &format!("127.0.0.1:{}", unikv_tests::alloc_port()),
        ])
        .arg("--data_dir")
        .arg(dir.path().join("d"))
        .arg("--tls_dir")
        .arg(dir.path().join("tls"))
        .env_remove("UNIKV_ADMIN_TOKEN")
        .output()
        .expect("run unikv-node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains("without an admin token") && stderr.contains("--admin_token_file"),
        "says why: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_other_machines_get_in_and_admin_calls_need_it() {
    let ip = non_loopback_ip().expect("this test needs an address besides loopback");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_path = token_file.to_str().unwrap().to_owned();
    let c = Cluster::start_with(&[
        ("--http_host", "0.0.0.0"),
        ("--admin_token_file", &token_path),
    ])
    .await;
    let leader = c.leader().await;
    let port = port_of(&c.http_addr(leader));
    assert!(
        reachable(ip, port),
        "--http_host 0.0.0.0 serves {ip}:{port}"
    );

    let http = reqwest::Client::new();
    let tags = |host: String, auth: Option<&str>| {
        let mut r = http.post(format!("http://{host}:{port}/shard/tags?shardID=1&zone=a"));
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send()
    };
    let loopback = "127.0.0.1".to_string();
    for host in [ip.to_string(), loopback.clone()] {
        let r = tags(host.clone(), None).await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "no token from {host}");
        assert_eq!(
            r.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer")
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized", "{body}");
        let r = tags(host.clone(), Some("Bearer not-the-token-at-all"))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "wrong token from {host}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "forbidden", "{body}");
    }
    let r = tags(ip.to_string(), Some(&format!("Bearer {TOKEN}")))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    // Membership changes are guarded too; data calls and status are not.
    let r = http
        .post(format!("http://{ip}:{port}/raft/leave?nodeid=3"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .post(format!("http://{ip}:{port}/put?key=k&val=v"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .get(format!("http://{ip}:{port}/raft/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_data_token_data_calls_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_file = dir.path().join("data.token");
    std::fs::write(&data_file, "data-token-for-the-tests\n").unwrap();
    let c = Cluster::start_with(&[("--data_token_file", data_file.to_str().unwrap())]).await;
    let leader = c.leader().await;
    let base = format!("http://{}", c.http_addr(leader));
    let http = reqwest::Client::new();
    let put = |auth: Option<&'static str>| {
        let mut r = http.post(format!("{base}/put?key=k&val=v"));
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send()
    };
    let r = put(None).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized", "{body}");
    let r = put(Some("Bearer some-other-token-entirely")).await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = put(Some("Bearer data-token-for-the-tests")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let r = http
        .get(format!("{base}/get?key=k"))
        .bearer_auth("data-token-for-the-tests")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["value"], "v", "{body}");
    let r = http.get(format!("{base}/get?key=k")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "reads too");
    // Status stays open for probes.
    let r = http
        .get(format!("{base}/raft/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// A web page can make a browser send the seed's state-changing GETs (`/put?`, `/addshard?`)
/// to a local cluster, or rebind a domain of its own to 127.0.0.1: such requests carry a
/// cross-site `Origin` / `Sec-Fetch-Site`, or a `Host` that is not the server's, and are
/// refused by nodes and the router alike; what curl sends still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_web_page_could_forge_are_refused() {
    use unikv_tests::{node_ref, Unified, ROUTER};
    let u = Unified::start().await;
    let api = u.api();
    let http = reqwest::Client::new();
    let router = api.http_addr(ROUTER).to_string();
    let node = api.http_addr(node_ref(1, 1)).to_string();
    let calls = [
        (router.clone(), "/put?key=forged&val=x"),
        (node.clone(), "/put?key=forged&val=x"),
        (node.clone(), "/addshard?shardID=4&shardAddress=localhost:9"),
    ];
    for (addr, path) in &calls {
        let url = format!("http://{addr}{path}");
        let forged = [
            (
                "origin",
                "https://evil.example".to_string(),
                "cross_site_request",
            ),
            (
                "sec-fetch-site",
                "cross-site".to_string(),
                "cross_site_request",
            ),
            (
                "host",
                format!("rebind.evil.example:{}", port_of(addr)),
                "unknown_host",
            ),
        ];
        for (header, value, code) in forged {
            let r = http.get(&url).header(header, &value).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 403, "{url} with {header}: {value}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["code"], code, "{url} with {header}: {body}");
        }
    }
    let r = http
        .get(format!("http://{router}/get?key=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "nothing was written");
    // curl's requests, and a page of the server itself (same origin), go through.
    let r = http
        .get(format!("http://{router}/put?key=fine&val=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .get(format!("http://{router}/get?key=fine"))
        .header("host", format!("localhost:{}", port_of(&router)))
        .header("origin", format!("http://localhost:{}", port_of(&router)))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
}
