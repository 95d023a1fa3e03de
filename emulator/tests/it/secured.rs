//! Secured Apache Kafka: one broker with a SASL_SSL listener (SCRAM-SHA-512) and an SSL
//! listener that requires client certificates, certificates made here. The stack reads
//! the source through the first and writes its copies through the second, each set up
//! only with the product's own Kafka properties.

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
    #[allow(dead_code)]
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
    password: String,
    tls: Certificates,
}

impl SecuredBroker {
    fn start() -> Self {
        let tls = certificates();
        let [plain, controller, scram, mtls] = [(); 4].map(|()| free_port());
        let extra = format!(
            "listeners=PLAINTEXT://127.0.0.1:{plain},CONTROLLER://127.0.0.1:{controller},\
             SASL_SSL://127.0.0.1:{scram},SSL://127.0.0.1:{mtls}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{scram},\
             SSL://127.0.0.1:{mtls}\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,\
             SASL_SSL:SASL_SSL,SSL:SSL\n\
             sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
             org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
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
    if common::apache_kafka_only(TEST).is_none() {
        return;
    }
    let broker = tokio::task::spawn_blocking(SecuredBroker::start)
        .await
        .expect("broker");
    let mut config = common::config();
    config.source_brokers = Some(broker.scram.clone());
    config.local_brokers = Some(broker.mtls.clone());
    config.events = Some(N);
    config.rate = 0;
    config.run_client = true;
    // One cluster on both ends: the copies go to their own topic.
    config.client.topic_prefix = Some("copy.".into());
    config.create_local_topic = false;
    config.pod.source.properties.kafka_properties =
        Some(broker.scram_properties(&broker.password));
    config.client.properties.kafka_properties = Some(broker.mtls_properties(&broker.tls.ca, true));
    let stack = common::start(config).await;
    let copies = format!("copy.{}", stack.info.topic);
    let copied = read_topic(&broker.plaintext, &copies, N as usize, Duration::from_secs(60))
        .await
        .expect("read copies");
    stack.stop().await;
    common::assert_exactly_once(TEST, &copied, N);
}
