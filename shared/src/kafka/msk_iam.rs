//! MSK IAM tokens: a SigV4-presigned `kafka-cluster:Connect` request to
//! `kafka.<region>.amazonaws.com`, base64url-encoded, as AWS's own signers make them. The
//! AWS credentials come from the SDK's default chain (IRSA on EKS, the function role in
//! Lambda, a profile on a laptop), refreshed by a thread of their own before they expire.

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rdkafka::client::OAuthToken;

use super::oauth::TokenError;

/// How long a token is valid; the broker closes a connection whose token expired and was
/// not replaced (librdkafka asks for a new one at 80% of this).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// The service name tokens are signed for.
const SIGNING_NAME: &str = "kafka-cluster";
/// How early credentials with an expiry are fetched again.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(10 * 60);
/// How often credentials without an expiry (a profile, static keys) are read again.
const CREDENTIALS_REREAD: Duration = Duration::from_secs(5 * 60);
/// How long to wait before trying again after the chain found no credentials.
const CREDENTIALS_RETRY: Duration = Duration::from_secs(10);

/// An MSK IAM token and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedToken {
    pub token: String,
    /// Milliseconds since the Unix epoch.
    pub expires_ms: i64,
}

/// The token for `region` signed with `credentials` at `at`: the presigned URL with a
/// `User-Agent` naming this product, base64url without padding.
pub fn token_at(
    region: &str,
    credentials: &Credentials,
    at: SystemTime,
) -> Result<SignedToken, TokenError> {
    let host = format!("kafka.{region}.amazonaws.com");
    let url = format!("https://{host}/?Action=kafka-cluster%3AConnect");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(at)
        .settings(settings)
        .build()
        .map_err(|err| TokenError(format!("MSK IAM signing: {err}")))?
        .into();
    let request = SignableRequest::new(
        "GET",
        url.as_str(),
        std::iter::once(("host", host.as_str())),
        SignableBody::Bytes(&[]),
    )
    .map_err(|err| TokenError(format!("MSK IAM signing: {err}")))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|err| TokenError(format!("MSK IAM signing: {err}")))?
        .into_parts();
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("Action", "kafka-cluster:Connect");
    // In the order AWS's signers write them: the signature last.
    let mut params = instructions.params().to_vec();
    params.sort_by_key(|(name, _)| *name == "X-Amz-Signature");
    for (name, value) in &params {
        query.append_pair(name, value);
    }
    query.append_pair(
        "User-Agent",
        concat!("kafka-replicator/", env!("CARGO_PKG_VERSION")),
    );
    let signed = format!("https://{host}/?{}", query.finish());
    let expires = at + TOKEN_LIFETIME;
    let expires_ms = expires
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| TokenError("MSK IAM signing: the clock is before 1970".into()))?
        .as_secs()
        * 1000;
    Ok(SignedToken {
        token: URL_SAFE_NO_PAD.encode(signed),
        expires_ms: i64::try_from(expires_ms).unwrap_or(i64::MAX),
    })
}

/// The region in an MSK bootstrap address: `b-1.name.abc.c2.kafka.<region>.amazonaws.com`
/// (provisioned) or `boot-abc.c1.kafka-serverless.<region>.amazonaws.com` (serverless).
pub fn region_of_brokers(brokers: &str) -> Option<String> {
    brokers.split(',').find_map(|address| {
        let host = address.trim().rsplit_once(':').map_or(address, |(h, _)| h);
        let labels: Vec<&str> = host.split('.').collect();
        labels.windows(3).find_map(|w| {
            (matches!(w[0], "kafka" | "kafka-serverless")
                && w[2] == "amazonaws"
                && !w[1].is_empty())
            .then(|| w[1].to_owned())
        })
    })
}

/// What the credentials thread found so far.
#[derive(Default)]
struct Found {
    region: Option<Result<String, String>>,
    credentials: Option<Result<Credentials, String>>,
}

type Shared = (Mutex<Found>, Condvar);

/// Signs MSK IAM tokens for one cluster with the newest credentials its thread holds.
pub struct MskIamSigner {
    found: Arc<Shared>,
}

impl std::fmt::Debug for MskIamSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MskIamSigner")
    }
}

impl MskIamSigner {
    /// Starts fetching credentials from the default chain for the cluster at `brokers`
    /// (its region from the brokers' names, else the SDK's: `AWS_REGION`, the profile).
    pub fn start(brokers: &str) -> Self {
        Self::spawn(region_of_brokers(brokers), None)
    }

    /// A signer for `region` with credentials from `provider` (tests, or a caller with its
    /// own chain).
    pub fn with_provider(region: &str, provider: SharedCredentialsProvider) -> Self {
        Self::spawn(Some(region.to_owned()), Some(provider))
    }

