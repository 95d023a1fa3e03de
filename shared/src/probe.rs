//! [`probe`]: the `healthcheck` subcommand of the server binaries. One plain HTTP/1.0 `GET`
//! to the process's own socket (TCP or Unix) with a short timeout, so container images
//! without a shell or curl can still declare a `HEALTHCHECK`.

use std::io::{Read, Write};
use std::time::Duration;

use crate::internal::ConsumerAddr;

/// How long the whole probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The status code `GET path` answers with on `addr` (`0.0.0.0`/`[::]` mean this host),
/// sending `token` as `Authorization: Bearer` when given.
pub fn probe(addr: &ConsumerAddr, path: &str, token: Option<&str>) -> std::io::Result<u16> {
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    let mut answer = Vec::new();
    match addr {
        ConsumerAddr::Tcp(host_port) => {
            let local = host_port
                .replace("0.0.0.0:", "127.0.0.1:")
                .replace("[::]:", "[::1]:");
            let target = std::net::ToSocketAddrs::to_socket_addrs(&local)?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("{local} resolves to nothing")))?;
            let mut stream = std::net::TcpStream::connect_timeout(&target, PROBE_TIMEOUT)?;
            stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
            stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
            stream.write_all(request.as_bytes())?;
            stream.take(4096).read_to_end(&mut answer)?;
        }
        #[cfg(unix)]
        ConsumerAddr::Unix(path) => {
            let mut stream = std::os::unix::net::UnixStream::connect(path)?;
            stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
            stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
            stream.write_all(request.as_bytes())?;
            stream.take(4096).read_to_end(&mut answer)?;
        }
        #[cfg(not(unix))]
        ConsumerAddr::Unix(path) => {
            return Err(std::io::Error::other(format!(
                "Unix sockets are not supported here: {}",
                path.display()
            )));
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}

/// Exit status of a `healthcheck` subcommand: 0 when `GET path` answers 200.
pub fn exit_code(addr: &ConsumerAddr, path: &str, token: Option<&str>) -> i32 {
    match probe(addr, path, token) {
        Ok(200) => 0,
        Ok(status) => {
            eprintln!("unhealthy: {path} answered {status}");
            1
        }
        Err(err) => {
            eprintln!("unhealthy: {addr}{path}: {err}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_of_a_local_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            // 200 only with the token, as the pod answers when INTERNAL_TOKEN is set.
            for _ in 0..3 {
                let (mut conn, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 512];
                let n = conn.read(&mut buf).expect("read");
                let asked = String::from_utf8_lossy(&buf[..n]).into_owned();
                let status = if asked.contains("Authorization: Bearer s3cret\r\n") {
                    "200 OK"
                } else {
                    "401 Unauthorized"
                };
                let _ = conn.write_all(format!("HTTP/1.1 {status}\r\n\r\n").as_bytes());
            }
        });
        let addr = ConsumerAddr::Tcp(format!("0.0.0.0:{port}"));
        assert_eq!(exit_code(&addr, "/health", Some("s3cret")), 0);
        assert_eq!(exit_code(&addr, "/health", None), 1);
        assert_eq!(exit_code(&addr, "/health", Some("wrong")), 1);
        server.join().expect("server");
        assert_eq!(exit_code(&addr, "/health", None), 1, "nothing listening");
    }
}
