//! Tests of `kv`: the endpoints over a scripted service, through a real HTTP connection.

use super::*;
use serde_json::Value;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers by a fixed script and records every call.
struct Fake {
    limits: Limits,
    calls: Mutex<Vec<(String, KvOp, Option<ClientSeq>)>>,
}

impl KvService for Fake {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn execute(
        &self,
        key: String,
        op: KvOp,
        client: Option<ClientSeq>,
        _space: unikv_types::catalog::Space,
    ) -> Result<KvReply, ApiError> {
        self.calls
            .lock()
            .unwrap()
            .push((key.clone(), op.clone(), client));
        Ok(match (&op, key.as_str()) {
            (_, "fail") => return Err(ApiError::bad_request("empty_key", "scripted")),
            (KvOp::Get, "missing") => KvReply::Value(None),
            (_, "reused") => KvReply::Written,
            (KvOp::Get, _) => KvReply::Value(Some(format!("v-{key}"))),
            (KvOp::Put { .. }, _) => KvReply::Written,
            (KvOp::Append { value }, _) => KvReply::Appended {
                previous: (value == "x").then(|| "before".to_string()),
            },
            (KvOp::Delete, _) => KvReply::Deleted { existed: true },
            (KvOp::Scan(r), _) => KvReply::Scan(unikv_types::ScanPage {
                items: vec![(
                    format!("{}|{}", r.start, r.end.clone().unwrap_or_default()),
                    r.limit.to_string(),
                )],
                resume: Some(format!("{}>", r.start)),
            }),
            (
                KvOp::Catalog(_)
                | KvOp::Chunks
                | KvOp::Split
                | KvOp::MoveChunk { .. }
                | KvOp::Usage,
                _,
            ) => return Err(ApiError::bad_request("bad_command", "scripted")),
        })
    }
}

async fn serve(limits: Limits) -> (std::net::SocketAddr, Arc<Fake>) {
    let fake = Arc::new(Fake {
        limits,
        calls: Mutex::new(Vec::new()),
    });
    let app = routes(fake.clone()).fallback(crate::reply::not_found);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, fake)
}