    /// Starts the credentials thread ([`keep_credentials`]); one that cannot start is the
    /// reason every token is refused.
    fn spawn(region: Option<String>, provider: Option<SharedCredentialsProvider>) -> Self {
        let found: Arc<Shared> = Arc::default();
        let weak = Arc::downgrade(&found);
        let spawned = std::thread::Builder::new()
            .name("msk-iam-credentials".into())
            .spawn(move || keep_credentials(weak, region, provider));
        if let Err(err) = spawned {
            let mut state = found.0.lock().unwrap_or_else(PoisonError::into_inner);
            state.credentials = Some(Err(format!(
                "MSK IAM: cannot start the credentials thread: {err}"
            )));
        }
        Self { found }
    }

    /// Waits at most `timeout` for the region and the first credentials: an error says
    /// which is missing and how to provide it.
    pub fn ready(&self, timeout: Duration) -> Result<(), TokenError> {
        let deadline = Instant::now() + timeout;
        let (lock, changed) = &*self.found;
        let mut found = lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            match (&found.region, &found.credentials) {
                (Some(Err(err)), _) | (_, Some(Err(err))) => return Err(TokenError(err.clone())),
                (Some(Ok(_)), Some(Ok(_))) => return Ok(()),
                _ => {}
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(TokenError(format!(
                    "MSK IAM: no AWS credentials within {}s; check the chain (AWS_PROFILE, \
                     AWS_ACCESS_KEY_ID, the pod's IAM role)",
                    timeout.as_secs()
                )));
            };
            found = changed
                .wait_timeout(found, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A token signed now. Waits a little for the first credentials; after that it never
    /// blocks (it runs on librdkafka's polling threads).
    pub fn token(&self) -> Result<OAuthToken, TokenError> {
        self.ready(Duration::from_secs(10))?;
        let found = self.found.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (Some(Ok(region)), Some(Ok(credentials))) = (&found.region, &found.credentials) else {
            return Err(TokenError("MSK IAM: no credentials yet".into()));
        };
        let signed = token_at(region, credentials, SystemTime::now())?;
        Ok(OAuthToken {
            token: signed.token,
            // MSK takes the principal from the signature; librdkafka wants a name.
            principal_name: credentials.access_key_id().to_owned(),
            lifetime_ms: signed.expires_ms,
        })
    }
}

/// The credentials thread: resolves the region, then keeps fresh credentials in `found`
/// until the signer is dropped.
fn keep_credentials(
    found: Weak<Shared>,
    region: Option<String>,
    provider: Option<SharedCredentialsProvider>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            publish(&found, |f| {
                f.credentials = Some(Err(format!("MSK IAM: cannot start a runtime: {err}")));
            });
            return;
        }
    };
    runtime.block_on(async move {
        let (region, provider) = match provider {
            Some(provider) => (region, Some(provider)),
            None => {
                let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
                let region = region.or_else(|| sdk.region().map(ToString::to_string));
                (region, sdk.credentials_provider())
            }
        };
        let region = region.ok_or_else(|| {
            "MSK IAM needs the cluster's region: the brokers' names do not hold one \
             (…kafka.<region>.amazonaws.com); set AWS_REGION, e.g. AWS_REGION=eu-west-1"
                .to_owned()
        });
        let Some(provider) = provider else {
            publish(&found, |f| {
                f.region = Some(region);
                f.credentials = Some(Err("MSK IAM: the AWS SDK has no credentials chain".into()));
            });
            return;
        };
        if !publish(&found, |f| f.region = Some(region)) {
            return;
        }
        loop {
            let fetched = provider.provide_credentials().await;
            let wait = match &fetched {
                Ok(credentials) => credentials
                    .expiry()
                    .and_then(|e| e.duration_since(SystemTime::now()).ok())
                    .map_or(CREDENTIALS_REREAD, |left| {
                        left.saturating_sub(CREDENTIALS_MARGIN)
                            .clamp(Duration::from_secs(30), CREDENTIALS_REREAD)
                    }),
                Err(_) => CREDENTIALS_RETRY,
            };
            let keep = publish(&found, |f| match fetched {
                Ok(credentials) => f.credentials = Some(Ok(credentials)),
                Err(err) => {
                    // The SDK lists every provider it tried, one per line: kept on one.
                    let tried = crate::error::error_chain(&err)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ");
                    let reason = format!(
                        "MSK IAM found no AWS credentials ({tried}); give the pod an IAM role \
                         (IRSA on EKS), or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY"
                    );
                    match &f.credentials {
                        // Credentials still valid stay in use; the next fetch may succeed.
                        Some(Ok(old)) if old.expiry().is_none_or(|e| e > SystemTime::now()) => {
                            tracing::warn!(error = %reason, "AWS credentials not refreshed");
                        }
                        _ => f.credentials = Some(Err(reason)),
                    }
                }
            });
            if !keep {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    });
}

/// Updates what the signer sees and wakes its waiters; false once the signer is gone.
fn publish(found: &Weak<Shared>, update: impl FnOnce(&mut Found)) -> bool {
    let Some(found) = found.upgrade() else {
        return false;
    };
    let (lock, changed) = &*found;
    update(&mut lock.lock().unwrap_or_else(PoisonError::into_inner));
    changed.notify_all();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01T12:00:00Z.
    fn signing_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_126_400)
    }

