//! A shaped network link for the benchmark: a toxiproxy server (`TOXIPROXY_SERVER`, which
//! `.ci/tools.sh` installs) with a proxy per crossing (the client to the API; MirrorMaker 2
//! to the source broker), each with a `latency` toxic and a `bandwidth` toxic on each
//! direction; the bytes carried are read from toxiproxy's own proxy metrics.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::{Child, Command};

use crate::bench::BenchError;

/// How long toxiproxy may take to answer its API after its start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the link does to every byte.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkShape {
    /// Delay each way.
    pub delay_ms: u64,
    /// Capacity each way, in Mbit/s.
    pub mbit: f64,
}

/// A running toxiproxy; [`Link::proxy`] adds a crossing.
#[derive(Debug)]
pub struct Link {
    child: Child,
    api: String,
    http: reqwest::Client,
    /// Each proxy's name and the port it listens on.
    proxies: std::sync::Mutex<Vec<(String, u16)>>,
    pub shape: LinkShape,
}

fn failed(what: &str, err: impl std::fmt::Display) -> BenchError {
    BenchError::Incomplete(format!("the shaped link: {what}: {err}"))
}

impl Link {
    /// Starts toxiproxy (`TOXIPROXY_SERVER`), to shape every proxy it will carry as `shape`.
    pub async fn start(shape: LinkShape) -> Result<Self, BenchError> {
        let server = server(
            std::env::var_os("TOXIPROXY_SERVER"),
            "--link-delay-ms/--link-mbit",
        )?;
        Self::start_server(&server, shape).await
    }

    /// Starts the toxiproxy-server at `server`, to shape every proxy it will carry as
    /// `shape`.
    pub async fn start_server(
        server: &std::path::Path,
        shape: LinkShape,
    ) -> Result<Self, BenchError> {
        let server = server.display().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| failed("no free port", e))?
            .port();
        let child = Command::new(&server)
            .args([
                "-host",
                "127.0.0.1",
                "-port",
                &port.to_string(),
                "-proxy-metrics",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(&format!("{server} did not start"), e))?;
        let link = Self {
            child,
            api: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            proxies: std::sync::Mutex::default(),
            shape,
        };
        link.wait_ready().await?;
        Ok(link)
    }

    async fn wait_ready(&self) -> Result<(), BenchError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.http.get(format!("{}/version", self.api)).send().await {
                Ok(answer) if answer.status().is_success() => return Ok(()),
                _ if Instant::now() >= deadline => {
                    return Err(failed(
                        "toxiproxy did not answer",
                        format!("{} s after its start", START_TIMEOUT.as_secs()),
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, BenchError> {
        let answer = self
            .http
            .post(format!("{}{path}", self.api))
            .json(&body)
            .send()
            .await
            .map_err(|e| failed(path, e))?;
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.map_err(|e| failed(path, e))?;
        if !status.is_success() {
            return Err(failed(path, format!("{status}: {body}")));
        }
        Ok(body)
    }

    /// A proxy `name` listening on `listen` (port 0: a free one) and forwarding to
    /// `upstream`, with the link's toxics; returns where it listens.
    pub async fn proxy(
        &self,
        name: &str,
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> Result<SocketAddr, BenchError> {
        let listen = self.plain_proxy(name, listen, upstream).await?;
        self.shape_proxy(name, "", self.shape).await?;
        Ok(listen)
    }

    /// A proxy `name` from `listen` to `upstream` that leaves the bytes alone until
    /// [`Link::shape_proxy`] or [`Link::set_enabled`] says otherwise.
    pub async fn plain_proxy(
        &self,
        name: &str,
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> Result<SocketAddr, BenchError> {
        let proxy = self
            .post(
                "/proxies",
                json!({"name": name, "listen": listen.to_string(), "upstream": upstream.to_string(), "enabled": true}),
            )
            .await?;
        let listen: SocketAddr = proxy["listen"]
            .as_str()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| failed("the proxy has no address", &proxy))?;
        self.proxies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name.to_owned(), listen.port()));
        Ok(listen)
    }

    /// Adds a `latency` and a `bandwidth` toxic of `shape` on each direction of proxy
    /// `name`, named with `tag` so [`Link::unshape_proxy`] can take them off again.
    pub async fn shape_proxy(
        &self,
        name: &str,
        tag: &str,
        shape: LinkShape,
    ) -> Result<(), BenchError> {
        // Bandwidth in KB/s, as toxiproxy takes it.
        let rate = (shape.mbit * 1_000_000.0 / 8.0 / 1000.0).round().max(1.0) as u64;
        let toxics = format!("/proxies/{name}/toxics");
        for stream in ["upstream", "downstream"] {
            self.post(
                &toxics,
                json!({"name": format!("{tag}latency_{stream}"), "type": "latency", "stream": stream,
                       "attributes": {"latency": shape.delay_ms, "jitter": 0}}),
            )
            .await?;
            self.post(
                &toxics,
                json!({"name": format!("{tag}bandwidth_{stream}"), "type": "bandwidth", "stream": stream,
                       "attributes": {"rate": rate}}),
            )
            .await?;
        }
        Ok(())
    }

    /// Takes the toxics [`Link::shape_proxy`] added with `tag` off proxy `name`.
    pub async fn unshape_proxy(&self, name: &str, tag: &str) -> Result<(), BenchError> {
        for toxic in ["latency", "bandwidth"] {
            for stream in ["upstream", "downstream"] {
                let path = format!("/proxies/{name}/toxics/{tag}{toxic}_{stream}");
                let answer = self
                    .http
                    .delete(format!("{}{path}", self.api))
                    .send()
                    .await
                    .map_err(|e| failed(&path, e))?;
                if !answer.status().is_success() {
                    return Err(failed(&path, answer.status()));
                }
            }
        }
        Ok(())
    }

    /// Cuts proxy `name` (`false`: every connection through it is closed and new ones are
    /// refused) or mends it.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), BenchError> {
        self.post(&format!("/proxies/{name}"), json!({"enabled": enabled}))
            .await
            .map(drop)
    }

    /// What `bytes` crossed against what the link carries one way in `secs`.
    pub fn utilisation(&self, bytes: u64, secs: f64) -> f64 {
        bytes as f64 / (self.shape.mbit * 1_000_000.0 / 8.0 * secs)
    }

    /// Bytes proxy `name` has carried so far, both directions: toxiproxy counts a
    /// connection's once it closes, the kernel those of the connections still open.
    pub async fn bytes(&self, name: &str) -> Result<u64, BenchError> {
        let port = self
            .proxies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, port)| *port)
            .ok_or_else(|| failed("no such proxy", name))?;
        let open: u64 = crate::sockets::established()
            .await
            .map_err(|e| failed("open connections", e))?
            .iter()
            .filter(|c| c.local_port == port)
            .map(|c| c.bytes_sent + c.bytes_received)
            .sum();
        Ok(self.closed_bytes(name).await? + open)
    }

