//! Admin auth seen from another machine: a network namespace this test creates, joined to
//! this one by a veth pair (10.213.N.1 here, 10.213.N.2 there), stands in for a remote host.
//! The node listens beyond loopback (`--http_host 0.0.0.0`, with an admin token and issued
//! certificates); from the namespace, every call that changes the cluster is 401 without a
//! token and 403 with another, and passes the check with the right one. The namespace is
//! removed when the test ends, failed or not.

use std::process::Command;

use unikv_tests::Cluster;

const TOKEN: &str = "netns-admin-token-for-the-tests";

/// A network namespace with one veth to this namespace, deleted on drop.
struct RemoteHost {
    name: String,
    here: String,
    there: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl RemoteHost {
    fn create() -> RemoteHost {
        let n = std::process::id() % 200 + 20;
        let name = format!("unikv-acc-{}", std::process::id());
        let (veth_here, veth_there) = (format!("uka{n}h"), format!("uka{n}t"));
        let host = RemoteHost {
            name: name.clone(),
            here: format!("10.213.{n}.1"),
            there: format!("10.213.{n}.2"),
        };
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), name.clone()],
            vec![
                "link".into(),
                "add".into(),
                veth_here.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                veth_there.clone(),
            ],
            vec![
                "link".into(),
                "set".into(),
                veth_there.clone(),
                "netns".into(),
                name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{}/24", host.here),
                "dev".into(),
                veth_here.clone(),
            ],
            vec!["link".into(), "set".into(), veth_here, "up".into()],
            vec![
                "-n".into(),
                name.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/24", host.there),
                "dev".into(),
                veth_there.clone(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                veth_there,
                "up".into(),
            ],
            vec![
                "-n".into(),
                name,
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            if let Err(e) = ip(&args) {
                drop(host);
                panic!("{e}");
            }
        }
        host
    }

    /// `curl` from inside the namespace: the HTTP status code.
    fn curl(&self, method: &str, url: &str, token: Option<&str>) -> u16 {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, "curl", "-s", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "-m", "10", "-X", method]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = cmd.arg(url).output().expect("ip netns exec curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for RemoteHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_from_another_host_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let c = Cluster::start_with(&[
        ("--http_host", "0.0.0.0"),
        ("--admin_token_file", token_file.to_str().unwrap()),
    ])
    .await;
    let remote = RemoteHost::create();
    let leader = c.leader().await;
    let port = c
        .http_addr(leader)
        .rsplit_once(':')
        .map(|(_, p)| p.to_owned())
        .unwrap();
    let base = format!("http://{}:{port}", remote.here);
    assert_eq!(
        remote.curl("GET", &format!("{base}/raft/status"), None),
        200,
        "the namespace reaches the node (status is open)"
    );
    let admin_calls = [
        ("GET", "/addshard?shardID=9&shardAddress=127.0.0.1:9"),
        ("GET", "/removeshard?shardID=9"),
        ("DELETE", "/shards/9"),
        ("GET", "/moveslot?slot=1&to=9"),
        ("POST", "/shard/tags?shardID=1&zone=a"),
        ("POST", "/raft/join?nodeid=9&addr=127.0.0.1:9"),
        ("POST", "/raft/leave?nodeid=9"),
        ("PUT", "/collections/netns"),
        ("PUT", "/collections/netns/shard_keys/acme"),
        ("DELETE", "/collections/netns/shard_keys/acme"),
        ("POST", "/collections/netns/sharding/promote_to_custom"),
        ("DELETE", "/collections/netns"),
    ];
    for (method, path) in admin_calls {
        let url = format!("{base}{path}");
        assert_eq!(remote.curl(method, &url, None), 401, "{method} {path}");
        assert_eq!(
            remote.curl(method, &url, Some("not-the-token-at-all")),
            403,
            "{method} {path} with another token"
        );
        let with = remote.curl(method, &url, Some(TOKEN));
        assert!(
            with != 401 && with != 403 && with != 0,
            "{method} {path} with the token: {with}"
        );
        println!("[figure] {method} {path} from another host: 401 / 403 / {with}");
    }
    assert_eq!(
        remote.curl(
            "POST",
            &format!("{base}/shard/tags?shardID=1&zone=b"),
            Some(TOKEN)
        ),
        200
    );
    // Data calls are open (no data token configured).
    assert_eq!(
        remote.curl("POST", &format!("{base}/put?key=k&val=v"), None),
        200
    );
}
