//! The deployment files under `infra/`, checked offline with the tools a platform team
//! would run: hadolint and the hardening rules on the Dockerfile, `kubectl kustomize` and
//! `kubernetes-validate --strict` on each overlay plus the hardening rules on every
//! Deployment, and cfn-lint on the Lambda SAM template.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_yaml::Value;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn run_ok(command: &mut Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_sam_template_passes_cfn_lint() {
    const TEST: &str = "the_sam_template_passes_cfn_lint";
    let template = repo_file("infra/lambda/template.yaml");
    let text = std::fs::read_to_string(&template).expect("template");
    for required in [
        "AWS::Serverless::HttpApi",
        "ThrottlingRateLimit",
        "AWSSecretsManagerGetSecretValuePolicy",
        "VpcConfig",
        "ReservedConcurrentExecutions",
        "RetentionInDays",
        "Runtime: provided.al2023",
    ] {
        assert!(text.contains(required), "the template sets {required}");
    }
    let doc: Value = serde_yaml::from_str(&text).expect("template YAML");
    let variables = &doc["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"];
    // `!Sub "{{resolve:...}}"` parses as a tagged string; as_str() looks through the tag.
    let token = variables["INTERNAL_TOKEN"].as_str().unwrap_or_default();
    assert!(
        token.starts_with("{{resolve:secretsmanager:") && token.ends_with("}}"),
        "INTERNAL_TOKEN comes from a {{{{resolve:secretsmanager:...}}}} dynamic reference, \
         never a literal or a parameter: {token:?}"
    );
    assert!(
        token.contains("${InternalTokenSecretArn}"),
        "INTERNAL_TOKEN resolves the secret named by InternalTokenSecretArn: {token:?}"
    );
    assert!(
        doc["Parameters"]["InternalTokenSecretArn"].is_mapping(),
        "the template takes InternalTokenSecretArn"
    );
    let Some(cfn_lint) = common::tool(TEST, "CFN_LINT", "cfn-lint") else {
        return;
    };
    run_ok(Command::new(cfn_lint).arg(&template), "cfn-lint");
}

#[test]
fn the_deployment_files_default_to_the_binaries_rate_limits() {
    use handlers::config::{
        DEFAULT_RATE_LIMIT_KEY_MAX, DEFAULT_RATE_LIMIT_MAX, DEFAULT_RATE_LIMIT_WINDOW_SECS,
    };
    let wanted = [
        (
            "RATE_LIMIT_MAX",
            "RateLimitMax",
            u64::from(DEFAULT_RATE_LIMIT_MAX),
        ),
        (
            "RATE_LIMIT_KEY_MAX",
            "RateLimitKeyMax",
            u64::from(DEFAULT_RATE_LIMIT_KEY_MAX),
        ),
        (
            "RATE_LIMIT_WINDOW_SECS",
            "RateLimitWindowSecs",
            DEFAULT_RATE_LIMIT_WINDOW_SECS,
        ),
    ];
    let config_map: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_file("infra/k8s/base/configmap.yaml")).expect("ConfigMap"),
    )
    .expect("ConfigMap YAML");
    let template: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_file("infra/lambda/template.yaml")).expect("template"),
    )
    .expect("template YAML");
    for (var, parameter, default) in wanted {
        assert_eq!(
            config_map["data"][var].as_str(),
            Some(default.to_string().as_str()),
            "infra/k8s/base/configmap.yaml: {var} is the binaries' default"
        );
        assert_eq!(
            template["Parameters"][parameter]["Default"].as_u64(),
            Some(default),
            "infra/lambda/template.yaml: {parameter} defaults to the binaries' {var}"
        );
    }
}

/// The instructions of each stage of a Dockerfile (continuation lines joined).
fn dockerfile_stages(text: &str) -> Vec<(String, Vec<String>)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for instruction in joined {
        if instruction.starts_with("FROM ") {
            let name = instruction
                .split_whitespace()
                .skip_while(|w| !w.eq_ignore_ascii_case("AS"))
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            stages.push((name, vec![instruction]));
        } else if let Some((_, body)) = stages.last_mut() {
            body.push(instruction);
        }
    }
    stages
}

