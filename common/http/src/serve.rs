//! The HTTP server of nodes and routers: axum's router on hyper's HTTP/1 connections, with
//! the limits a listener reachable by strangers needs (`axum::serve` sets none of them).
//!
//! - **Connections**: at most [`HttpLimits::max_connections`] at once; beyond that the
//!   listener stops accepting (new clients wait in the kernel's backlog) until one closes.
//! - **Headers**: the request line and headers must arrive within
//!   [`HttpLimits::header_timeout`] (a client trickling bytes cannot hold a connection), fit in
//!   [`HttpLimits::max_header_bytes`] and number at most [`HttpLimits::max_headers`]; hyper
//!   answers 431 or closes the connection otherwise.
//! - **Bodies** are bounded by each handler, which knows what it reads (the KV value limit,
//!   64 KiB for admin calls), and answer 413 with a JSON error.
//!
//! Each request carries `ConnectInfo<SocketAddr>` like `axum::serve` gives, so the access
//! checks see the caller's address. Shutdown stops accepting and lets open connections finish
//! their requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Bounds on what one HTTP client can hold of a node or router.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            // hyper's own default (a request line carrying a value in its query string can
            // be long), now stated.
            max_header_bytes: 8192 + 4096 * 100,
            max_headers: 100,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes; then waits (at
/// most `drain`) for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            app.clone().oneshot(req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(peer = %remote, error = %e, "http connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("http requests still running {drain:?} after shutdown; leaving them");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::Notify;

    use super::*;

    /// Serves `/peer` (the caller's address as axum sees it) and `/hold` (answers once
    /// `release` is notified).
    async fn start(limits: HttpLimits, release: Arc<Notify>) -> SocketAddr {
        let app = axum::Router::new()
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            )
            .route(
                "/hold",
                get(move || async move {
                    release.notified().await;
                    "released"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            app,
            limits,
            std::future::pending(),
            Duration::from_secs(1),
        ));
        addr
    }

    /// Sends `request` raw and reads until the server closes (or `within` passes).
    async fn exchange(addr: SocketAddr, request: &[u8], within: Duration) -> Option<String> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        match tokio::time::timeout(within, s.read_to_end(&mut out)).await {
            Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
            Err(_) => None,
        }
    }

    const PEER: &[u8] = b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_free_one() {
        let release = Arc::new(Notify::new());
        let limits = HttpLimits {
            max_connections: 1,
            ..Default::default()
        };
        let addr = start(limits, release.clone()).await;
        let answer = exchange(addr, PEER, Duration::from_secs(5)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("127.0.0.1:"),
            "ConnectInfo reaches handlers: {answer}"
        );

        let held = tokio::spawn(exchange(
            addr,
            b"GET /hold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        ));
        // The held request has the only connection: another is not served meanwhile.
        let waiting = tokio::spawn(exchange(addr, PEER, Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_millis(300)).await; // give it the chance to be wrongly served
        assert!(!waiting.is_finished(), "served beyond the connection limit");
        release.notify_one();
        let held = held.await.unwrap().unwrap();
        assert!(held.contains("released"), "{held}");
        let answer = waiting
            .await
            .unwrap()
            .expect("served once a connection is free");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn slow_or_huge_headers_are_cut_off() {
        let limits = HttpLimits {
            header_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let addr = start(limits, Arc::new(Notify::new())).await;
        // Trickling a request line and never finishing the headers: closed after the timeout.
        let t0 = Instant::now();
        let out = exchange(
            addr,
            b"GET /peer HTTP/1.1\r\nHost: x\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(out.is_some(), "a stalled header was never cut off");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

        let mut huge = b"GET /peer HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 600 * 1024));
        huge.extend_from_slice(b"\r\n\r\n");
        let out = exchange(addr, &huge, Duration::from_secs(5)).await;
        let out = out.expect("an answer to oversized headers");
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");

        let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
        let req = format!("GET /peer HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        let out = exchange(addr, req.as_bytes(), Duration::from_secs(5))
            .await
            .expect("an answer to too many headers");
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    }
}
