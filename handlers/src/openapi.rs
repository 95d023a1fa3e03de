//! The OpenAPI 3 document, generated from the route and DTO definitions (utoipa), served at
//! `/openapi.json`, and Swagger UI at `/docs` from assets compiled into the binary (no CDN),
//! its "Authorize" taking the API key.

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::server::Server;
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::routes;

/// The public API's document; the server URL is set from `API_PREFIX` by [`document`].
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Kafka Replicator API",
        description = "Events from a Kafka cluster, read with a cursor over HTTPS. A client passes back each answer's `next_cursor` and so receives every event the source retains, exactly once per cursor step. Keys go in `x-api-key` or `Authorization: Bearer`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        routes::health,
        routes::ready,
        routes::events,
        crate::stream::events_stream,
        routes::metrics
    ),
    modifiers(&Security),
    tags(
        (name = "events", description = "Reading events"),
        (name = "service", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

/// The two ways to send a key.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "An API key (see `handlers-server generate-api-key`)",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The same API key as a bearer token"))
                    .build(),
            ),
        );
    }
}

/// The document for an API served under `api_prefix`.
pub fn document(api_prefix: &str) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let url = if api_prefix.is_empty() {
        "/"
    } else {
        api_prefix
    };
    doc.servers = Some(vec![Server::new(url)]);
    doc
}

/// `{prefix}/openapi.json` and Swagger UI at `{prefix}/docs`. The page finds the document
/// by a relative URL, so it also works behind a gateway stage that adds a path prefix.
pub fn docs_router<S>(api_prefix: &str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let ui = SwaggerUi::new(format!("{api_prefix}/docs")).config(
        Config::new(["../openapi.json"])
            .validator_url("none")
            .persist_authorization(false)
            .display_request_duration(true),
    );
    let doc = document(api_prefix);
    Router::new()
        .route(
            &format!("{api_prefix}/openapi.json"),
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc) }
            }),
        )
        .merge(ui)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route_and_both_key_schemes() {
        let doc = document("/api/v1");
        let json = serde_json::to_value(&doc).expect("serialize");
        for path in ["/health", "/ready", "/events", "/metrics"] {
            assert!(json["paths"][path]["get"].is_object(), "{path} documented");
        }
        assert_eq!(json["servers"][0]["url"], "/api/v1");
        let schemes = &json["components"]["securitySchemes"];
        assert_eq!(schemes["api_key"]["in"], "header");
        assert_eq!(schemes["api_key"]["name"], "x-api-key");
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        let events = &json["paths"]["/events"]["get"];
        for status in ["200", "400", "401", "429", "503"] {
            assert!(events["responses"][status].is_object(), "/events {status}");
        }
        let codes = &json["components"]["schemas"]["ErrorCode"]["enum"];
        assert!(
            codes
                .as_array()
                .expect("enum")
                .iter()
                .any(|c| c == "rate_limited")
        );
    }
}