#[test]
fn the_dockerfile_follows_the_image_rules() {
    const TEST: &str = "the_dockerfile_follows_the_image_rules";
    let path = repo_file("infra/docker/Dockerfile");
    let text = std::fs::read_to_string(&path).expect("Dockerfile");
    if let Some(hadolint) = common::tool(TEST, "HADOLINT", "hadolint") {
        run_ok(Command::new(hadolint).arg(&path), "hadolint");
    }
    let stages = dockerfile_stages(&text);
    let stage = |name: &str| -> &Vec<String> {
        &stages
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("a stage named {name}"))
            .1
    };
    let has = |body: &[String], prefix: &str| body.iter().any(|i| i.starts_with(prefix));
    let names: Vec<&str> = stages.iter().map(|(n, _)| n.as_str()).collect();
    for (name, body) in &stages {
        let from = &body[0];
        let image = from.split_whitespace().nth(1).expect("image");
        assert!(
            names.contains(&image) || (image.contains(':') && !image.ends_with(":latest")),
            "stage {name}: base image {image} is pinned"
        );
        for install in body.iter().filter(|i| i.contains("apt-get install")) {
            assert!(install.contains("--no-install-recommends"), "{install}");
            assert!(install.contains("rm -rf /var/lib/apt/lists"), "{install}");
        }
        assert!(!has(body, "ADD "), "stage {name}: COPY, not ADD");
    }
    assert!(
        stage("builder")
            .iter()
            .any(|i| i.contains("--mount=type=cache"))
    );
    let runtime = stage("runtime");
    assert!(runtime[0].contains("distroless"), "minimal runtime base");
    let user = runtime
        .iter()
        .find(|i| i.starts_with("USER "))
        .expect("the runtime sets USER");
    assert!(
        !user.contains("root") && !user.ends_with(" 0") && !user.contains(" 0:"),
        "{user}"
    );
    assert!(
        runtime
            .iter()
            .any(|i| i.starts_with("LABEL ") && i.contains("org.opencontainers.image.source")),
        "the images say where their source is"
    );
    for target in ["consumer", "handlers"] {
        let body = stage(target);
        assert!(
            body[0].starts_with("FROM runtime "),
            "{target} builds on runtime"
        );
        assert!(
            has(body, "COPY --from=builder"),
            "{target} copies the binary"
        );
        assert!(has(body, "HEALTHCHECK "), "{target} declares a HEALTHCHECK");
        assert!(
            has(body, "ENTRYPOINT [\""),
            "{target}: exec-form ENTRYPOINT"
        );
        assert!(has(body, "EXPOSE "), "{target} says its port");
        assert!(!has(body, "USER root"), "{target} stays non-root");
    }
    let ignore = std::fs::read_to_string(repo_file(".dockerignore")).expect(".dockerignore");
    for entry in ["target/", ".git/", ".env"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore has {entry}"
        );
    }
}

/// Every document `kubectl kustomize` renders for an overlay.
fn render(kubectl: &std::path::Path, overlay: &std::path::Path) -> Vec<Value> {
    let text = run_ok(
        Command::new(kubectl).arg("kustomize").arg(overlay),
        &format!("kubectl kustomize {}", overlay.display()),
    );
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("rendered YAML parses"))
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// The container named `wanted` in a Deployment's pod template.
fn container<'a>(deployment: &'a Value, wanted: &str) -> Option<&'a Value> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()?
        .iter()
        .find(|c| c["name"].as_str() == Some(wanted))
}

/// The `env` entry of a container that sets `var`.
fn env_entry<'a>(container: &'a Value, var: &str) -> Option<&'a Value> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(var))
}

