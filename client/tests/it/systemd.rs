//! The systemd unit shipped for Linux machines passes systemd's own checks, run with the
//! real client binary in its place.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_systemd_unit_verifies_and_stops_the_client_gracefully() {
    let unit_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../infra/systemd/kafka-replicator-client.service");
    let unit = std::fs::read_to_string(&unit_path).expect("the unit");
    let Some(analyze) = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("systemd-analyze"))
        .find(|p| p.is_file())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must verify the unit with systemd-analyze (Debian's systemd package)"
        );
        eprintln!("systemd-analyze not found; skipped here, CI runs it");
        return;
    };
    for wanted in [
        "ExecStart=/usr/local/bin/kafka-replicator-client",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "WantedBy=multi-user.target",
        "Environment=CLIENT_CONFIG=%d/client.env",
    ] {
        assert!(unit.contains(wanted), "the unit has {wanted}");
    }
    let dir = tempfile::tempdir().expect("dir");
    let local = dir.path().join("kafka-replicator-client.service");
    std::fs::write(
        &local,
        unit.replace(
            "/usr/local/bin/kafka-replicator-client",
            env!("CARGO_BIN_EXE_client"),
        ),
    )
    .expect("write");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&local)
        .output()
        .expect("systemd-analyze runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
