//! OAUTHBEARER tokens the product makes itself, handed to librdkafka through rust-rdkafka's
//! refresh callback (every context of the product answers it): MSK IAM tokens for
//! `sasl.mechanism=AWS_MSK_IAM`, and Kafka's unsecured JWS for development brokers
//! (`enable.sasl.oauthbearer.unsecure.jwt=true`), which librdkafka makes only once.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rdkafka::client::{Client, ClientContext, OAuthToken};

use super::properties::KafkaProperties;

/// The `sasl.mechanism` value that makes the product sign MSK IAM tokens; librdkafka is
/// given OAUTHBEARER instead.
pub const AWS_MSK_IAM: &str = "AWS_MSK_IAM";

/// Tokens handed to librdkafka by every client of this process, for the log and the tests
/// (a count that grows while a client runs shows its refreshes are served).
static TOKENS_ISSUED: AtomicU64 = AtomicU64::new(0);

/// How many OAUTHBEARER tokens this process has made.
pub fn tokens_issued() -> u64 {
    TOKENS_ISSUED.load(Ordering::Relaxed)
}

/// Why no token could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

/// Where the tokens of one cluster's clients come from; none when the cluster does not use
/// OAUTHBEARER, or librdkafka makes them itself (`sasl.oauthbearer.method=oidc`).
#[derive(Clone, Default)]
pub struct OAuthTokens {
    source: Option<Arc<Source>>,
}

enum Source {
    /// Kafka's unsecured JWS, from this `sasl.oauthbearer.config`.
    Unsecured(String),
    #[cfg(feature = "msk-iam")]
    MskIam(super::msk_iam::MskIamSigner),
}

impl fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source.as_deref() {
            None => "none",
            Some(Source::Unsecured(_)) => "unsecured JWS",
            #[cfg(feature = "msk-iam")]
            Some(Source::MskIam(_)) => "MSK IAM",
        };
        write!(f, "OAuthTokens({source})")
    }
}

