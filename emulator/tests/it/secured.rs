//! Secured Apache Kafka: one broker with a SASL_SSL listener (SCRAM-SHA-512), an SSL
//! listener that requires client certificates, and a SASL_SSL listener for OAUTHBEARER
//! (Kafka's unsecured JWS validator, re-authentication enforced), certificates made here.
//! The stack reads the source through the first or the third and writes its copies
//! through the second, each set up only with the product's own Kafka properties.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use emulator::verify::read_topic;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

const USER: &str = "replicator";

/// A CA, the broker's certificate and a client certificate, as PEM files.
struct Certificates {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    /// The broker's PKCS#8 key followed by its certificate: a PEM keystore.
    broker: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A CA that signed nothing here.
    stranger_ca: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (params.self_signed(&key).expect("CA"), key)
}

fn signed(name: &str, sans: &[&str], ca: &(rcgen::Certificate, KeyPair)) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(sans).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.signed_by(&key, &ca.0, &ca.1).expect("signed");
    (cert.pem(), key.serialize_pem())
}

fn certificates() -> Certificates {
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let authority = ca("kafka-replicator test CA");
    let (broker_cert, broker_key) = signed("broker", &["127.0.0.1", "localhost"], &authority);
    let (client_cert, client_key) = signed("client", &[], &authority);
    Certificates {
        ca: write("ca.pem", &authority.0.pem()),
        broker: write("broker.pem", &format!("{broker_key}{broker_cert}")),
        client_cert: write("client.crt", &client_cert),
        client_key: write("client.key", &client_key),
        stranger_ca: write("stranger.pem", &ca("someone else").0.pem()),
        _dir: dir,
    }
}

/// A free TCP port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The broker, removed when dropped.
struct SecuredBroker {
    name: String,
    plaintext: String,
    scram: String,
    mtls: String,
    oauth: String,
    password: String,
    tls: Certificates,
}

impl SecuredBroker {
    /// The broker for `test`, started off the runtime; none where the suite runs without
    /// Apache Kafka.
    async fn for_test(test: &str) -> Option<Self> {
        common::apache_kafka_only(test)?;
        Some(
            tokio::task::spawn_blocking(Self::start)
                .await
                .expect("broker"),
        )
    }

    /// A stack copying `n` events at `rate` from `source` into `local`, two listeners of
    /// this broker: with one cluster on both ends the copies go to a topic of their own
    /// (`copy.` + the source topic).
    fn copying(source: &str, local: &str, n: u64, rate: u64) -> emulator::StackConfig {
        let mut config = common::config();
        config.source_brokers = Some(source.to_owned());
        config.local_brokers = Some(local.to_owned());
        config.events = Some(n);
        config.rate = rate;
        config.run_client = true;
        config.client.topic_prefix = Some("copy.".into());
        config.create_local_topic = false;
        config
    }

    fn start() -> Self {
        let tls = certificates();
        let [plain, controller, scram, mtls, oauth] = [(); 5].map(|()| free_port());
        // OAUTHBEARER sessions last as long as their token: a client whose token is not
        // renewed in time is cut off at its expiry.
        let extra = format!(
            "listeners=PLAINTEXT://127.0.0.1:{plain},CONTROLLER://127.0.0.1:{controller},\
             SASL_SSL://127.0.0.1:{scram},SSL://127.0.0.1:{mtls},OAUTH://127.0.0.1:{oauth}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{scram},\
             SSL://127.0.0.1:{mtls},OAUTH://127.0.0.1:{oauth}\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,\
             SASL_SSL:SASL_SSL,SSL:SSL,OAUTH:SASL_SSL\n\
             sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
             org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER\n\
             listener.name.oauth.oauthbearer.sasl.jaas.config=\
             org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required \
             unsecuredLoginStringClaim_sub=\"broker\";\n\
             listener.name.oauth.oauthbearer.connections.max.reauth.ms=60000\n\
             ssl.keystore.type=PEM\nssl.keystore.location={}\n\
             ssl.truststore.type=PEM\nssl.truststore.location={}\n\
             listener.name.ssl.ssl.client.auth=required\n",
            tls.broker.display(),
            tls.ca.display()
        );
        let name = common::unique("secured");
        let (plain_port, controller_port) = (plain.to_string(), controller.to_string());
        let plaintext = common::kafka_local_with(
            &["start", &name],
            &[
                ("KAFKA_LOCAL_PORT", &plain_port),
                ("KAFKA_LOCAL_CONTROLLER_PORT", &controller_port),
                ("KAFKA_LOCAL_EXTRA_PROPS", &extra),
            ],
        );
        let password = common::unique("scram-password");
        common::kafka_local(&[
            "run",
            "kafka.admin.ConfigCommand",
            "--bootstrap-server",
            &plaintext,
            "--alter",
            "--entity-type",
            "users",
            "--entity-name",
            USER,
            "--add-config",
            &format!("SCRAM-SHA-512=[password={password}]"),
        ]);
        Self {
            name,
            plaintext,
            scram: format!("127.0.0.1:{scram}"),
            mtls: format!("127.0.0.1:{mtls}"),
            oauth: format!("127.0.0.1:{oauth}"),
            password,
            tls,
        }
    }

