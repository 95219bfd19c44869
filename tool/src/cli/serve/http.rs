//! The HTTP side of `serve`: GET /metrics (Prometheus text or OpenMetrics) and /healthz,
//! nothing else, with a bounded number of connections, bounded request heads and time
//! limits on slow clients.

use std::{convert::Infallible, sync::Arc, time::Duration};

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

/// Accepts connections until the collector ends (signal).
pub(super) async fn serve_http(listener: TcpListener, shared: Shared, max: usize) -> Result<()> {
    let slots = Arc::new(Semaphore::new(max));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream); // over the limit: close at once
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
            drop(slot);
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
            match exposition(&shared, format) {
                Ok(text) => response(StatusCode::OK, format.content_type(), text),
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