    async fn closed_bytes(&self, name: &str) -> Result<u64, BenchError> {
        let text = self
            .http
            .get(format!("{}/metrics", self.api))
            .send()
            .await
            .map_err(|e| failed("metrics", e))?
            .text()
            .await
            .map_err(|e| failed("metrics", e))?;
        Ok(sent_bytes(&text, name))
    }

    /// Stops toxiproxy.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The toxiproxy-server `TOXIPROXY_SERVER` (`var`) names, checked before a benchmark starts
/// anything, so a missing one fails at once; `needed_by` says what asked for it.
pub fn server(
    var: Option<std::ffi::OsString>,
    needed_by: &str,
) -> Result<std::path::PathBuf, BenchError> {
    const HINT: &str = "`eval \"$(bash .ci/tools.sh)\"` installs it and sets it";
    let Some(var) = var.filter(|v| !v.is_empty()) else {
        return Err(BenchError::Incomplete(format!(
            "toxiproxy is needed for {needed_by}: set TOXIPROXY_SERVER to its toxiproxy-server ({HINT})"
        )));
    };
    let path = std::path::PathBuf::from(var);
    if !path.is_file() {
        return Err(BenchError::Incomplete(format!(
            "TOXIPROXY_SERVER={} is not a file: point it at a toxiproxy-server ({HINT})",
            path.display()
        )));
    }
    Ok(path)
}

/// The sum of proxy `name`'s `toxiproxy_proxy_sent_bytes_total` over the directions.
fn sent_bytes(metrics: &str, name: &str) -> u64 {
    let label = format!("proxy=\"{name}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("toxiproxy_proxy_sent_bytes_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_wrong_toxiproxy_is_named_before_anything_starts() {
        let message = |var: Option<&str>| match server(var.map(Into::into), "the test") {
            Err(BenchError::Incomplete(message)) => message,
            other => panic!("{var:?}: {other:?}"),
        };
        assert!(message(None).contains("set TOXIPROXY_SERVER"));
        assert!(message(Some("")).contains("set TOXIPROXY_SERVER"));
        let dir = std::env::temp_dir();
        let wrong = message(Some(dir.to_str().expect("UTF-8 temp dir")));
        assert!(wrong.starts_with("TOXIPROXY_SERVER="), "{wrong}");
        assert!(wrong.contains("is not a file"), "{wrong}");
        let file = dir.join(format!("toxiproxy-server-{}", std::process::id()));
        std::fs::write(&file, b"").expect("write");
        assert_eq!(
            server(Some(file.clone().into()), "the test").expect("a file"),
            file
        );
        std::fs::remove_file(&file).expect("remove");
    }

    #[test]
    fn adds_up_the_bytes_sent_each_way() {
        let text = "# HELP toxiproxy_proxy_sent_bytes_total x\n\
            toxiproxy_proxy_sent_bytes_total{direction=\"downstream\",proxy=\"api\"} 1.5e+06\n\
            toxiproxy_proxy_sent_bytes_total{direction=\"upstream\",proxy=\"api\"} 2000\n\
            toxiproxy_proxy_sent_bytes_total{direction=\"upstream\",proxy=\"source\"} 7\n\
            toxiproxy_proxy_received_bytes_total{direction=\"upstream\",proxy=\"api\"} 9\n";
        assert_eq!(sent_bytes(text, "api"), 1_502_000);
        assert_eq!(sent_bytes(text, "source"), 7);
    }
}
