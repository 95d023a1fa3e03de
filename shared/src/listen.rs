//! Listening sockets for the HTTP servers: each accepted TCP connection sends at once
//! (`TCP_NODELAY`), so an answer written in parts — the head, then a body streamed through
//! from the consumer pod — is not held back waiting on the peer's acknowledgement.

use axum::serve::{ListenerExt, TapIo};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections send at once.
pub type NoDelayListener = TapIo<TcpListener, fn(&mut TcpStream)>;

/// `listener`, with `TCP_NODELAY` set on every connection it accepts.
pub fn no_delay(listener: TcpListener) -> NoDelayListener {
    listener.tap_io(set_no_delay)
}

fn set_no_delay(stream: &mut TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY on a connection");
    }
}
