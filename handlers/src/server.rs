//! The container server: plain HTTP, or HTTPS with rustls when `TLS_CERT` and `TLS_KEY` are
//! set (Istio terminates TLS inside the mesh; a standalone container must do it itself).
//! Either way it drains in-flight requests when `shutdown` completes.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::time::Duration;

use crate::Config;
use axum_server::tls_rustls::RustlsConfig;

use crate::AppState;

/// Longest a stopping server waits for requests in flight (a long-poll is at most 30 s).
const DRAIN: Duration = Duration::from_secs(35);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot load TLS_CERT {cert} / TLS_KEY {key}: {source}")]
    Tls {
        cert: String,
        key: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Serves the public router on `HOST:PORT` until `shutdown`, then drains.
pub async fn serve(
    config: &Config,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = format!("{}:{}", config.host, config.port);
    let closing = state.closing.clone();
    let app = crate::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let bind = |source| ServeError::Bind {
        addr: addr.clone(),
        source,
    };
    // Open streams end as the server begins to stop; a request still open after DRAIN is
    // cut off.
    let shutdown = {
        let closing = closing.clone();
        async move {
            shutdown.await;
            closing.cancel();
        }
    };
    let Some((cert, key)) = config.tls.paths() else {
        let listener = tokio::net::TcpListener::bind(&addr).await.map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        tracing::info!(addr = %local, tls = false, prefix = %config.api_prefix, pod = %config.consumer_addr, "handlers serving");
        let serving = axum::serve(shared::listen::no_delay(listener), app)
            .with_graceful_shutdown(shutdown)
            .into_future();
        return tokio::select! {
            served = serving => served.map_err(ServeError::Serve),
            () = async {
                closing.cancelled().await;
                tokio::time::sleep(DRAIN).await;
            } => {
                tracing::warn!(drain_secs = DRAIN.as_secs(), "requests still open after the drain; stopping without them");
                Ok(())
            }
        };
    };
    let tls = RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|source| ServeError::Tls {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            source,
        })?;
    let listener = std::net::TcpListener::bind(&addr).map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(DRAIN));
    });
    tracing::info!(addr = %local, tls = true, prefix = %config.api_prefix, pod = %config.consumer_addr, "handlers serving");
    axum_server::from_tcp_rustls(listener, tls)
        .map_err(bind)?
        .handle(handle)
        .serve(app)
        .await
        .map_err(ServeError::Serve)
}
