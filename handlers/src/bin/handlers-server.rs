//! `handlers-server`: the public API as a container server. Reads `.env`, flags and
//! environment, serves on `HOST:PORT` (HTTPS when `TLS_CERT`/`TLS_KEY` are set), and
//! drains in-flight requests on Ctrl-C or SIGTERM. `handlers-server generate-api-key`
//! prints a new random 256-bit key and exits.

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
    handlers::server::serve(&config, state, shared::shutdown::signal())
        .await
        .context("handlers-server")
}