    /// Properties for the SCRAM listener with `password`.
    fn scram_properties(&self, password: &str) -> String {
        format!(
            "security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512,sasl.username={USER},\
             sasl.password={password},ssl.ca.location={}",
            self.tls.ca.display()
        )
    }

    /// Properties for the OAUTHBEARER listener: unsecured tokens living `life_seconds`,
    /// made by the product (librdkafka makes only the first one itself).
    fn oauth_properties(&self, life_seconds: u32) -> String {
        format!(
            "security.protocol=SASL_SSL,sasl.mechanism=OAUTHBEARER,\
             enable.sasl.oauthbearer.unsecure.jwt=true,\
             sasl.oauthbearer.config=principal={USER} lifeSeconds={life_seconds},\
             ssl.ca.location={}",
            self.tls.ca.display()
        )
    }

    /// Properties for MSK IAM against the OAUTHBEARER listener, which cannot validate
    /// its tokens.
    fn msk_iam_properties(&self) -> String {
        format!(
            "security.protocol=SASL_SSL,sasl.mechanism=AWS_MSK_IAM,ssl.ca.location={}",
            self.tls.ca.display()
        )
    }

    /// Properties for the mTLS listener, trusting `ca`, with or without the client's
    /// certificate.
    fn mtls_properties(&self, ca: &Path, with_certificate: bool) -> String {
        let mut properties = format!("security.protocol=SSL,ssl.ca.location={}", ca.display());
        if with_certificate {
            properties.push_str(&format!(
                ",ssl.certificate.location={},ssl.key.location={}",
                self.tls.client_cert.display(),
                self.tls.client_key.display()
            ));
        }
        properties
    }
}