/// The internal socket's wiring in a Deployment running the consumer or the handlers:
/// INTERNAL_TOKEN from the Secret (required), and, for the consumer, the listen address
/// for a container and probes that carry the token.
fn assert_internal_socket(overlay: &str, deployment: &Value) {
    let what = format!("{overlay}: Deployment {}", name(deployment));
    let workloads: Vec<(&str, &Value)> = ["consumer", "handlers"]
        .into_iter()
        .filter_map(|w| container(deployment, w).map(|c| (w, c)))
        .collect();
    assert!(
        !workloads.is_empty(),
        "{what} runs the consumer or the handlers (a container named so)"
    );
    for (workload, found) in workloads {
        let c = format!("{what} container {workload}");
        let token = env_entry(found, "INTERNAL_TOKEN")
            .unwrap_or_else(|| panic!("{c}: sets INTERNAL_TOKEN"));
        assert!(
            token["value"].is_null(),
            "{c}: INTERNAL_TOKEN is never a literal in the manifests"
        );
        let secret = &token["valueFrom"]["secretKeyRef"];
        assert_eq!(
            secret["name"].as_str(),
            Some("kafka-replicator-secrets"),
            "{c}: INTERNAL_TOKEN from the Secret kafka-replicator-secrets"
        );
        assert_eq!(
            secret["key"].as_str(),
            Some("internal-token"),
            "{c}: INTERNAL_TOKEN from the Secret's key internal-token"
        );
        assert_ne!(
            secret["optional"],
            Value::Bool(true),
            "{c}: INTERNAL_TOKEN is required (a pod without it must not start)"
        );
        if workload != "consumer" {
            continue;
        }
        assert_eq!(
            env_entry(found, "CONSUMER_ADDR").and_then(|e| e["value"].as_str()),
            Some("0.0.0.0:7070"),
            "{c}: listens on all addresses (the binary's default is loopback)"
        );
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let command: Vec<&str> = found[probe]["exec"]["command"]
                .as_sequence()
                .map(|words| words.iter().filter_map(|w| w.as_str()).collect())
                .unwrap_or_default();
            assert_eq!(
                command,
                ["/usr/local/bin/consumer", "healthcheck"],
                "{c}: {probe} is exec `consumer healthcheck`, which sends the token \
                 (an HTTP probe of /internal/v1/status gets 401)"
            );
        }
    }
}

