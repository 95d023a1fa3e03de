//! `handlers-lambda`: the same public API as an AWS Lambda function behind API Gateway
//! (HTTP API or REST API) or an ALB. Configuration is read once per instance, at init.

use shared::config::{self, HandlersConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config: HandlersConfig = config::load();
    shared::telemetry::init();
    let state = handlers::AppState::from_config(&config).await?;
    lambda_http::run(handlers::lambda::service(state)).await
}