impl Drop for SecuredBroker {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(format!(
                "{}/../infra/kafka-local/kafka-local.sh",
                env!("CARGO_MANIFEST_DIR")
            ))
            .args(["remove", &self.name])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_from_scram_to_mtls_exactly_once_on_apache_kafka() {
    const TEST: &str = "replicates_from_scram_to_mtls_exactly_once_on_apache_kafka";
    const N: u64 = 500;
    let Some(broker) = SecuredBroker::for_test(TEST).await else {
        return;
    };
    let mut config = SecuredBroker::copying(&broker.scram, &broker.mtls, N, 0);
    config.pod.source.properties.kafka_properties = Some(broker.scram_properties(&broker.password));
    config.client.properties.kafka_properties = Some(broker.mtls_properties(&broker.tls.ca, true));
    let stack = common::start(config).await;
    let copies = format!("copy.{}", stack.info.topic);
    let copied = read_topic(
        &broker.plaintext,
        &copies,
        N as usize,
        Duration::from_secs(60),
    )
    .await
    .expect("read copies");
    stack.stop().await;
    common::assert_exactly_once(TEST, &copied, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshed_oauthbearer_tokens_keep_replication_going_exactly_once_on_apache_kafka() {
    const TEST: &str =
        "refreshed_oauthbearer_tokens_keep_replication_going_exactly_once_on_apache_kafka";
    // 600 events at 30/s: 20 s, four lifetimes of a 5 s token. The broker cuts off any
    // connection whose token expired, so the stream carries on only if every client's
    // token is renewed through the product's refresh callback.
    const N: u64 = 600;
    const LIFE_SECONDS: u32 = 5;
    let Some(broker) = SecuredBroker::for_test(TEST).await else {
        return;
    };
    let mut config = SecuredBroker::copying(&broker.oauth, &broker.plaintext, N, 30);
    config.pod.source.properties.kafka_properties = Some(broker.oauth_properties(LIFE_SECONDS));
    let stack = common::start(config).await;
    let copies = format!("copy.{}", stack.info.topic);
    common::wait_for_copies(&broker.plaintext, &copies, 0).await;
    let streaming = shared::kafka::oauth::tokens_issued();
    let copied = read_topic(
        &broker.plaintext,
        &copies,
        N as usize,
        Duration::from_secs(90),
    )
    .await
    .expect("read copies");
    let renewed = shared::kafka::oauth::tokens_issued() - streaming;
    stack.stop().await;
    common::assert_exactly_once(TEST, &copied, N);
    eprintln!("{TEST}: {renewed} tokens made while the copies streamed");
    // The pod's group consumer, its reader and the demo producer each live through
    // several lifetimes; each renewal is one token.
    assert!(
        renewed >= 4,
        "tokens were renewed while streaming, not only made at start: {renewed}"
    );
}

/// What the emulator binary says when it stops at start with MSK IAM against the
/// OAUTHBEARER listener, given the AWS variables `aws`.
async fn msk_iam_start(broker: &SecuredBroker, aws: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_emulator"));
    command
        .env("KAFKA_BROKERS", &broker.oauth)
        .env("LOCAL_KAFKA_BROKERS", &broker.plaintext)
        .env("KAFKA_PROPERTIES", broker.msk_iam_properties())
        .env("PORT", "0")
        .env_remove("API_KEY")
        // Only the variables given: no profile files, no instance metadata.
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .kill_on_drop(true);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ] {
        command.env_remove(var);
    }
    command.envs(aws.iter().copied());
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the emulator stops")
        .expect("the emulator runs");
    assert_eq!(output.status.code(), Some(1), "a failed start exits 1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // From the last line that starts with "error: " to the end.
    let said = stderr
        .match_indices("error: ")
        .map(|(at, _)| at)
        .filter(|at| *at == 0 || stderr[..*at].ends_with('\n'))
        .last()
        .map(|at| stderr[at..].trim_end().to_owned())
        .unwrap_or_else(|| panic!("an error line: {stderr}"));
    assert_eq!(said.lines().count(), 1, "one line: {said}");
    said
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msk_iam_signs_its_token_or_says_what_it_lacks_on_apache_kafka() {
    const TEST: &str = "msk_iam_signs_its_token_or_says_what_it_lacks_on_apache_kafka";
    let Some(broker) = SecuredBroker::for_test(TEST).await else {
        return;
    };
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    let keys = [
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", secret),
    ];
    // A signed token reaches the broker, which (not being MSK) refuses it.
    let mut with_region = keys.to_vec();
    with_region.push(("AWS_REGION", "eu-west-1"));
    let presented = msk_iam_start(&broker, &with_region).await;
    let no_credentials = msk_iam_start(&broker, &[("AWS_REGION", "eu-west-1")]).await;
    let no_region = msk_iam_start(&broker, &keys).await;
    for (case, said, wanted) in [
        (
            "token presented",
            &presented,
            "the source Kafka refused the emulator",
        ),
        (
            "no credentials",
            &no_credentials,
            "MSK IAM found no AWS credentials",
        ),
        ("no region", &no_region, "set AWS_REGION"),
    ] {
        eprintln!("{TEST}: {case}: {said}");
        assert!(said.contains(wanted), "{case}: {said}");
        assert!(!said.contains(secret), "{case}: a secret shown: {said}");
    }
    assert!(
        presented.contains(&broker.oauth) && presented.contains("uthentication"),
        "names the broker and what failed: {presented}"
    );
}

/// What the pod says at start against the SCRAM listener with `properties`, if it stops.
async fn pod_error(broker: &SecuredBroker, properties: String) -> Option<String> {
    let mut config = consumer::Config::default();
    config.source.brokers = Some(broker.scram.clone());
    config.source.topics = vec!["orders".into()];
    config.source.properties.kafka_properties = Some(properties);
    config.consumer_addr = shared::internal::ConsumerAddr::Tcp("127.0.0.1:0".into());
    consumer::ConsumerPod::bind(config)
        .await
        .err()
        .map(|e| e.to_string())
}

/// What the client says at start against the mTLS listener with `properties`, if it stops.
async fn client_error(broker: &SecuredBroker, properties: String) -> Option<String> {
    let mut config = client::Config {
        server_url: Some("http://127.0.0.1:9".into()),
        api_key: Some("unused-key-0123456789".into()),
        kafka_brokers: Some(broker.mtls.clone()),
        ..client::Config::default()
    };
    config.properties.kafka_properties = Some(properties);
    let replicator = client::Replicator::new(&config).expect("client");
    let stop = tokio_util::sync::CancellationToken::new();
    let stopper = stop.clone();
    // A client that got in would run until stopped.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(15)).await;
        stopper.cancel();
    });
    replicator.run(stop).await.err().map(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_certificates_stop_the_start_with_one_clear_line_on_apache_kafka() {
    const TEST: &str =
        "wrong_credentials_and_certificates_stop_the_start_with_one_clear_line_on_apache_kafka";
    let Some(broker) = SecuredBroker::for_test(TEST).await else {
        return;
    };
    let wrong_password = pod_error(&broker, broker.scram_properties("not-it")).await;
    let stranger = format!(
        "security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512,sasl.username={USER},\
         sasl.password={},ssl.ca.location={}",
        broker.password,
        broker.tls.stranger_ca.display()
    );
    let untrusted = pod_error(&broker, stranger).await;
    let no_certificate = client_error(&broker, broker.mtls_properties(&broker.tls.ca, false)).await;
    // The emulator checks its clusters as the pod does, and refuses an unknown property.
    let mut config = common::config();
    config.source_brokers = Some(broker.scram.clone());
    config.local_brokers = Some(broker.mtls.clone());
    config.pod.source.properties.kafka_properties = Some(broker.scram_properties("not-it"));
    let emulator_refused = emulator::Stack::start(config)
        .await
        .err()
        .map(|e| e.to_string());
    let mut config = common::config();
    config.source_brokers = Some(broker.scram.clone());
    config.pod.source.properties.kafka_properties = Some("no.such.property=1".into());
    let unknown = emulator::Stack::start(config)
        .await
        .err()
        .map(|e| e.to_string());
    for (case, said, wanted) in [
        (
            "wrong password",
            &wrong_password,
            "the source Kafka refused the pod",
        ),
        (
            "untrusted CA",
            &untrusted,
            "the source Kafka refused the pod",
        ),
        (
            "no client certificate",
            &no_certificate,
            "local Kafka refused the client",
        ),
        (
            "emulator, wrong password",
            &emulator_refused,
            "the source Kafka refused",
        ),
        ("unknown property", &unknown, "no.such.property"),
    ] {
        eprintln!("{TEST}: {case}: {said:?}");
        let said = said
            .as_deref()
            .unwrap_or_else(|| panic!("{case}: the start went on"));
        assert!(said.contains(wanted), "{case}: {said}");
        assert_eq!(said.lines().count(), 1, "{case}: {said}");
        assert!(
            !said.contains(&broker.password),
            "{case}: a secret shown: {said}"
        );
    }
    let wrong_password = wrong_password.unwrap_or_default();
    assert!(
        wrong_password.contains(&broker.scram) && wrong_password.contains("uthentication"),
        "names the broker and what failed: {wrong_password}"
    );
    let untrusted = untrusted.unwrap_or_default();
    assert!(untrusted.contains("certificate"), "{untrusted}");
}
