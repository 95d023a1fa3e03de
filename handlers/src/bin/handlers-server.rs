//! `handlers-server`: the public API as a container server. Reads `.env`, flags and
//! environment, serves on `HOST:PORT` (HTTPS when `TLS_CERT`/`TLS_KEY` are set), and
//! drains in-flight requests on Ctrl-C or SIGTERM. `handlers-server generate-api-key`
//! prints a new random 256-bit key and exits; `handlers-server healthcheck` asks the
//! running server's `/health` on `PORT` and exits 0 if it answers 200 (plain HTTP only).

use anyhow::Context;
use handlers::Config;
use shared::config;
use shared::internal::ConsumerAddr;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("generate-api-key") {
        println!("{}", handlers::api_keys::generate_key());
        return Ok(());
    }
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
        let prefix = std::env::var("API_PREFIX").unwrap_or_else(|_| "/api/v1".into());
        let addr = ConsumerAddr::Tcp(format!("127.0.0.1:{port}"));
        let path = format!("{}/health", prefix.trim_end_matches('/'));
        std::process::exit(shared::probe::exit_code(&addr, &path, None));
    }
    let config: Config = config::load();
    shared::telemetry::init();
    let state = handlers::AppState::from_config(&config).await?;
    handlers::server::serve(&config, state, shared::shutdown::signal())
        .await
        .context("handlers-server")
}
