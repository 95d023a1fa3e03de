//! librdkafka properties a user adds for one Kafka cluster (TLS, SASL, or anything else
//! librdkafka takes): from a Java `.properties` file, a comma- or newline-separated list and
//! repeatable flags, each layer winning over the one before. They are checked at start
//! against what the product sets itself and against librdkafka's own list of properties,
//! and never shown with their secret values.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

use crate::config::ConfigError;

/// Properties for one cluster, in the order they apply; a key appears once, with the value
/// of the layer that set it last.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties {
    entries: Vec<Property>,
}

#[derive(Clone, PartialEq, Eq)]
struct Property {
    key: String,
    value: String,
    /// Where it was set: the variable or flag, for error messages.
    from: &'static str,
}

/// What the product sets itself on a property, so a user may not change it.
#[derive(Debug, Clone, Copy)]
pub enum Guard {
    /// The product sets it from one of its own variables.
    SetBy {
        key: &'static str,
        variable: &'static str,
    },
    /// The product sets it; another value would break what the product promises.
    Fixed {
        key: &'static str,
        values: &'static [&'static str],
        why: &'static str,
    },
    /// A value the product cannot work with (yet).
    Unsupported {
        key: &'static str,
        value: &'static str,
        why: &'static str,
    },
}

impl Guard {
    fn key(&self) -> &'static str {
        match self {
            Self::SetBy { key, .. } | Self::Fixed { key, .. } | Self::Unsupported { key, .. } => {
                key
            }
        }
    }

    /// Why `value` is refused for its key, if it is.
    fn refusal(&self, value: &str) -> Option<String> {
        match *self {
            Self::SetBy { key, variable } => {
                Some(format!("{key} is set from {variable}; set that instead"))
            }
            Self::Fixed { key, values, why } => {
                (!values.iter().any(|v| v.eq_ignore_ascii_case(value)))
                    .then(|| format!("{key} must be {}: {why}", values.join(" or ")))
            }
            Self::Unsupported {
                value: refused,
                why,
                ..
            } => refused.eq_ignore_ascii_case(value).then(|| why.to_owned()),
        }
    }
}

/// What every client refuses, besides its own guards: the brokers come from
/// `KAFKA_BROKERS`.
const COMMON_GUARDS: &[Guard] = &[Guard::SetBy {
    key: "bootstrap.servers",
    variable: "KAFKA_BROKERS",
}];

/// librdkafka's other names for properties the guards know, mapped to the name the guards
/// use, so a guard cannot be passed by spelling its property another way.
const ALIASES: &[(&str, &str)] = &[
    ("metadata.broker.list", "bootstrap.servers"),
    ("request.required.acks", "acks"),
    ("sasl.mechanisms", "sasl.mechanism"),
];

/// The name a property is kept under: its guarded name when it is an alias of one.
fn canonical(key: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map_or(key, |(_, name)| name)
}

fn is_msk_iam(mechanism: &str) -> bool {
    mechanism.eq_ignore_ascii_case(super::oauth::AWS_MSK_IAM)
}

/// Whether a property's value is a secret, never to be shown: anything named like a
/// password, a secret or a key.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key", "oauthbearer.config"]
        .iter()
        .any(|word| key.contains(word))
}