/// The Service the Lambda function reaches the consumer pod through: an internal Network
/// Load Balancer (AWS Load Balancer Controller, ip targets) on the consumer's port 7070,
/// open to the listed source ranges only.
fn assert_internal_nlb(overlay: &str, service: &Value) {
    let what = format!("{overlay}: Service {}", name(service));
    let annotations = &service["metadata"]["annotations"];
    for (annotation, value) in [
        (
            "service.beta.kubernetes.io/aws-load-balancer-type",
            "external",
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type",
            "ip",
        ),
        (
            "service.beta.kubernetes.io/aws-load-balancer-scheme",
            "internal",
        ),
    ] {
        assert_eq!(
            annotations[annotation].as_str(),
            Some(value),
            "{what}: {annotation}: {value}"
        );
    }
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/component"].as_str(),
        Some("consumer"),
        "{what} selects the consumer pod"
    );
    let ports = service["spec"]["ports"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    assert!(
        ports.iter().any(|p| p["port"].as_u64() == Some(7070)),
        "{what}: serves port 7070"
    );
    let sources = service["spec"]["loadBalancerSourceRanges"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    assert!(
        !sources.is_empty()
            && sources
                .iter()
                .all(|r| r.as_str().is_some_and(|cidr| cidr != "0.0.0.0/0")),
        "{what}: loadBalancerSourceRanges admits the Lambda subnets only"
    );
}

/// The hardening rules every Deployment must meet.
fn assert_hardened(overlay: &str, deployment: &Value) {
    let what = format!("{overlay}: Deployment {}", name(deployment));
    let pod = &deployment["spec"]["template"]["spec"];
    let pod_security = &pod["securityContext"];
    assert_eq!(
        pod_security["runAsNonRoot"],
        Value::Bool(true),
        "{what}: runAsNonRoot"
    );
    assert_eq!(
        pod_security["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault"),
        "{what}: seccomp RuntimeDefault"
    );
    let containers = pod["containers"].as_sequence().expect("containers");
    assert!(!containers.is_empty(), "{what}: has containers");
    for container in containers {
        let c = format!(
            "{what} container {}",
            container["name"].as_str().unwrap_or("?")
        );
        let security = &container["securityContext"];
        assert_eq!(
            security["readOnlyRootFilesystem"],
            Value::Bool(true),
            "{c}: read-only root"
        );
        assert_eq!(
            security["allowPrivilegeEscalation"],
            Value::Bool(false),
            "{c}: no escalation"
        );
        let dropped = security["capabilities"]["drop"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        assert!(
            dropped.iter().any(|d| d.as_str() == Some("ALL")),
            "{c}: drops ALL capabilities"
        );
        for probe in ["livenessProbe", "readinessProbe"] {
            assert!(container[probe].is_mapping(), "{c}: has a {probe}");
        }
        for bound in ["requests", "limits"] {
            let resources = &container["resources"][bound];
            assert!(
                resources["cpu"].as_str().is_some() || resources["cpu"].is_number(),
                "{c}: cpu {bound}"
            );
            assert!(
                resources["memory"].as_str().is_some(),
                "{c}: memory {bound}"
            );
        }
        let image = container["image"].as_str().unwrap_or_default();
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "{c}: image {image} has a version tag"
        );
    }
}

/// The pod's egress to Kafka opens exactly the listener ports it can use: plaintext 9092,
/// TLS 9094, SASL/SCRAM 9096, IAM 9098.
fn assert_kafka_egress(overlay: &str, policies: Vec<&Value>) {
    let kafka_ports: Vec<Vec<i64>> = policies
        .iter()
        .flat_map(|p| p["spec"]["egress"].as_sequence().into_iter().flatten())
        .map(|rule| {
            rule["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_i64())
                .collect::<Vec<i64>>()
        })
        .filter(|ports| ports.iter().any(|p| (9092..=9098).contains(p)))
        .collect();
    assert!(
        !kafka_ports.is_empty(),
        "{overlay}: an egress rule to Kafka"
    );
    for ports in kafka_ports {
        assert_eq!(
            ports,
            [9092, 9094, 9096, 9098],
            "{overlay}: Kafka egress ports"
        );
    }
}

/// `KAFKA_PROPERTIES_FILE` names a file in a read-only mount of `secret`.
fn assert_properties_from_secret(overlay: &str, deployment: &Value, secret: &str) {
    let consumer = container(deployment, "consumer").expect("consumer container");
    let file = env_entry(consumer, "KAFKA_PROPERTIES_FILE")
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("{overlay}: KAFKA_PROPERTIES_FILE is set"));
    let mount = consumer["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|dir| file.starts_with(&format!("{dir}/")))
        })
        .unwrap_or_else(|| panic!("{overlay}: {file} is in a mounted volume"));
    assert_eq!(
        mount["readOnly"], true,
        "{overlay}: the properties mount is read-only"
    );
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("{overlay}: the mount's volume"));
    assert_eq!(
        volume["secret"]["secretName"], secret,
        "{overlay}: the properties, password included, come from the Secret {secret}"
    );
}

/// The source over MSK IAM: brokers on the IAM listener, properties from the ConfigMap
/// that the pod's own checks accept, and an IAM role for the pod's service account.
fn assert_msk_iam(overlay: &str, docs: &[Value], consumer: &Value) {
    let config = docs
        .iter()
        .find(|d| kind(d) == "ConfigMap" && name(d) == "kafka-replicator-config")
        .unwrap_or_else(|| panic!("{overlay}: the ConfigMap"));
    let brokers = config["data"]["KAFKA_BROKERS"].as_str().unwrap_or_default();
    assert!(
        !brokers.is_empty() && brokers.split(',').all(|b| b.ends_with(":9098")),
        "{overlay}: MSK's IAM listener is 9098: {brokers}"
    );
    let list = config["data"]["KAFKA_PROPERTIES"]
        .as_str()
        .unwrap_or_else(|| panic!("{overlay}: KAFKA_PROPERTIES in the ConfigMap"));
    let properties = shared::kafka::KafkaProperties::parse_list(list, "KAFKA_PROPERTIES")
        .unwrap_or_else(|e| panic!("{overlay}: {e}"));
    properties
        .check(consumer::config::SOURCE_GUARDS)
        .unwrap_or_else(|e| panic!("{overlay}: the pod would refuse its properties: {e}"));
    assert!(
        properties.msk_iam(),
        "{overlay}: sasl.mechanism=AWS_MSK_IAM"
    );
    assert_eq!(
        shared::kafka::msk_iam::region_of_brokers(brokers).as_deref(),
        Some("eu-west-1"),
        "{overlay}: the region comes from the broker names"
    );
    let entry = env_entry(
        container(consumer, "consumer").expect("consumer container"),
        "KAFKA_PROPERTIES",
    )
    .unwrap_or_else(|| panic!("{overlay}: the pod reads KAFKA_PROPERTIES"));
    assert_eq!(
        entry["valueFrom"]["configMapKeyRef"]["key"], "KAFKA_PROPERTIES",
        "{overlay}"
    );
    let account = consumer["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or_default();
    let sa = docs
        .iter()
        .find(|d| kind(d) == "ServiceAccount" && name(d) == account)
        .unwrap_or_else(|| panic!("{overlay}: the pod's ServiceAccount {account}"));
    assert!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            .as_str()
            .is_some_and(|arn| arn.starts_with("arn:aws:iam::")),
        "{overlay}: IRSA gives the pod an IAM role"
    );
}

