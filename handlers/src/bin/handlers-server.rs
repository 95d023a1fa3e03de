//! `handlers-server`: the public API as a container server. Reads `.env`, flags and
//! environment, serves on `HOST:PORT`, and drains in-flight requests on Ctrl-C or SIGTERM.
//! `handlers-server generate-api-key` prints a new random 256-bit key and exits.

use anyhow::Context;
use shared::config::{self, HandlersConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("generate-api-key") {
        println!("{}", shared::auth::generate_key());
        return Ok(());
    }
    let config: HandlersConfig = config::load();
    shared::telemetry::init();
    let state = handlers::AppState::from_config(&config).await?;
    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, prefix = %config.api_prefix, pod = %config.consumer_addr, "handlers serving");
    axum::serve(
        listener,
        handlers::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shared::shutdown::signal())
    .await
    .context("server failed")
}
