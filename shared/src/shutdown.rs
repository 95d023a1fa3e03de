//! Graceful shutdown for every binary: a future that resolves on Ctrl-C or, on Unix,
//! SIGTERM (what Kubernetes and systemd send before killing), on Windows Ctrl-Break and
//! the console's close, logoff and shutdown events, and a cancellation token tied to it.

use tokio_util::sync::CancellationToken;

/// Resolves when `listener()` (a Windows console event listener) receives its event; never
/// when it cannot be made.
#[cfg(windows)]
macro_rules! console_event {
    ($listener:path) => {
        async {
            match $listener() {
                Ok(mut events) => {
                    events.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
    };
}

/// Resolves on Ctrl-C; on Unix also on SIGTERM; on Windows also on Ctrl-Break, the console
/// window closing, the user logging off and the system shutting down.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(windows)]
    let terminate = async {
        use tokio::signal::windows::{ctrl_break, ctrl_close, ctrl_logoff, ctrl_shutdown};
        tokio::select! {
            () = console_event!(ctrl_break) => {},
            () = console_event!(ctrl_close) => {},
            () = console_event!(ctrl_logoff) => {},
            () = console_event!(ctrl_shutdown) => {},
        }
    };
    #[cfg(not(any(unix, windows)))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

/// A token cancelled when [`signal`] resolves; call inside a Tokio runtime.
pub fn token() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        signal().await;
        child.cancel();
    });
    token
}