#[test]
fn each_kubernetes_overlay_renders_validates_and_is_hardened() {
    const TEST: &str = "each_kubernetes_overlay_renders_validates_and_is_hardened";
    let (Some(kubectl), Some(validate)) = (
        common::tool(TEST, "KUBECTL", "kubectl"),
        common::tool(TEST, "KUBERNETES_VALIDATE", "kubernetes-validate"),
    ) else {
        return;
    };
    let overlays: Vec<PathBuf> = std::fs::read_dir(repo_file("infra/k8s/overlays"))
        .expect("infra/k8s/overlays")
        .map(|e| e.expect("entry").path())
        .collect();
    let names: Vec<String> = overlays
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    for wanted in ["eks", "aks", "eks-lambda"] {
        assert!(names.iter().any(|n| n == wanted), "an {wanted} overlay");
    }
    let dir = tempfile::tempdir().expect("dir");
    for (overlay, label) in overlays.iter().zip(&names) {
        let docs = render(&kubectl, overlay);
        // Core kinds are checked against the Kubernetes schemas; custom resources (Istio,
        // Prometheus operator) have no schema there, and were parsed above.
        let core: Vec<&Value> = docs
            .iter()
            .filter(|d| {
                let api = d["apiVersion"].as_str().unwrap_or_default();
                !api.contains("istio.io") && !api.contains("monitoring.coreos.com")
            })
            .collect();
        let file = dir.path().join(format!("{label}.yaml"));
        let text: Vec<String> = core
            .iter()
            .map(|d| serde_yaml::to_string(d).expect("YAML"))
            .collect();
        std::fs::write(&file, text.join("---\n")).expect("write");
        run_ok(
            Command::new(&validate)
                .args(["--strict", "--quiet"])
                .arg(&file),
            &format!("kubernetes-validate --strict ({label})"),
        );

        let of_kind = |k: &'static str| docs.iter().filter(move |d| kind(d) == k);
        // eks-lambda: the public API runs on AWS Lambda (infra/lambda); only the consumer
        // pod is in the cluster, behind an internal NLB.
        let lambda_api = label.as_str() == "eks-lambda";
        let deployments: Vec<&Value> = of_kind("Deployment").collect();
        if lambda_api {
            assert_eq!(
                deployments.len(),
                1,
                "{label}: the consumer Deployment only (the API runs on AWS Lambda)"
            );
        } else {
            assert_eq!(
                deployments.len(),
                2,
                "{label}: consumer and handlers Deployments"
            );
        }
        for deployment in &deployments {
            assert_hardened(label, deployment);
            assert_internal_socket(label, deployment);
        }
        assert_kafka_egress(label, of_kind("NetworkPolicy").collect());
        let consumer_deployment = deployments
            .iter()
            .find(|d| container(d, "consumer").is_some())
            .expect("consumer");
        match label.as_str() {
            "aks" => {
                assert_properties_from_secret(label, consumer_deployment, "kafka-replicator-kafka")
            }
            "eks" => assert_msk_iam(label, &docs, consumer_deployment),
            _ => {}
        }
        assert!(
            deployments
                .iter()
                .any(|d| container(d, "consumer").is_some()),
            "{label}: a consumer Deployment"
        );
        assert_eq!(
            deployments
                .iter()
                .any(|d| container(d, "handlers").is_some()),
            !lambda_api,
            "{label}: a handlers Deployment exactly when the API does not run on Lambda"
        );
        let required: &[&'static str] = if lambda_api {
            &["NetworkPolicy", "ConfigMap", "ServiceAccount"]
        } else {
            &[
                "HorizontalPodAutoscaler",
                "PodDisruptionBudget",
                "NetworkPolicy",
                "ConfigMap",
                "ServiceAccount",
                "Gateway",
                "VirtualService",
                "DestinationRule",
                "PeerAuthentication",
                "AuthorizationPolicy",
            ]
        };
        for &k in required {
            assert!(of_kind(k).next().is_some(), "{label}: has a {k}");
        }
        if !lambda_api {
            assert_stream_route(label, of_kind("VirtualService").collect());
        }
        for service in of_kind("Service") {
            let kind = service["spec"]["type"].as_str().unwrap_or("ClusterIP");
            if lambda_api && kind == "LoadBalancer" {
                assert_internal_nlb(label, service);
                continue;
            }
            assert_eq!(
                kind,
                "ClusterIP",
                "{label}: Service {} stays inside",
                name(service)
            );
        }
        if lambda_api {
            assert!(
                of_kind("Service").any(|s| s["spec"]["type"].as_str() == Some("LoadBalancer")),
                "{label}: a LoadBalancer Service (internal NLB) for the Lambda function"
            );
            let handlers: Vec<String> = docs
                .iter()
                .filter(|d| {
                    d["metadata"]["labels"]["app.kubernetes.io/component"].as_str()
                        == Some("handlers")
                        || name(d) == "kafka-replicator-handlers"
                })
                .map(|d| format!("{} {}", kind(d), name(d)))
                .collect();
            assert!(
                handlers.is_empty(),
                "{label}: nothing of the in-cluster handlers is left: {handlers:?}"
            );
            let admits_ip_block = of_kind("NetworkPolicy")
                .filter(|p| {
                    p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"].as_str()
                        == Some("consumer")
                })
                .flat_map(|p| {
                    p["spec"]["ingress"]
                        .as_sequence()
                        .cloned()
                        .unwrap_or_default()
                })
                .any(|rule| {
                    let from_ip_block = rule["from"].as_sequence().is_some_and(|peers| {
                        peers.iter().any(|peer| {
                            peer["ipBlock"]["cidr"]
                                .as_str()
                                .is_some_and(|cidr| cidr != "0.0.0.0/0")
                        })
                    });
                    let to_7070 = rule["ports"].as_sequence().is_some_and(|ports| {
                        ports.iter().any(|port| port["port"].as_u64() == Some(7070))
                    });
                    from_ip_block && to_7070
                });
            assert!(
                admits_ip_block,
                "{label}: a NetworkPolicy admits the Lambda subnets (an ipBlock) to the \
                 consumer's port 7070"
            );
            // The NLB is not a mesh peer: either the consumer pod has no sidecar, or the
            // mesh accepts plain connections on 7070.
            let peers: Vec<&Value> = of_kind("PeerAuthentication").collect();
            if peers.is_empty() {
                let consumer = deployments
                    .iter()
                    .find(|d| container(d, "consumer").is_some())
                    .expect("consumer Deployment");
                assert_eq!(
                    consumer["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"]
                        .as_str(),
                    Some("false"),
                    "{label}: without Istio resources the consumer pod stays out of the mesh"
                );
            } else {
                for peer in peers {
                    assert_eq!(
                        peer["spec"]["portLevelMtls"][7070_usize]["mode"].as_str(),
                        Some("PERMISSIVE"),
                        "{label}: PeerAuthentication {} admits the NLB's plain connections \
                         on 7070",
                        name(peer)
                    );
                }
            }
        } else {
            let peer = of_kind("PeerAuthentication")
                .next()
                .expect("PeerAuthentication");
            assert_eq!(
                peer["spec"]["mtls"]["mode"].as_str(),
                Some("STRICT"),
                "{label}"
            );
        }
        let annotations: Vec<String> = of_kind("ServiceAccount")
            .filter_map(|sa| sa["metadata"]["annotations"].as_mapping())
            .flat_map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_owned)))
            .collect();
        let identity = match label.as_str() {
            "eks" => "eks.amazonaws.com/role-arn",
            "aks" => "azure.workload.identity/client-id",
            _ => continue,
        };
        assert!(
            annotations.iter().any(|a| a == identity),
            "{label}: the handlers' ServiceAccount carries {identity}"
        );
    }
}

