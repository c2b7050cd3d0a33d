//! Connection admission of faxd's HTTP servers: every accepted connection takes a place in a
//! [`ConnLimiter`] (per client address and in total) for as long as it is open; one over the
//! limit is answered `429` with Kazoo's error envelope and closed before it is read, so a
//! flood from one address cannot hold the node's file descriptors.

use std::os::fd::AsRawFd;
use std::time::Duration;

use actix_web::dev::Extensions;
use serde_json::json;

use super::envelope::{VERSION, node_token};
use crate::conn_limit::{ConnLimiter, Refused};
use crate::log_throttle::Throttle;

/// Refused connections are logged at most this often.
static REFUSED_LOG: Throttle = Throttle::new(Duration::from_secs(10), 5);

/// The address a client connected to (the listener's own), for answers that name the server.
#[derive(Clone, Copy, Debug)]
pub struct LocalAddr(pub std::net::SocketAddr);

/// Admits (or refuses) a new connection; the `on_connect` hook of an `HttpServer`. The place
/// is kept in the connection's extensions and freed when the connection ends.
pub fn on_connect(
    limiter: &ConnLimiter,
    node: &str,
    stream: &tokio::net::TcpStream,
    ext: &mut Extensions,
) {
    if let Ok(local) = stream.local_addr() {
        ext.insert(LocalAddr(local));
    }
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    match limiter.admit(peer.ip()) {
        Ok(slot) => {
            ext.insert(slot);
        }
        Err(why) => {
            if let Some(unlogged) = REFUSED_LOG.check() {
                tracing::warn!(peer = %peer.ip(), reason = ?why, open = limiter.open(), unlogged,
                    "HTTP connection refused: too many connections");
            }
            // A fresh socket's send buffer is empty: the short answer fits without blocking.
            let _ = stream.try_write(too_many(node, why).as_bytes());
            // SAFETY: shutdown on a descriptor the stream owns; the stream stays valid and is
            // closed by its owner, which now reads end-of-file and drops the connection.
            unsafe {
                libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
    }
}

/// The raw HTTP answer to a refused connection: 429, Kazoo's `too_many_requests` envelope.
fn too_many(node: &str, why: Refused) -> String {
    let cause = match why {
        Refused::PerAddress => "too many connections from this address",
        Refused::Total => "too many connections",
    };
    raw_error(node, "429 Too Many Requests", "too_many_requests", cause)
}

/// A whole HTTP answer written on a socket before (or instead of) the HTTP layer: `status` is
/// the status line's code and reason, the body Kazoo's error envelope with `message` and
/// `cause`; the connection closes after it.
pub fn raw_error(node: &str, status: &str, message: &str, cause: &str) -> String {
    let code = status.split(' ').next().unwrap_or(status);
    let body = json!({
        "auth_token": "undefined",
        "data": {"message": message.replace('_', " "), "cause": cause},
        "error": code,
        "message": message,
        "node": node_token(node),
        "request_id": crate::ids::new_id(),
        "status": "error",
        "timestamp": crate::time::iso8601_now(),
        "version": VERSION,
    })
    .to_string();
    let retry = if code == "429" {
        "retry-after: 1\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n{retry}\r\n{body}",
        body.len()
    )
}
