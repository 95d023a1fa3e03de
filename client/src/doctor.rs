//! `client doctor`: checks every hop from the configuration to the state topic, in the
//! order the client needs them, and says for each `ok` or what is wrong and how to fix it.
//! A check whose hop before it failed is not run (it could only fail the same way).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use shared::config::{Validate, url_host};
use shared::kafka::{Cluster, TokenContext, topic_partitions};

use crate::config::Config;

/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a broker that did not answer is watched for a refusal of the credentials.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the transactional test may take: a coordinator that cannot be made never answers.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15);

/// One hop, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It works; what was seen.
    Ok(String),
    /// It does not: what is wrong, then how to fix it.
    Failed { problem: String, fix: String },
    /// Not checked: a hop before it failed.
    NotChecked,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Outcome::Ok(seen) => write!(f, "ok    {}: {seen}", self.name),
            Outcome::Failed { problem, fix } => {
                write!(f, "FAIL  {}: {problem}; fix: {fix}", self.name)
            }
            Outcome::NotChecked => write!(
                f,
                "--    {}: not checked (a check before it failed)",
                self.name
            ),
        }
    }
}

fn failed(problem: impl Into<String>, fix: impl Into<String>) -> Outcome {
    Outcome::Failed {
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// The checks, in order.
pub const CHECKS: &[&str] = &[
    "config",
    "server address",
    "API key",
    "server ready",
    "local Kafka",
    "transactions",
    "state topic",
];

/// Runs every check in order, handing each to `report` as it is done; true when all pass.
pub async fn run(config: &Config, mut report: impl FnMut(&Check)) -> bool {
    // One HTTP client for the server's checks.
    let http = http();
    let mut all_ok = true;
    let mut server_ok = true;
    let mut local_ok = true;
    let mut local = None;
    for &name in CHECKS {
        let outcome = match name {
            "config" => match check_config(config) {
                Ok(cluster) => {
                    local = Some(cluster);
                    Outcome::Ok(format!(
                        "server {}, local Kafka {}",
                        config.server_url.as_deref().unwrap_or_default(),
                        config.kafka_brokers.as_deref().unwrap_or_default()
                    ))
                }
                Err(outcome) => {
                    (server_ok, local_ok) = (false, false);
                    outcome
                }
            },
            "server address" | "API key" | "server ready" if !server_ok => Outcome::NotChecked,
            "server address" => server_address(config, &http).await,
            "API key" => api_key(config, &http).await,
            "server ready" => server_ready(config, &http).await,
            _ if !local_ok => Outcome::NotChecked,
            _ => {
                let Some(cluster) = local.clone() else {
                    continue;
                };
                let (config, name) = (config.clone(), name);
                tokio::task::spawn_blocking(move || match name {
                    "local Kafka" => local_kafka(&cluster),
                    "transactions" => transactions(&cluster, &config),
                    _ => state_topic(&cluster, &config.state_topic),
                })
                .await
                .unwrap_or_else(|e| failed(format!("the check stopped: {e}"), "run it again"))
            }
        };
        let passed = matches!(outcome, Outcome::Ok(_));
        if !passed {
            all_ok = false;
            // Later server checks go through the address; Kafka checks through the broker.
            if name == "server address" {
                server_ok = false;
            }
            if name == "local Kafka" {
                local_ok = false;
            }
        }
        report(&Check { name, outcome });
    }
    all_ok
}

fn check_config(config: &Config) -> Result<Cluster, Outcome> {
    config.validate().map_err(|err| {
        failed(
            err.to_string(),
            "set it in the env-file (--config, or .env), the environment or a flag; client.env.example lists them all",
        )
    })?;
    let properties = config
        .kafka_properties()
        .map_err(|err| failed(err.to_string(), "correct KAFKA_PROPERTIES"))?;
    Ok(Cluster::new(
        config.kafka_brokers.as_deref().unwrap_or_default(),
        properties,
    ))
}

/// The URL a route of the API is at.
fn route(config: &Config, path: &str) -> String {
    format!(
        "{}{}{path}",
        config
            .server_url
            .as_deref()
            .unwrap_or_default()
            .trim()
            .trim_end_matches('/'),
        config.api_prefix
    )
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CHECK_TIMEOUT)
        .timeout(CHECK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// The host resolves, something answers, and its TLS certificate verifies.
async fn server_address(config: &Config, http: &reqwest::Client) -> Outcome {
    let url = config.server_url.as_deref().unwrap_or_default().trim();
    let https = url.starts_with("https://");
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = url_host(rest).trim_start_matches('[').trim_end_matches(']');
    let port = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .unwrap_or(if https { 443 } else { 80 });
    let resolved = tokio::time::timeout(CHECK_TIMEOUT, tokio::net::lookup_host((host, port))).await;
    let addresses: Vec<std::net::SocketAddr> = match resolved {
        Ok(Ok(found)) => found.collect(),
        Ok(Err(err)) => {
            return failed(
                format!("SERVER_URL's host {host} does not resolve: {err}"),
                "check the name in SERVER_URL; on a company network, is the VPN up?",
            );
        }
        Err(_) => {
            return failed(
                format!("resolving {host} took over {CHECK_TIMEOUT:?}"),
                "check this machine's DNS (and the VPN)",
            );
        }
    };
    let health = route(config, "/health");
    match http.get(&health).send().await {
        Ok(answer) if answer.status().is_success() => Outcome::Ok(format!(
            "{host} is {}; {}",
            addresses
                .first()
                .map_or_else(|| "?".to_owned(), |a| a.ip().to_string()),
            if https {
                "TLS verifies"
            } else {
                "plain HTTP (no TLS)"
            }
        )),
        Ok(answer) => failed(
            format!("GET {health} answered {}", answer.status()),
            format!(
                "SERVER_URL must be the API's scheme://host:port and API_PREFIX its path prefix (now {:?})",
                config.api_prefix
            ),
        ),
        Err(err) => {
            let chain = shared::error::error_chain(&err);
            let lower = chain.to_ascii_lowercase();
            if https
                && (lower.contains("certificate")
                    || lower.contains("tls")
                    || lower.contains("handshake"))
            {
                failed(
                    format!("TLS to {host}:{port} does not verify: {chain}"),
                    format!(
                        "the server's certificate must name {host} and be signed by a CA this machine trusts (a proxy that inspects TLS needs its CA installed)"
                    ),
                )
            } else if err.is_timeout() {
                failed(
                    format!("{host}:{port} did not answer within {CHECK_TIMEOUT:?}"),
                    "a firewall may drop the connection; check the port and that the server runs",
                )
            } else {
                failed(
                    format!("cannot connect to {host}:{port}: {chain}"),
                    "check that the server runs and SERVER_URL's port is right",
                )
            }
        }
    }
}

/// The key is accepted: a request for events is not refused as unauthorized.
async fn api_key(config: &Config, http: &reqwest::Client) -> Outcome {
    let events = route(config, "/events");
    let answer = http
        .get(&events)
        .header("x-api-key", config.api_key.as_deref().unwrap_or_default())
        .query(&[("cursor", "latest"), ("limit", "1"), ("wait_ms", "0")])
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(err) => {
            return failed(
                format!("GET {events}: {}", shared::error::error_chain(&err)),
                "run doctor again; the server answered /health a moment ago",
            );
        }
    };
    let status = answer.status();
    let message = answer
        .json::<shared::error::ErrorBody>()
        .await
        .map(|b| b.error.message)
        .unwrap_or_default();
    match status.as_u16() {
        401 => failed(
            format!("the server refused API_KEY (401): {message}"),
            "copy the key again from the server's API_KEY (or its Secrets Manager secret); a rotated-out key stops working",
        ),
        403 => failed(
            format!("the key may not read what the client asks for (403): {message}"),
            "ask for a key scoped to the topics this laptop copies",
        ),
        429 => failed(
            format!("the key is over its rate limit (429): {message}"),
            "another process may use the same key; give each client its own",
        ),
        // Accepted, whatever the pod behind says (the next check asks it).
        _ if status.is_success() || status.is_server_error() => Outcome::Ok("accepted".into()),
        _ => failed(
            format!("GET {events} answered {status}: {message}"),
            "check SERVER_URL and API_PREFIX",
        ),
    }
}

/// The server reaches its consumer pod, which consumes.
async fn server_ready(config: &Config, http: &reqwest::Client) -> Outcome {
    let ready = route(config, "/ready");
    match http.get(&ready).send().await {
        Ok(answer) if answer.status().is_success() => {
            Outcome::Ok("the consumer pod is consuming".into())
        }
        Ok(answer) => {
            let status = answer.status();
            let body = answer.text().await.unwrap_or_default();
            failed(
                format!("the server is up but not ready ({status}): {}", body.trim()),
                "the server side must fix this: its consumer pod is down or cannot reach the source Kafka (see the pod's logs); the client waits meanwhile",
            )
        }
        Err(err) => failed(
            format!("GET {ready}: {}", shared::error::error_chain(&err)),
            "run doctor again",
        ),
    }
}

/// A broker answers, and accepts the client's credentials.
fn local_kafka(cluster: &Cluster) -> Outcome {
    let consumer: BaseConsumer<TokenContext> =
        match kafka_client(cluster, |_| {}, BaseConsumer::client) {
            Ok(consumer) => consumer,
            Err(failed) => return failed,
        };
    match consumer.client().fetch_metadata(None, CHECK_TIMEOUT) {
        Ok(metadata) => Outcome::Ok(format!(
            "{} broker(s) answer at {}",
            metadata.brokers().len(),
            cluster.brokers()
        )),
        // No answer: refused credentials or certificates, or nothing there.
        Err(err) => match shared::kafka::check_access(cluster, REFUSAL_TIMEOUT) {
            Err(refused) => failed(
                format!("local Kafka refused the client: {refused}"),
                "check the credentials and certificates in KAFKA_PROPERTIES",
            ),
            Ok(()) => failed(
                format!(
                    "no broker at KAFKA_BROKERS={} answered within {CHECK_TIMEOUT:?}: {err}",
                    cluster.brokers()
                ),
                "start local Kafka, or set KAFKA_BROKERS to its bootstrap address (host:port)",
            ),
        },
    }
}

/// A Kafka client of `cluster` with `settings`, handed its first token (`client` reaches
/// its librdkafka handle); or the failed check.
fn kafka_client<K>(
    cluster: &Cluster,
    settings: impl FnOnce(&mut rdkafka::ClientConfig),
    client: impl Fn(&K) -> &rdkafka::client::Client<TokenContext>,
) -> Result<K, Outcome>
where
    K: rdkafka::config::FromClientConfigAndContext<TokenContext>,
{
    let made: K = cluster
        .config(settings)
        .create_with_context(TokenContext::of(cluster))
        .map_err(|err| {
            failed(
                format!("cannot make a Kafka client: {err}"),
                "correct KAFKA_PROPERTIES",
            )
        })?;
    cluster
        .tokens()
        .prime(client(&made))
        .map_err(|err| failed(err.to_string(), "check KAFKA_PROPERTIES"))?;
    Ok(made)
}

/// Transactions can be used: the coordinator's log can be made with the brokers there
/// are, and a transactional producer initialises and commits.
fn transactions(cluster: &Cluster, config: &Config) -> Outcome {
    if let Some(problem) = transaction_log_too_replicated(cluster) {
        return problem;
    }
    let transactional_id = format!("{}.doctor", config.client_id);
    let settings = |c: &mut rdkafka::ClientConfig| {
        c.set("transactional.id", &transactional_id)
            .set("transaction.timeout.ms", "10000");
    };
    let producer: BaseProducer<TokenContext> =
        match kafka_client(cluster, settings, BaseProducer::client) {
            Ok(producer) => producer,
            Err(failed) => return failed,
        };
    let tried = producer
        .init_transactions(TRANSACTION_TIMEOUT)
        .and_then(|()| producer.begin_transaction())
        .and_then(|()| producer.commit_transaction(TRANSACTION_TIMEOUT));
    match tried {
        Ok(()) => Outcome::Ok("a transaction commits".into()),
        Err(err) => failed(
            format!("a transactional producer could not commit: {err}"),
            "local Kafka must allow transactions: on a one-broker Kafka set transaction.state.log.replication.factor=1 and transaction.state.log.min.isr=1 in server.properties, and the principal needs the transactional-id ACLs",
        ),
    }
}

/// The classic first-run failure, told precisely: the transaction log needs more
/// replicas than there are brokers, so no coordinator can ever be made.
fn transaction_log_too_replicated(cluster: &Cluster) -> Option<Outcome> {
    let admin: AdminClient<TokenContext> =
        kafka_client(cluster, |_| {}, AdminClient::inner).ok()?;
    let metadata = admin.inner().fetch_metadata(None, CHECK_TIMEOUT).ok()?;
    let brokers = metadata.brokers().len();
    // Once the log exists, it was made: its replication is what it is.
    if !topic_partitions(&metadata, "__transaction_state").is_empty() {
        return None;
    }
    let broker = metadata.brokers().first()?.id();
    let options = AdminOptions::new().request_timeout(Some(CHECK_TIMEOUT));
    let described =
        block_on(admin.describe_configs(&[ResourceSpecifier::Broker(broker)], &options))?.ok()?;
    let config = described.into_iter().next()?.ok()?;
    let wanted: usize = config
        .get("transaction.state.log.replication.factor")?
        .value
        .as_deref()?
        .parse()
        .ok()?;
    (wanted > brokers).then(|| {
        failed(
            format!(
                "local Kafka has {brokers} broker(s) but transaction.state.log.replication.factor={wanted}: it can never make its transaction log, so no transaction can start"
            ),
            format!(
                "set transaction.state.log.replication.factor={brokers} and transaction.state.log.min.isr={brokers} in the broker's server.properties and restart it"
            ),
        )
    })
}

/// Runs an admin future from a blocking check, bounded.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .ok()?;
    runtime.block_on(async { tokio::time::timeout(CHECK_TIMEOUT, future).await.ok() })
}

/// The state topic, if it exists, is compacted and has one partition.
fn state_topic(cluster: &Cluster, topic: &str) -> Outcome {
    let no_auto_create = |c: &mut rdkafka::ClientConfig| {
        c.set("allow.auto.create.topics", "false");
    };
    let admin: AdminClient<TokenContext> =
        match kafka_client(cluster, no_auto_create, AdminClient::inner) {
            Ok(admin) => admin,
            Err(failed) => return failed,
        };
    let metadata = match admin.inner().fetch_metadata(Some(topic), CHECK_TIMEOUT) {
        Ok(metadata) => metadata,
        Err(err) => return failed(format!("cannot look up {topic}: {err}"), "run doctor again"),
    };
    let partitions = topic_partitions(&metadata, topic).len();
    if partitions == 0 {
        return Outcome::Ok(format!(
            "{topic} does not exist yet; the client creates it, compacted, with one partition"
        ));
    }
    if partitions != 1 {
        return failed(
            format!("{topic} has {partitions} partitions; the client's position must live in one"),
            format!(
                "set STATE_TOPIC to a new name (the client then starts from START_FROM), or, with no client running, recreate {topic} with one partition and cleanup.policy=compact"
            ),
        );
    }
    let options = AdminOptions::new().request_timeout(Some(CHECK_TIMEOUT));
    let policy = block_on(admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &options))
        .and_then(Result::ok)
        .and_then(|d| d.into_iter().next())
        .and_then(Result::ok)
        .and_then(|c| c.get("cleanup.policy").and_then(|e| e.value.clone()));
    match policy {
        Some(policy) if policy.split(',').any(|p| p.trim() == "compact") => {
            Outcome::Ok(format!("{topic}: one partition, cleanup.policy={policy}"))
        }
        Some(policy) => failed(
            format!(
                "{topic} has cleanup.policy={policy}: retention would delete the saved position, and the client would copy again from START_FROM"
            ),
            format!(
                "kafka-configs.sh --bootstrap-server {} --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact",
                cluster.brokers()
            ),
        ),
        None => failed(
            format!("cannot read {topic}'s cleanup.policy"),
            "grant DescribeConfigs on the topic, or check it by hand: it must be compact",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_says_ok_or_what_is_wrong_and_the_fix() {
        let ok = Check {
            name: "API key",
            outcome: Outcome::Ok("accepted".into()),
        };
        assert_eq!(ok.to_string(), "ok    API key: accepted");
        let bad = Check {
            name: "transactions",
            outcome: failed("no coordinator", "set the factor to 1"),
        };
        assert_eq!(
            bad.to_string(),
            "FAIL  transactions: no coordinator; fix: set the factor to 1"
        );
        let skipped = Check {
            name: "state topic",
            outcome: Outcome::NotChecked,
        };
        assert!(
            skipped
                .to_string()
                .starts_with("--    state topic: not checked")
        );
    }

    #[tokio::test]
    async fn a_config_that_does_not_parse_fails_first_and_nothing_is_contacted() {
        let mut lines = Vec::new();
        let passed = run(&Config::default(), |c| lines.push(c.clone())).await;
        assert!(!passed);
        assert_eq!(lines.len(), CHECKS.len());
        assert!(
            matches!(&lines[0].outcome, Outcome::Failed { problem, .. } if problem.contains("SERVER_URL")),
            "{:?}",
            lines[0]
        );
        assert!(
            lines[1..].iter().all(|c| c.outcome == Outcome::NotChecked),
            "{lines:?}"
        );
    }
}
