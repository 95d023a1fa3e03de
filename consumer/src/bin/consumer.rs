//! `consumer`: the consumer pod. Reads `.env`, flags and environment, then consumes the
//! source topics into its buffer and serves the handlers until Ctrl-C or SIGTERM.
//! `consumer healthcheck` asks the running pod's internal socket (with its INTERNAL_TOKEN)
//! and exits 0 if it answers.

use anyhow::Context;
use consumer::Config;
use shared::config;
use shared::internal::ConsumerAddr;
use shared::internal::STATUS_PATH;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let addr: ConsumerAddr = std::env::var("CONSUMER_ADDR")
            .unwrap_or_else(|_| "127.0.0.1:7070".into())
            .parse()
            .map_err(anyhow::Error::msg)?;
        let token = std::env::var("INTERNAL_TOKEN").ok();
        std::process::exit(shared::probe::exit_code(
            &addr,
            STATUS_PATH,
            token.as_deref(),
        ));
    }
    let config: Config = config::load();
    shared::telemetry::init();
    let pod = consumer::ConsumerPod::bind(config)
        .await
        .context("consumer pod could not start")?;
    pod.run(shared::shutdown::token())
        .await
        .context("consumer pod failed")
}