impl OAuthTokens {
    /// The token source `properties` ask for against `brokers`. MSK IAM starts loading AWS
    /// credentials in the background at once.
    pub fn for_properties(properties: &KafkaProperties, brokers: &str) -> Self {
        let mechanism = properties.get("sasl.mechanism").unwrap_or_default();
        let source = if properties.msk_iam() {
            msk_iam_source(brokers)
        } else if mechanism.eq_ignore_ascii_case("OAUTHBEARER")
            && properties
                .get("enable.sasl.oauthbearer.unsecure.jwt")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            let config = properties
                .get("sasl.oauthbearer.config")
                .unwrap_or_default();
            Some(Source::Unsecured(config.to_owned()))
        } else {
            None
        };
        Self {
            source: source.map(Arc::new),
        }
    }

    /// Whether the product makes this cluster's tokens.
    pub fn in_use(&self) -> bool {
        self.source.is_some()
    }

    /// Waits at most `timeout` for what a token needs (MSK IAM: the region and the first
    /// AWS credentials), so a start-up fails with the reason rather than a stalled client.
    pub fn ready(&self, timeout: Duration) -> Result<(), TokenError> {
        #[cfg(not(feature = "msk-iam"))]
        let _ = timeout;
        match self.source.as_deref() {
            #[cfg(feature = "msk-iam")]
            Some(Source::MskIam(signer)) => signer.ready(timeout),
            _ => Ok(()),
        }
    }

    /// A fresh token. `oauthbearer_config` is what librdkafka passes along with its request
    /// (`sasl.oauthbearer.config`); the sources read it from the properties instead, as a
    /// token made outside a request has none.
    pub fn token(&self, _oauthbearer_config: Option<&str>) -> Result<OAuthToken, TokenError> {
        let token = match self.source.as_deref() {
            None => {
                return Err(TokenError(
                    "librdkafka asked for an OAUTHBEARER token but no token source is set: use \
                     sasl.mechanism=AWS_MSK_IAM for MSK, or sasl.oauthbearer.method=oidc"
                        .to_owned(),
                ));
            }
            Some(Source::Unsecured(config)) => unsecured_token(config, SystemTime::now())?,
            #[cfg(feature = "msk-iam")]
            Some(Source::MskIam(signer)) => signer.token()?,
        };
        TOKENS_ISSUED.fetch_add(1, Ordering::Relaxed);
        // Neither the token nor its principal (an access key id for MSK IAM) is logged.
        tracing::debug!(
            expires_in_s = (token.lifetime_ms - now_ms(SystemTime::now())) / 1000,
            "OAUTHBEARER token made"
        );
        Ok(token)
    }

    /// What a context's `generate_oauth_token` answers.
    pub fn generate(
        &self,
        oauthbearer_config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        self.token(oauthbearer_config).map_err(|err| {
            tracing::warn!(error = %err, "no OAUTHBEARER token");
            err.into()
        })
    }

    /// Gives `client` its first token now. librdkafka asks for tokens on the client's main
    /// queue, which an admin client never polls; consumers and producers are served by
    /// their context when polled, and this spares them waiting for the first poll.
    pub fn prime<C: ClientContext>(&self, client: &Client<C>) -> Result<(), TokenError> {
        if !self.in_use() {
            return Ok(());
        }
        let token = self.token(None)?;
        let value = CString::new(token.token).map_err(|_| TokenError("token has a NUL".into()))?;
        let principal = CString::new(token.principal_name)
            .map_err(|_| TokenError("principal has a NUL".into()))?;
        let mut errstr = [0 as std::ffi::c_char; 512];
        // SAFETY: the client pointer is live for the borrow; the strings outlive the call,
        // which copies them; no extensions are passed.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_oauthbearer_set_token(
                client.native_ptr(),
                value.as_ptr(),
                token.lifetime_ms,
                principal.as_ptr(),
                std::ptr::null_mut(),
                0,
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        if err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            // SAFETY: librdkafka wrote a NUL-terminated message into the buffer.
            let said = unsafe { std::ffi::CStr::from_ptr(errstr.as_ptr()) };
            Err(TokenError(format!(
                "librdkafka refused the token: {}",
                said.to_string_lossy()
            )))
        }
    }
}

#[cfg(feature = "msk-iam")]
fn msk_iam_source(brokers: &str) -> Option<Source> {
    Some(Source::MskIam(super::msk_iam::MskIamSigner::start(brokers)))
}

/// A binary built without the signer refuses the mechanism at start (the client's guards).
#[cfg(not(feature = "msk-iam"))]
fn msk_iam_source(_brokers: &str) -> Option<Source> {
    None
}

