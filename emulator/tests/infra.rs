//! The deployment files under `infra/`, checked offline with the tools a platform team
//! would run: cfn-lint on the Lambda SAM template.

mod common;

use std::path::PathBuf;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

#[test]
fn the_sam_template_passes_cfn_lint() {
    const TEST: &str = "the_sam_template_passes_cfn_lint";
    let Some(cfn_lint) = common::tool(TEST, "CFN_LINT", "cfn-lint") else {
        return;
    };
    let template = repo_file("infra/lambda/template.yaml");
    let output = std::process::Command::new(cfn_lint)
        .arg(&template)
        .output()
        .expect("cfn-lint runs");
    assert!(
        output.status.success(),
        "cfn-lint found problems in {}:\n{}{}",
        template.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
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
