//! The HTTP side of `serve`: GET /metrics (Prometheus text or OpenMetrics) and /healthz,
//! nothing else, with a bounded number of connections in all and per client address,
//! bounded request heads and time limits on slow clients.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::render::prometheus::{Format, Shared, exposition};

/// Longest a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one connection may stay open.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head accepted (hyper's buffer).
const MAX_HEAD: usize = 16 * 1024;

/// How many connections are served at once.
pub(super) struct Limits {
    pub connections: usize,
    pub per_peer: usize,
}

/// Connections held per client address. One client that opens connections and leaves
/// them idle (or half-sent) could otherwise hold every slot until its timeouts cut them,
/// and the scrapes would be turned away meanwhile.
#[derive(Debug, Default, Clone)]
struct Peers(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection's hold on its peer's count, given back on drop.
struct PeerSlot {
    peers: Peers,
    ip: IpAddr,
}

impl Peers {
    fn try_take(&self, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut held = self.0.lock().ok()?;
        let n = held.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Ok(mut held) = self.peers.0.lock()
            && let Some(n) = held.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections until the collector ends (signal).
pub(super) async fn serve_http(
    listener: TcpListener,
    shared: Shared,
    limits: Limits,
) -> Result<()> {
    let slots = Arc::new(Semaphore::new(limits.connections));
    let peers = Peers::default();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Over either limit: close at once.
        let Some(peer_slot) = peers.try_take(peer.ip(), limits.per_peer) else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, shared.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop((slot, peer_slot));
        });
    }
}

fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.parse().expect("valid header value"),
    );
    r
}

#[allow(
    clippy::unused_async,
    reason = "hyper's service_fn takes a function returning a future"
)]
async fn handle(
    req: Request<Incoming>,
    shared: Shared,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let known = matches!(path, "/metrics" | "/healthz");
    Ok(match (req.method(), known) {
        (_, false) => response(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        (&Method::GET | &Method::HEAD, true) if path == "/healthz" => {
            response(StatusCode::OK, "text/plain", "ok\n")
        }
        (&Method::GET | &Method::HEAD, true) => {
            let format = Format::from_accept(
                req.headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            );
            let started = Instant::now();
            match exposition(&shared, format, super::host::own()) {
                Ok(text) => {
                    if let Ok(mut d) = shared.scrapes.lock() {
                        d.observe(started.elapsed().as_secs_f64());
                    }
                    response(StatusCode::OK, format.content_type(), text)
                }
                Err(_) => response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "encoding failed\n",
                ),
            }
        }
        (_, true) => {
            let mut r = response(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n",
            );
            r.headers_mut().insert(
                header::ALLOW,
                "GET, HEAD".parse().expect("valid header value"),
            );
            r
        }
    })
}