/// One HTTP/1.1 request; returns the status and the JSON body.
async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    body: Option<(&str, &str)>,
) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: kv\r\nConnection: close\r\n");
    match body {
        Some((ctype, b)) => req.push_str(&format!(
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => req.push_str("\r\n"),
    }
    stream.write_all(req.as_bytes()).await.unwrap();
    // Read up to the end, or up to a reset: a server refusing an oversized body may close
    // before reading all of it, after sending its answer.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf).await {
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(raw).unwrap();
    let status = text[9..12].parse().unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn each_route_answers_its_methods_with_its_shape() {
    let (addr, _) = serve(Limits::default()).await;
    for m in ["GET", "POST"] {
        let (s, b) = send(addr, m, "/get?key=k", None).await;
        assert_eq!((s, b), (200, json!({"key": "k", "value": "v-k"})), "{m}");
    }
    for m in ["GET", "POST", "PUT"] {
        let (s, b) = send(addr, m, "/put?key=k&val=1", None).await;
        assert_eq!((s, b), (200, json!({"ok": true})), "{m}");
        let (s, b) = send(addr, m, "/append?key=k&value=x", None).await;
        assert_eq!(
            (s, b),
            (200, json!({"ok": true, "previous": "before"})),
            "{m}"
        );
    }
    let (s, b) = send(addr, "GET", "/append?key=k&val=y", None).await;
    assert_eq!((s, b), (200, json!({"ok": true, "previous": null})));
    for m in ["DELETE", "POST"] {
        let (s, b) = send(addr, m, "/delete?key=k", None).await;
        assert_eq!((s, b), (200, json!({"ok": true, "deleted": true})), "{m}");
    }
    for (m, path) in [
        ("PUT", "/get"),
        ("DELETE", "/get"),
        ("DELETE", "/put"),
        ("DELETE", "/append"),
        ("GET", "/delete"),
        ("PUT", "/delete"),
    ] {
        let (s, b) = send(addr, m, &format!("{path}?key=k&val=1"), None).await;
        assert_eq!(
            (s, &b["code"]),
            (405, &json!("method_not_allowed")),
            "{m} {path}"
        );
    }
    let (s, b) = send(addr, "GET", "/nope", None).await;
    assert_eq!((s, &b["code"]), (404, &json!("not_found")));
}

#[tokio::test]
async fn errors_and_odd_replies_are_json() {
    let (addr, _) = serve(Limits::default()).await;
    let (s, b) = send(addr, "GET", "/get?key=missing", None).await;
    assert_eq!(
        (s, b),
        (
            404,
            json!({"error": "key not found", "code": "not_found", "key": "missing"})
        )
    );
    let (s, b) = send(addr, "DELETE", "/delete?key=reused", None).await;
    assert_eq!((s, &b["code"]), (409, &json!("sequence_reused")));
    let (s, b) = send(addr, "GET", "/get?key=fail", None).await;
    assert_eq!((s, &b["code"]), (400, &json!("empty_key")));
    let (s, b) = send(addr, "GET", "/get", None).await;
    assert_eq!((s, &b["code"]), (400, &json!("missing_param")));
    let (s, b) = send(addr, "GET", "/put?key=k", None).await;
    assert_eq!((s, &b["error"]), (400, &json!("missing parameter \"val\"")));
    let (s, b) = send(addr, "POST", "/put", Some(("application/json", "{no"))).await;
    assert_eq!((s, &b["code"]), (400, &json!("bad_request")));
}

#[tokio::test]
async fn sessions_are_passed_on_for_writes_only() {
    let (addr, fake) = serve(Limits::default()).await;
    send(addr, "GET", "/put?key=k&val=1&client_id=c&seq=7", None).await;
    send(addr, "GET", "/get?key=k&client_id=c&seq=8", None).await;
    let body = r#"{"key":"k","value":"v","client_id":"c","seq":9}"#;
    send(addr, "PUT", "/append", Some(("application/json", body))).await;
    let calls = fake.calls.lock().unwrap().clone();
    let seqs: Vec<Option<u64>> = calls.iter().map(|c| c.2.as_ref().map(|c| c.seq)).collect();
    assert_eq!(seqs, [Some(7), None, Some(9)]);
    assert_eq!(calls[2].1, KvOp::Append { value: "v".into() });
    // Half a session is refused before the service sees it.
    let (s, b) = send(addr, "GET", "/put?key=k&val=1&client_id=c", None).await;
    assert_eq!((s, &b["code"]), (400, &json!("bad_request")));
    assert_eq!(fake.calls.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn the_body_limit_follows_the_service_limits() {
    let limits = Limits {
        max_key_bytes: 10,
        max_value_bytes: 10,
    };
    assert_eq!(max_body(&limits), 20 + 64 * 1024);
    let huge = Limits {
        max_key_bytes: usize::MAX,
        max_value_bytes: usize::MAX,
    };
    assert_eq!(max_body(&huge), usize::MAX);
    let (addr, _) = serve(limits).await;
    let fits = format!("key=k&val={}", "v".repeat(64 * 1024));
    let form = "application/x-www-form-urlencoded";
    let (s, _) = send(addr, "POST", "/put", Some((form, &fits))).await;
    assert_eq!(s, 200);
    let over = format!("key=k&val={}", "v".repeat(64 * 1024 + 20));
    let (s, b) = send(addr, "POST", "/put", Some((form, &over))).await;
    assert_eq!((s, &b["code"]), (413, &json!("body_too_large")));
    // `curl -d '{"key":...}'` sends JSON labelled as a form: it is read as JSON.
    let (s, b) = send(
        addr,
        "POST",
        "/put",
        Some((form, r#" {"key":"k","val":"v"}"#)),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn scan_pages_carry_a_cursor_that_resumes_them() {
    let (addr, _) = serve(Limits::default()).await;
    let (s, b) = send(
        addr,
        "GET",
        "/scan?collection=events&start=a&end=q&limit=2",
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["items"][0]["key"], "a|q");
    assert_eq!(b["items"][0]["value"], "2");
    let next = b["next"].as_str().unwrap().to_string();
    // The cursor replaces `start`, the rest of the query repeats.
    let (s, b) = send(
        addr,
        "GET",
        &format!("/scan?collection=events&start=a&end=q&limit=2&cursor={next}"),
        None,
    )
    .await;
    assert_eq!(
        (s, &b["items"][0]["key"]),
        (200, &serde_json::json!("a>|q"))
    );
    for (query, code) in [
        ("limit=0", "bad_limit"),
        ("limit=1001", "bad_limit"),
        ("cursor=%%%", "bad_cursor"),
        ("start=b&end=a", "bad_range"),
        ("reverse=maybe", "bad_reverse"),
    ] {
        let (s, b) = send(
            addr,
            "GET",
            &format!("/scan?collection=events&{query}"),
            None,
        )
        .await;
        assert_eq!((s, b["code"].as_str()), (400, Some(code)), "{query}: {b}");
    }
}
