//! The deployment files under `infra/`, checked offline with the tools a platform team
//! would run: hadolint and the hardening rules on the Dockerfile, `kubectl kustomize` and
//! `kubernetes-validate --strict` on each overlay plus the hardening rules on every
//! Deployment, and cfn-lint on the Lambda SAM template.

mod common;

use std::path::PathBuf;
use std::process::Command;

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
    let Some(cfn_lint) = common::tool(TEST, "CFN_LINT", "cfn-lint") else {
        return;
    };
    let template = repo_file("infra/lambda/template.yaml");
    run_ok(Command::new(cfn_lint).arg(&template), "cfn-lint");
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