impl KafkaProperties {
    /// `key=value` pairs separated by commas or newlines, as `KAFKA_PROPERTIES` holds them.
    pub fn parse_list(text: &str, from: &'static str) -> Result<Self, ConfigError> {
        let mut properties = Self::default();
        let pairs = text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty());
        for (at, pair) in pairs.enumerate() {
            properties.set_pair(pair, from).map_err(|reason| ConfigError::Invalid {
                var: from,
                reason: format!(
                    "item {} {reason} (a value holding a comma goes in a file or a --kafka-property flag)",
                    at + 1
                ),
                example: "security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512",
            })?;
        }
        Ok(properties)
    }

    /// A Java-style `.properties` text: `key=value` or `key: value` lines, `#` and `!`
    /// comments, a trailing `\` continuing a line.
    pub fn parse_properties(text: &str, from: &'static str) -> Result<Self, ConfigError> {
        let mut properties = Self::default();
        let mut logical = String::new();
        let mut number = 0;
        let set = |properties: &mut Self, pair: &str, number: usize| {
            properties
                .set_pair(pair, from)
                .map_err(|reason| ConfigError::Invalid {
                    var: from,
                    reason: format!("line {number} {reason}"),
                    example: "security.protocol=SSL",
                })
        };
        for line in text.lines() {
            number += 1;
            let line = line.trim_start();
            if logical.is_empty() && (line.is_empty() || line.starts_with(['#', '!'])) {
                continue;
            }
            match line.strip_suffix('\\') {
                Some(start) => logical.push_str(start),
                None => {
                    logical.push_str(line);
                    let pair = std::mem::take(&mut logical);
                    let pair = match pair.find(['=', ':']) {
                        Some(at) if pair.as_bytes()[at] == b':' => {
                            format!("{}={}", &pair[..at], &pair[at + 1..])
                        }
                        _ => pair,
                    };
                    set(&mut properties, &pair, number)?;
                }
            }
        }
        if !logical.is_empty() {
            set(&mut properties, &logical, number)?;
        }
        Ok(properties)
    }

    /// Reads a `.properties` file.
    pub fn read_file(path: &Path, from: &'static str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Invalid {
            var: from,
            reason: format!("cannot read {}: {err}", path.display()),
            example: "/etc/kafka-replicator/kafka.properties",
        })?;
        Self::parse_properties(&text, from)
    }

    /// Adds one `key=value`; the error says what is wrong without repeating the text,
    /// which may hold a secret.
    fn set_pair(&mut self, pair: &str, from: &'static str) -> Result<(), &'static str> {
        let (key, value) = pair.split_once('=').ok_or("is not KEY=VALUE")?;
        let key = key.trim();
        if key.is_empty() {
            return Err("has no name before its '='");
        }
        self.set(key, value.trim(), from);
        Ok(())
    }

    fn set(&mut self, key: &str, value: &str, from: &'static str) {
        let key = canonical(key);
        self.entries.retain(|p| p.key != key);
        self.entries.push(Property {
            key: key.to_owned(),
            value: value.to_owned(),
            from,
        });
    }

    /// These properties with `later`'s on top.
    pub fn then(mut self, later: Self) -> Self {
        for p in later.entries {
            self.set(&p.key, &p.value, p.from);
        }
        self
    }

    /// The value set for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether these properties ask for MSK IAM.
    pub fn msk_iam(&self) -> bool {
        self.get("sasl.mechanism").is_some_and(is_msk_iam)
    }

    /// Sets every property on `config`, over what the product set before. MSK IAM is
    /// OAUTHBEARER to librdkafka, with tokens the product signs ([`super::OAuthTokens`]).
    pub fn apply(&self, config: &mut ClientConfig) {
        for p in &self.entries {
            let value = if p.key == "sasl.mechanism" && is_msk_iam(&p.value) {
                "OAUTHBEARER"
            } else {
                &p.value
            };
            config.set(&p.key, value);
        }
    }

    /// Refuses a property the product sets itself or cannot work with ([`Guard`]s: the
    /// common ones and `guards`), and any property librdkafka does not know or does not
    /// take the value of, naming it.
    pub fn check(&self, guards: &[Guard]) -> Result<(), ConfigError> {
        for p in &self.entries {
            let refusal = COMMON_GUARDS
                .iter()
                .chain(guards)
                .filter(|g| g.key() == p.key)
                .find_map(|g| g.refusal(&p.value));
            if let Some(reason) = refusal {
                return Err(ConfigError::Invalid {
                    var: p.from,
                    reason,
                    example: example_for(p.from),
                });
            }
            if p.key == "sasl.mechanism" && is_msk_iam(&p.value) {
                let protocol = self.get("security.protocol").unwrap_or("PLAINTEXT");
                if !protocol.eq_ignore_ascii_case("SASL_SSL") {
                    return Err(ConfigError::Invalid {
                        var: p.from,
                        reason: format!(
                            "sasl.mechanism=AWS_MSK_IAM needs security.protocol=SASL_SSL \
                             (MSK's IAM listener, port 9098, is TLS), not {protocol}"
                        ),
                        example: "security.protocol=SASL_SSL,sasl.mechanism=AWS_MSK_IAM",
                    });
                }
            }
        }
        for p in &self.entries {
            let mut config = ClientConfig::new();
            config.set(&p.key, &p.value);
            if let Err(err) = config.create_native_config() {
                let reason = match err {
                    _ if is_secret(&p.key) => {
                        format!("librdkafka refuses the value of {}", p.key)
                    }
                    KafkaError::ClientConfig(_, said, _, _) => format!("librdkafka says: {said}"),
                    other => format!("librdkafka refuses {}: {other}", p.key),
                };
                return Err(ConfigError::Invalid {
                    var: p.from,
                    reason,
                    example: example_for(p.from),
                });
            }
        }
        Ok(())
    }
}