/// The public VirtualService lets a stream last its `STREAM_MAX_SECS` (the 35 s of the
/// other routes would cut every stream), matched before the general GET route.
fn assert_stream_route(label: &str, services: Vec<&Value>) {
    let stream_max = handlers::Config::default().stream_max_secs;
    let routes: Vec<&Value> = services
        .iter()
        .filter_map(|vs| vs["spec"]["http"].as_sequence())
        .flatten()
        .collect();
    let prefix = |r: &Value| {
        r["match"][0]["uri"]["prefix"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let stream = routes
        .iter()
        .position(|r| prefix(r).ends_with("/events/stream"))
        .unwrap_or_else(|| panic!("{label}: a route for /events/stream"));
    let general = routes
        .iter()
        .position(|r| prefix(r) == "/api/v1")
        .unwrap_or_else(|| panic!("{label}: the general /api/v1 route"));
    assert!(
        stream < general,
        "{label}: the stream route is matched first"
    );
    let secs: u64 = routes[stream]["timeout"]
        .as_str()
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(
        secs > stream_max,
        "{label}: the stream route's timeout ({secs} s) outlasts STREAM_MAX_SECS ({stream_max} s)"
    );
    assert_eq!(
        routes[stream]["retries"]["attempts"].as_u64(),
        Some(0),
        "{label}: a stream is never retried"
    );
}

/// Metric names in PromQL text: identifiers of this product's metric families.
fn metric_names(promql: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    for c in promql.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            current.push(c);
        } else {
            let word = std::mem::take(&mut current);
            if ["kafka_", "api_", "consumer_", "rate_limit_", "replicator_"]
                .iter()
                .any(|p| word.starts_with(p))
            {
                names.push(word);
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_dashboard_use_only_metrics_the_product_exports() {
    // The names the running system really exports, from one scrape.
    let mut config = common::config();
    config.events = Some(5);
    let stack = common::start(config).await;
    let (base, key) = (stack.info.api_base.clone(), stack.info.api_key.clone());
    let scrape = || {
        let (base, key) = (base.clone(), key.clone());
        async move {
            reqwest::Client::new()
                .get(format!("{base}/metrics"))
                .bearer_auth(key)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text")
        }
    };
    // The per-key series come once a key asked with a cursor.
    let events = |cursor: String| {
        let (base, key) = (base.clone(), key.clone());
        async move {
            let page: serde_json::Value = reqwest::Client::new()
                .get(format!("{base}/events?cursor={cursor}"))
                .header("x-api-key", key)
                .send()
                .await
                .expect("events")
                .json()
                .await
                .expect("JSON");
            page["next_cursor"].as_str().expect("cursor").to_owned()
        }
    };
    let cursor = events("earliest".into()).await;
    // Lag comes from librdkafka's statistics every 5 s.
    common::wait_for("every metric family", Duration::from_secs(20), || async {
        events(cursor.clone()).await;
        let text = scrape().await;
        text.contains("# TYPE kafka_consumer_lag")
            && text.contains("# TYPE replicator_client_lag_events")
    })
    .await;
    // The laptop row reads what each client serves at METRICS_ADDR.
    let client = client::metrics::ClientMetrics::new();
    client.lag(&[client::lag::PartitionLag {
        topic: "orders".into(),
        partition: 0,
        committed: Some(1),
        log_end: 2,
        lag: 1,
    }]);
    let text = scrape().await + &client.render();
    stack.stop().await;
    let exported: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let known = |name: &str| {
        exported.iter().any(|e| {
            name == e
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(e.as_str()))
        })
    };

    let rules = std::fs::read_to_string(repo_file("infra/monitoring/prometheusrule.yaml"))
        .expect("PrometheusRule");
    let rules: Value = serde_yaml::from_str(&rules).expect("PrometheusRule YAML");
    let mut expressions = Vec::new();
    for group in rules["spec"]["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            expressions.push((
                rule["alert"].as_str().unwrap_or("record").to_owned(),
                rule["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    assert!(
        expressions.len() >= 4,
        "alerts on lag, errors, 5xx and silence"
    );
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("infra/monitoring/grafana-dashboard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard JSON");
    fn collect_exprs(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                    out.push(("dashboard".into(), expr.clone()));
                }
                map.values().for_each(|v| collect_exprs(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
            _ => {}
        }
    }
    let laptop = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| {
            p["type"] == "row" && p["title"].as_str().is_some_and(|t| t.starts_with("Laptop"))
        });
    assert!(laptop, "the dashboard has a laptop row");
    let before = expressions.len();
    collect_exprs(&dashboard, &mut expressions);
    for metric in [
        "replicator_client_events_total",
        "replicator_client_lag_events",
        "replicator_client_last_commit_timestamp_seconds",
    ] {
        assert!(
            expressions[before..]
                .iter()
                .any(|(_, e)| e.contains(metric)),
            "the laptop row shows {metric}"
        );
    }
    assert!(
        expressions.len() - before >= 6,
        "the dashboard has panels with queries"
    );
    for (source, expr) in &expressions {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "{source}: {expr} queries a product metric"
        );
        for name in names {
            assert!(known(&name), "{source}: {name} is not exported (in {expr})");
        }
    }

    let monitor = std::fs::read_to_string(repo_file("infra/monitoring/servicemonitor.yaml"))
        .expect("ServiceMonitor");
    let monitor: Value = serde_yaml::from_str(&monitor).expect("ServiceMonitor YAML");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"].as_str(), Some("/api/v1/metrics"));
    assert_eq!(endpoint["authorization"]["type"].as_str(), Some("Bearer"));
    assert_eq!(
        endpoint["authorization"]["credentials"]["name"].as_str(),
        Some("kafka-replicator-secrets")
    );
    assert_eq!(
        endpoint["authorization"]["credentials"]["key"].as_str(),
        Some("api-key")
    );
}

#[test]
fn the_github_workflow_lints_and_ships_the_windows_client() {
    const TEST: &str = "the_github_workflow_lints_and_ships_the_windows_client";
    let Some(actionlint) = common::tool(TEST, "ACTIONLINT", "actionlint") else {
        return;
    };
    let workflow = repo_file(".github/workflows/ci.yml");
    run_ok(
        Command::new(&actionlint)
            .arg("-color=false")
            .arg(&workflow)
            .current_dir(repo_file(".")),
        "actionlint",
    );
    let doc: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&workflow).expect("workflow")).expect("YAML");
    let jobs = doc["jobs"].as_mapping().expect("jobs");
    let runs = |job: &Value, needle: &str| {
        job["steps"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|s| s["run"].as_str().is_some_and(|r| r.contains(needle)))
    };
    let on = |os: &str| {
        jobs.values()
            .filter(|j| j["runs-on"].as_str() == Some(os))
            .collect::<Vec<_>>()
    };
    assert!(
        on("windows-latest").iter().any(|j| {
            runs(j, "cargo build --release --locked -p client")
                && runs(j, "cargo test --locked -p client --lib")
        }),
        "a windows-latest job builds client.exe in release and runs the client's unit tests"
    );
    assert!(
        on("ubuntu-latest").iter().any(|j| runs(j, "bash .ci/run")),
        "an ubuntu-latest job runs .ci/run"
    );
    let release = jobs
        .values()
        .find(|j| j["if"].as_str().is_some_and(|c| c.contains("refs/tags/")))
        .expect("a job for version tags");
    for file in ["client.exe", "client.env", "README.txt"] {
        assert!(
            runs(release, "zip ") && runs(release, file),
            "the release zip holds {file}"
        );
    }
    for shipped in ["client/.env.example", "infra/windows/README.txt"] {
        assert!(
            repo_file(shipped).is_file(),
            "{shipped} exists to be shipped"
        );
        assert!(runs(release, shipped), "the release takes {shipped}");
    }
    // The Windows-only build of librdkafka stays Windows-only.
    let manifest = std::fs::read_to_string(repo_file("client/Cargo.toml")).expect("client");
    let windows = manifest
        .split("[target.'cfg(windows)'.dependencies]")
        .nth(1)
        .expect("a Windows-only dependency table");
    assert!(windows.contains("cmake-build"), "{windows}");
}