    fn decoded(token: &str) -> String {
        String::from_utf8(URL_SAFE_NO_PAD.decode(token).unwrap()).unwrap()
    }

    /// The expected URLs were made by AWS's own signer (aws-msk-iam-sasl-signer-python
    /// 1.0.2 on botocore 1.44.8, its clock fixed at the same instant), the same example
    /// keys and region; only the `User-Agent` differs, and it is not signed.
    #[test]
    fn tokens_match_aws_signer_for_fixed_credentials_date_and_region() {
        let keys = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let signed = token_at("eu-west-1", &keys, signing_time()).unwrap();
        assert_eq!(
            decoded(&signed.token),
            "https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect\
             &X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIDEXAMPLE%2F20261201%2Feu-west-1%2Fkafka-cluster%2Faws4_request\
             &X-Amz-Date=20261201T120000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=18396fa637069271e21fa602f142234ffe62a2fbcfaee1f64f617c281457bf0d\
             &User-Agent=kafka-replicator%2F0.1.0"
        );
        // The signing time plus 900 s, in milliseconds, as AWS's signers report it.
        assert_eq!(signed.expires_ms, 1_796_127_300_000);
        assert!(!signed.token.contains('='), "base64url without padding");

        let session = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("SESSIONTOKEN/with+chars=".to_owned()),
            None,
            "test",
        );
        let signed = token_at("eu-west-1", &session, signing_time()).unwrap();
        assert_eq!(
            decoded(&signed.token),
            "https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect\
             &X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIDEXAMPLE%2F20261201%2Feu-west-1%2Fkafka-cluster%2Faws4_request\
             &X-Amz-Date=20261201T120000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
             &X-Amz-Security-Token=SESSIONTOKEN%2Fwith%2Bchars%3D\
             &X-Amz-Signature=37156f08f307ffd2b6e788962aec1aa774a2817eb0d5f91a11242ddf7dd97e17\
             &User-Agent=kafka-replicator%2F0.1.0"
        );
    }

    #[test]
    fn the_region_is_read_from_msk_broker_names() {
        assert_eq!(
            region_of_brokers("b-1.orders.ab12cd.c2.kafka.eu-west-1.amazonaws.com:9098").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of_brokers(
                "localhost:9092,boot-abc.c1.kafka-serverless.us-east-2.amazonaws.com:9098"
            )
            .as_deref(),
            Some("us-east-2")
        );
        assert_eq!(region_of_brokers("kafka.internal:9092"), None);
        assert_eq!(region_of_brokers("127.0.0.1:9098"), None);
    }

    #[test]
    fn a_signer_hands_out_tokens_from_its_provider() {
        let provider = SharedCredentialsProvider::new(Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ));
        let signer = MskIamSigner::with_provider("ap-south-1", provider);
        signer.ready(Duration::from_secs(10)).unwrap();
        let token = signer.token().unwrap();
        let url = decoded(&token.token);
        assert!(url.starts_with("https://kafka.ap-south-1.amazonaws.com/?Action="));
        assert!(url.contains("X-Amz-Credential=AKIDTEST%2F"));
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let left = token.lifetime_ms - now_ms;
        assert!(
            (890_000..=900_000).contains(&left),
            "a fresh token lives 900 s, this one {left} ms"
        );
    }

    #[test]
    fn no_credentials_is_one_line_saying_how_to_give_them() {
        #[derive(Debug)]
        struct Nothing;
        impl ProvideCredentials for Nothing {
            fn provide_credentials<'a>(
                &'a self,
            ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                    aws_credential_types::provider::error::CredentialsError::not_loaded(
                        "no providers in chain provided credentials",
                    ),
                ))
            }
        }
        let signer =
            MskIamSigner::with_provider("eu-west-1", SharedCredentialsProvider::new(Nothing));
        let err = signer.ready(Duration::from_secs(10)).unwrap_err().0;
        assert!(err.contains("MSK IAM found no AWS credentials"), "{err}");
        assert!(err.contains("IRSA"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(signer.token().is_err(), "no token without credentials");
    }
}