/// What a good value of `from` looks like, for error messages.
fn example_for(from: &str) -> &'static str {
    if from.ends_with("_FILE") {
        "/etc/kafka-replicator/kafka.properties"
    } else {
        "security.protocol=SASL_SSL"
    }
}

/// Keys in order, secret values redacted.
impl fmt::Display for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if is_secret(&p.key) {
                write!(f, "{}=<redacted>", p.key)?;
            } else {
                write!(f, "{}={}", p.key, p.value)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KafkaProperties({self})")
    }
}

/// Loads the three layers: the file, then the list, then the flags.
fn load(
    file: Option<&Path>,
    file_var: &'static str,
    list: Option<&str>,
    list_var: &'static str,
    flags: &[String],
    flag: &'static str,
) -> Result<KafkaProperties, ConfigError> {
    let mut properties = match file {
        Some(path) => KafkaProperties::read_file(path, file_var)?,
        None => KafkaProperties::default(),
    };
    if let Some(list) = list {
        properties = properties.then(KafkaProperties::parse_list(list, list_var)?);
    }
    for pair in flags {
        let mut one = KafkaProperties::default();
        one.set_pair(pair, flag)
            .map_err(|reason| ConfigError::Invalid {
                var: flag,
                reason: format!("a value {reason}"),
                example: "security.protocol=SASL_SSL",
            })?;
        properties = properties.then(one);
    }
    Ok(properties)
}

/// The three layers as `Debug` shows them: the flags only counted and the list only
/// said to be there, since either may hold a secret; the file's path as it is.
fn debug_layers(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    fields: [&str; 3],
    flags: &[String],
    list: Option<&String>,
    file: Option<&PathBuf>,
) -> fmt::Result {
    f.debug_struct(name)
        .field(fields[0], &format!("{} value(s), redacted", flags.len()))
        .field(fields[1], &list.map(|_| "<redacted>"))
        .field(fields[2], &file)
        .finish()
}

/// librdkafka properties for the Kafka a binary talks to (the pod's source, the client's
/// local Kafka): `KAFKA_PROPERTIES_FILE`, then `KAFKA_PROPERTIES`, then each
/// `--kafka-property`, later ones winning.
#[derive(Clone, Default, Args)]
pub struct KafkaPropertyArgs {
    /// A librdkafka property, KEY=VALUE, as kcat's -X (repeatable); wins over
    /// KAFKA_PROPERTIES and KAFKA_PROPERTIES_FILE.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    pub kafka_property: Vec<String>,
    /// librdkafka properties, KEY=VALUE separated by commas or newlines, such as
    /// security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512; wins over the file.
    #[arg(
        long = "kafka-properties",
        env = "KAFKA_PROPERTIES",
        hide_env_values = true,
        value_name = "LIST"
    )]
    pub kafka_properties: Option<String>,
    /// A Java-style .properties file of librdkafka properties (as mounted from a
    /// Kubernetes Secret).
    #[arg(long = "kafka-properties-file", env = "KAFKA_PROPERTIES_FILE")]
    pub kafka_properties_file: Option<PathBuf>,
}

impl KafkaPropertyArgs {
    /// The properties, in the order they apply.
    pub fn load(&self) -> Result<KafkaProperties, ConfigError> {
        load(
            self.kafka_properties_file.as_deref(),
            "KAFKA_PROPERTIES_FILE",
            self.kafka_properties.as_deref(),
            "KAFKA_PROPERTIES",
            &self.kafka_property,
            "--kafka-property",
        )
    }
}

