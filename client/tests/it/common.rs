//! Running the `client` binary as a user would, with only the environment given.

use std::process::Command;

/// Runs the client in the temporary folder with only `env`; its exit code, stdout and
/// stderr.
pub(crate) fn client<V: AsRef<std::ffi::OsStr>>(
    env: &[(&str, V)],
    args: &[&str],
) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_client"));
    cmd.env_clear().current_dir(std::env::temp_dir()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("client runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
