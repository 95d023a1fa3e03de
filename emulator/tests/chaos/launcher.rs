//! A broker started again a moment after it was killed. A killed JVM holds its listeners
//! until its last thread is gone, a while after `ps` shows it dead: the launcher waits for
//! the port, and when something else keeps holding it, says which process. Its waits are
//! whole seconds, and anything else is refused before it starts.

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_waits_for_a_held_port_and_names_the_holder_when_it_stays_held() {
    const TEST: &str = "a_restart_waits_for_a_held_port_and_names_the_holder_when_it_stays_held";
    const HELD: std::time::Duration = std::time::Duration::from_secs(3);
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    if common::apache_kafka_only(TEST).is_none() {
        return;
    }
    let kafka = crate::kafka_local();
    let name = common::unique("held");
    let bootstrap = kafka.start(&name, "").await.expect("a broker");
    let port: u16 = bootstrap
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the bootstrap address");

    // Held for a while after the kill, as by the killed JVM's last threads, then let go.
    kafka.kill(&name).await.expect("kill -9");
    let held = std::net::TcpListener::bind(("127.0.0.1", port))
        .expect("the port is free once kill returns");
    let release = std::thread::spawn(move || {
        std::thread::sleep(HELD);
        drop(held);
    });
    let began = std::time::Instant::now();
    let restarted = kafka.restart(&name).await;
    release.join().expect("the holder lets go");
    restarted.expect("the restart waits until the port is let go");
    assert!(
        began.elapsed() >= HELD,
        "it started only once the port was free"
    );

    // Held for good: the restart gives up after KAFKA_LOCAL_PORT_WAIT and names the holder.
    kafka.kill(&name).await.expect("kill -9 again");
    let holder = std::net::TcpListener::bind(("127.0.0.1", port))
        .expect("the port is free once kill returns");
    let output = tokio::process::Command::new("bash")
        .arg(common::kafka_local_script())
        .args(["restart", &name])
        .env("KAFKA_LOCAL_PORT_WAIT", "2")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("the launcher runs");
    drop(holder);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    let expected = format!(
        "port {port} needed by '{name}' is still in use by pid {} (",
        std::process::id()
    );
    assert!(said.contains(&expected), "wanted `{expected}` in:\n{said}");
    kafka.remove_all().await;
}

#[tokio::test]
async fn a_wait_that_is_not_whole_seconds_is_refused_at_once_naming_the_variable() {
    for (var, value) in [
        ("KAFKA_LOCAL_PORT_WAIT", "abc"),
        ("KAFKA_LOCAL_START_TIMEOUT", "1.5"),
        ("KAFKA_LOCAL_STOP_TIMEOUT", "-1"),
    ] {
        let output = tokio::process::Command::new("bash")
            .arg(common::kafka_local_script())
            .arg("status")
            .env(var, value)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("the launcher runs");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{var}={value}: {said}");
        assert!(
            said.contains(&format!("{var}='{value}' is not a whole number of seconds")),
            "{var}={value}: {said}"
        );
    }
}
