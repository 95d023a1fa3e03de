//! `handlers-lambda`: the same public API as an AWS Lambda function behind API Gateway
//! (HTTP API or REST API) or an ALB. Configuration is read once per instance, at init.

use handlers::Config;
use shared::config;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config: Config = config::load();
    shared::telemetry::init();
    let state = handlers::AppState::from_config(&config).await?;
    let service = handlers::lambda::service(state);
    lambda_http::lambda_runtime::run(lambda_http::service_fn(move |event| {
        handlers::lambda::handle(service.clone(), event)
    }))
    .await
}
