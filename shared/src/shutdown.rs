//! Graceful shutdown for every binary: a future that resolves on Ctrl-C or, on Unix,
//! SIGTERM (what Kubernetes sends before killing a pod), and a cancellation token tied to it.

use tokio_util::sync::CancellationToken;

/// Resolves on Ctrl-C, or SIGTERM on Unix.
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
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

/// A token cancelled on Ctrl-C or SIGTERM; call inside a Tokio runtime.
pub fn token() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        signal().await;
        child.cancel();
    });
    token
}
