//! `handlers-lambda`: the same public API as an AWS Lambda function behind API Gateway
//! (HTTP API or REST API) or an ALB, or, with `LAMBDA_INVOKE_MODE=RESPONSE_STREAM`, behind a
//! function URL that streams. Configuration is read once per instance, at init.

use handlers::Config;
use shared::config;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config: Config = config::load();
    shared::telemetry::init();
    let state = handlers::AppState::from_config(&config).await?;
    if config.lambda_invoke_mode == handlers::config::LambdaInvokeMode::ResponseStream {
        return lambda_http::run_with_streaming_response(handlers::lambda::streaming_service(
            state,
        ))
        .await;
    }
    let service = handlers::lambda::service(state);
    lambda_http::lambda_runtime::run(lambda_http::service_fn(move |event| {
        handlers::lambda::handle(service.clone(), event)
    }))
    .await
}