impl KafkaPropertyArgs {
    /// The same layers for a child process that reads them as the binaries do: its
    /// `KAFKA_PROPERTIES_FILE` and `KAFKA_PROPERTIES` (`None`: removed, so nothing of the
    /// parent's own environment leaks in) and its `--kafka-property` arguments.
    pub fn for_child(&self) -> ([(&'static str, Option<String>); 2], Vec<String>) {
        let file = self
            .kafka_properties_file
            .as_ref()
            .map(|p| p.display().to_string());
        let flags = self
            .kafka_property
            .iter()
            .map(|pair| format!("--kafka-property={pair}"))
            .collect();
        (
            [
                ("KAFKA_PROPERTIES_FILE", file),
                ("KAFKA_PROPERTIES", self.kafka_properties.clone()),
            ],
            flags,
        )
    }
}

impl fmt::Debug for KafkaPropertyArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_layers(
            f,
            "KafkaPropertyArgs",
            [
                "kafka_property",
                "kafka_properties",
                "kafka_properties_file",
            ],
            &self.kafka_property,
            self.kafka_properties.as_ref(),
            self.kafka_properties_file.as_ref(),
        )
    }
}

/// The emulator's properties for its local cluster: `LOCAL_KAFKA_PROPERTIES_FILE`, then
/// `LOCAL_KAFKA_PROPERTIES`, then each `--local-kafka-property`.
#[derive(Clone, Default, Args)]
pub struct LocalKafkaPropertyArgs {
    /// A librdkafka property for the local Kafka, KEY=VALUE (repeatable); wins over
    /// LOCAL_KAFKA_PROPERTIES and LOCAL_KAFKA_PROPERTIES_FILE.
    #[arg(long = "local-kafka-property", value_name = "KEY=VALUE")]
    pub local_kafka_property: Vec<String>,
    /// librdkafka properties for the local Kafka, KEY=VALUE separated by commas or
    /// newlines; wins over the file.
    #[arg(
        long = "local-kafka-properties",
        env = "LOCAL_KAFKA_PROPERTIES",
        hide_env_values = true,
        value_name = "LIST"
    )]
    pub local_kafka_properties: Option<String>,
    /// A Java-style .properties file of librdkafka properties for the local Kafka.
    #[arg(
        long = "local-kafka-properties-file",
        env = "LOCAL_KAFKA_PROPERTIES_FILE"
    )]
    pub local_kafka_properties_file: Option<PathBuf>,
}

impl From<LocalKafkaPropertyArgs> for KafkaPropertyArgs {
    /// The same layers, as the client takes them for its local Kafka.
    fn from(local: LocalKafkaPropertyArgs) -> Self {
        Self {
            kafka_property: local.local_kafka_property,
            kafka_properties: local.local_kafka_properties,
            kafka_properties_file: local.local_kafka_properties_file,
        }
    }
}

impl LocalKafkaPropertyArgs {
    /// The properties, in the order they apply.
    pub fn load(&self) -> Result<KafkaProperties, ConfigError> {
        load(
            self.local_kafka_properties_file.as_deref(),
            "LOCAL_KAFKA_PROPERTIES_FILE",
            self.local_kafka_properties.as_deref(),
            "LOCAL_KAFKA_PROPERTIES",
            &self.local_kafka_property,
            "--local-kafka-property",
        )
    }
}