fn now_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Kafka's unsecured JWS (RFC 7515 appendix A.5), as librdkafka's built-in makes it from
/// `sasl.oauthbearer.config`: space-separated `principal=…` (required),
/// `principalClaimName=…` (default `sub`), `scope=…` (comma-separated), `lifeSeconds=…`
/// (default 3600).
fn unsecured_token(config: &str, now: SystemTime) -> Result<OAuthToken, TokenError> {
    let mut principal = None;
    let mut claim = "sub";
    let mut scope = None;
    let mut life_seconds: u64 = 3600;
    for pair in config.split_whitespace() {
        let (name, value) = pair.split_once('=').ok_or_else(|| {
            TokenError(format!(
                "sasl.oauthbearer.config: {pair:?} is not name=value"
            ))
        })?;
        match name {
            "principal" => principal = Some(value),
            "principalClaimName" => claim = value,
            "scope" => scope = Some(value),
            "lifeSeconds" => {
                life_seconds = value.parse().map_err(|_| {
                    TokenError(format!(
                        "sasl.oauthbearer.config: lifeSeconds={value} is not a whole number"
                    ))
                })?;
            }
            // librdkafka takes `extension_*` too; Kafka's unsecured validator ignores them.
            _ if name.starts_with("extension_") => {}
            _ => {
                return Err(TokenError(format!(
                    "sasl.oauthbearer.config: unknown name {name:?} (principal, \
                     principalClaimName, scope, lifeSeconds)"
                )));
            }
        }
    }
    let principal = principal.ok_or_else(|| {
        TokenError(
            "sasl.oauthbearer.config needs principal=<name>, e.g. principal=replicator".into(),
        )
    })?;
    let issued = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let expires = issued + Duration::from_secs(life_seconds);
    let mut claims = serde_json::Map::new();
    claims.insert(claim.to_owned(), principal.into());
    claims.insert("iat".to_owned(), issued.as_secs_f64().into());
    claims.insert("exp".to_owned(), expires.as_secs_f64().into());
    if let Some(scope) = scope {
        let scopes: Vec<serde_json::Value> = scope.split(',').map(Into::into).collect();
        claims.insert("scope".to_owned(), scopes.into());
    }
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::Value::Object(claims).to_string());
    Ok(OAuthToken {
        token: format!("{header}.{payload}."),
        principal_name: principal.to_owned(),
        lifetime_ms: i64::try_from(expires.as_millis()).unwrap_or(i64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why no token was made; a test failure if one was.
    fn refusal(made: Result<OAuthToken, TokenError>) -> String {
        match made {
            Ok(token) => panic!("a token was made for {}", token.principal_name),
            Err(err) => err.0,
        }
    }

    fn props(list: &str) -> KafkaProperties {
        KafkaProperties::parse_list(list, "KAFKA_PROPERTIES").unwrap()
    }

    #[test]
    fn the_token_source_follows_the_mechanism() {
        let none = OAuthTokens::for_properties(&props("security.protocol=SASL_SSL"), "b:9096");
        assert!(!none.in_use());
        let oidc = OAuthTokens::for_properties(
            &props("sasl.mechanism=OAUTHBEARER,sasl.oauthbearer.method=oidc"),
            "b:9096",
        );
        assert!(!oidc.in_use(), "librdkafka makes OIDC tokens itself");
        let unsecured = OAuthTokens::for_properties(
            &props("sasl.mechanism=OAUTHBEARER,enable.sasl.oauthbearer.unsecure.jwt=true"),
            "b:9096",
        );
        assert!(unsecured.in_use());
        assert!(refusal(none.token(None)).contains("no token source"));
        assert!(refusal(unsecured.token(None)).contains("needs principal="));
        let configured = OAuthTokens::for_properties(
            &props(
                "sasl.mechanism=OAUTHBEARER,enable.sasl.oauthbearer.unsecure.jwt=true,\
                 sasl.oauthbearer.config=principal=replicator",
            ),
            "b:9096",
        );
        assert_eq!(configured.token(None).unwrap().principal_name, "replicator");
    }

    #[test]
    fn an_unsecured_token_is_the_jws_kafka_validates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_796_126_400);
        let token = unsecured_token("principal=replicator lifeSeconds=5 scope=a,b", now).unwrap();
        assert_eq!(token.principal_name, "replicator");
        assert_eq!(token.lifetime_ms, 1_796_126_405_000);
        let parts: Vec<&str> = token.token.split('.').collect();
        assert_eq!(parts.len(), 3, "header.payload. with an empty signature");
        assert_eq!(parts[2], "");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(parts[0]).unwrap(),
            br#"{"alg":"none"}"#
        );
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "replicator");
        assert_eq!(claims["iat"], 1_796_126_400.0);
        assert_eq!(claims["exp"], 1_796_126_405.0);
        assert_eq!(claims["scope"], serde_json::json!(["a", "b"]));
    }

    #[test]
    fn a_bad_unsecured_config_names_what_is_wrong() {
        let now = SystemTime::now();
        assert!(refusal(unsecured_token("", now)).contains("principal="));
        assert!(
            refusal(unsecured_token("principal=a lifeSeconds=soon", now))
                .contains("lifeSeconds=soon")
        );
        assert!(refusal(unsecured_token("principal=a colour=blue", now)).contains("colour"));
        let custom = unsecured_token("principal=a principalClaimName=user", now).unwrap();
        let payload = custom.token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["user"], "a");
    }
}