impl fmt::Debug for LocalKafkaPropertyArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_layers(
            f,
            "LocalKafkaPropertyArgs",
            [
                "local_kafka_property",
                "local_kafka_properties",
                "local_kafka_properties_file",
            ],
            &self.local_kafka_property,
            self.local_kafka_properties.as_ref(),
            self.local_kafka_properties_file.as_ref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_commas_and_newlines() {
        let p = KafkaProperties::parse_list(
            "security.protocol=SASL_SSL,\n sasl.mechanism = SCRAM-SHA-512\nsasl.password=a=b",
            "KAFKA_PROPERTIES",
        )
        .unwrap();
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(p.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(
            p.get("sasl.password"),
            Some("a=b"),
            "only the first '=' splits"
        );
        let err = KafkaProperties::parse_list("nonsense", "KAFKA_PROPERTIES").unwrap_err();
        assert!(
            err.to_string().starts_with("KAFKA_PROPERTIES is invalid"),
            "{err}"
        );
    }

    #[test]
    fn properties_files_read_as_java_reads_them() {
        let text = "# MSK over TLS\n! also a comment\n\nsecurity.protocol=SSL\n\
                    ssl.ca.location: /etc/ca.pem\nsasl.username = long\\\n  name\n";
        let p = KafkaProperties::parse_properties(text, "KAFKA_PROPERTIES_FILE").unwrap();
        assert_eq!(p.get("security.protocol"), Some("SSL"));
        assert_eq!(p.get("ssl.ca.location"), Some("/etc/ca.pem"));
        assert_eq!(p.get("sasl.username"), Some("longname"));
    }

    #[test]
    fn flags_win_over_the_list_and_the_list_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kafka.properties");
        std::fs::write(
            &file,
            "client.id=file\nsocket.timeout.ms=1000\nlinger.ms=7\n",
        )
        .unwrap();
        let args = KafkaPropertyArgs {
            kafka_property: vec!["client.id=flag".into()],
            kafka_properties: Some("client.id=list,socket.timeout.ms=2000".into()),
            kafka_properties_file: Some(file),
        };
        let p = args.load().unwrap();
        assert_eq!(p.get("client.id"), Some("flag"));
        assert_eq!(p.get("socket.timeout.ms"), Some("2000"));
        assert_eq!(p.get("linger.ms"), Some("7"));
    }

    #[test]
    fn what_the_product_sets_and_unknown_properties_are_refused_by_name() {
        let guards = [Guard::Fixed {
            key: "enable.idempotence",
            values: &["true"],
            why: "exactly-once needs it",
        }];
        let check = |list: &str| {
            KafkaProperties::parse_list(list, "KAFKA_PROPERTIES")
                .unwrap()
                .check(&guards)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            check("security.protocol=SSL,enable.idempotence=TRUE"),
            Ok(())
        );
        let err = check("bootstrap.servers=x:9092").unwrap_err();
        assert!(err.contains("set from KAFKA_BROKERS"), "{err}");
        let err = check("enable.idempotence=false").unwrap_err();
        assert!(err.contains("must be true: exactly-once needs it"), "{err}");
        let err = check("no.such.property=1").unwrap_err();
        assert!(err.contains("no.such.property"), "{err}");
        let err = check("security.protocol=PIGEON").unwrap_err();
        assert!(err.contains("security.protocol"), "{err}");
        // librdkafka's other names for a guarded property are guarded too.
        let err = check("metadata.broker.list=x:9092").unwrap_err();
        assert!(err.contains("set from KAFKA_BROKERS"), "{err}");
        // MSK IAM is TLS only; the mechanism is found under librdkafka's other name too.
        let err = check("sasl.mechanism=AWS_MSK_IAM").unwrap_err();
        assert!(err.contains("needs security.protocol=SASL_SSL"), "{err}");
        assert!(err.contains("not PLAINTEXT"), "{err}");
        let err = check("security.protocol=SSL,sasl.mechanisms=aws_msk_iam").unwrap_err();
        assert!(err.contains("not SSL"), "{err}");
        assert_eq!(
            check("security.protocol=SASL_SSL,sasl.mechanism=AWS_MSK_IAM"),
            Ok(())
        );
        let acks = [Guard::Fixed {
            key: "acks",
            values: &["all", "-1"],
            why: "every replica",
        }];
        let err = KafkaProperties::parse_list("request.required.acks=1", "KAFKA_PROPERTIES")
            .unwrap()
            .check(&acks)
            .unwrap_err()
            .to_string();
        assert!(err.contains("acks must be all or -1"), "{err}");
    }

    #[test]
    fn secrets_never_show() {
        let p = KafkaProperties::parse_list(
            "sasl.username=alice,sasl.password=hunter2,ssl.key.password=k3y",
            "KAFKA_PROPERTIES",
        )
        .unwrap();
        let shown = format!("{p} {p:?}");
        assert!(shown.contains("sasl.username=alice"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("k3y"),
            "{shown}"
        );
        let args = KafkaPropertyArgs {
            kafka_property: vec!["sasl.password=hunter2".into()],
            kafka_properties: Some("sasl.password=hunter2".into()),
            kafka_properties_file: None,
        };
        assert!(!format!("{args:?}").contains("hunter2"));
        // A password holding a comma splits the list: the error names the item, not its text.
        let err = KafkaProperties::parse_list("sasl.password=abc,def", "KAFKA_PROPERTIES")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("item 2 is not KEY=VALUE") && !err.contains("def"),
            "{err}"
        );
    }
}
