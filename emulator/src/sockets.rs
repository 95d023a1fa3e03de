//! This machine's TCP sockets as the kernel lists them (`ss`, iproute2; Linux): the bytes
//! open connections carried, which the benchmark reads to tell how much a process fetched
//! from a broker or how much crossed a proxy whose connections are still open, and which
//! process listens on a port.

use tokio::process::Command;

/// One socket: an established connection with its byte counts, or a listener (no peer
/// port, no counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub local_port: u16,
    pub peer_port: u16,
    /// The processes holding it.
    pub pids: Vec<u32>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit(':').next()?.parse().ok()
}

fn counter(info: &str, name: &str) -> u64 {
    info.split_whitespace()
        .find_map(|f| f.strip_prefix(name)?.parse().ok())
        .unwrap_or(0)
}

/// Parses `ss -tnpH state …` (with `-i`, each line followed by its details).
pub fn parse(text: &str) -> Vec<Connection> {
    let mut connections = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(peer)) = (cols.get(2).and_then(|a| port_of(a)), cols.get(3)) else {
            continue;
        };
        // A listener's peer is `*`.
        let peer = port_of(peer).unwrap_or(0);
        let pids = line
            .split("pid=")
            .skip(1)
            .filter_map(|rest| rest.split(',').next()?.parse().ok())
            .collect();
        let info = match lines.peek() {
            Some(next) if next.starts_with(char::is_whitespace) => lines.next().unwrap_or(""),
            _ => "",
        };
        connections.push(Connection {
            local_port: local,
            peer_port: peer,
            pids,
            // Older kernels give only bytes_acked.
            bytes_sent: counter(info, "bytes_sent:").max(counter(info, "bytes_acked:")),
            bytes_received: counter(info, "bytes_received:"),
        });
    }
    connections
}

/// The sockets in `state` now, with their details when `info`; an error when `ss` cannot
/// run.
async fn sockets(state: &str, info: bool) -> Result<Vec<Connection>, String> {
    let flags = if info { "-tinpH" } else { "-tnpH" };
    let out = Command::new("ss")
        .args([flags, "state", state])
        .output()
        .await
        .map_err(|e| format!("ss (iproute2) is needed to read this machine's sockets: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ss failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// The established connections now, with their byte counts.
pub async fn established() -> Result<Vec<Connection>, String> {
    sockets("established", true).await
}

/// The process listening on TCP `port` of this machine, if one does.
pub async fn listener(port: u16) -> Result<Option<u32>, String> {
    Ok(sockets("listening", false)
        .await?
        .into_iter()
        .find(|c| c.local_port == port)
        .and_then(|c| c.pids.first().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ports_processes_and_counts() {
        let text = "0      0      [::ffff:127.0.0.1]:49855 [::ffff:127.0.0.1]:58790 users:((\"java\",pid=27032,fd=156))\n\
\t bbr wscale:10,1 rto:204 bytes_sent:3118 bytes_acked:3118 bytes_received:694 segs_out:11\n\
0      0      127.0.0.1:40000 127.0.0.1:9092 users:((\"emulator\",pid=7,fd=3),(\"emulator\",pid=8,fd=4))\n\
\t cubic bytes_acked:10 bytes_received:20\n";
        let c = parse(text);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0],
            Connection {
                local_port: 49855,
                peer_port: 58790,
                pids: vec![27032],
                bytes_sent: 3118,
                bytes_received: 694
            }
        );
        assert_eq!(c[1].pids, vec![7, 8]);
        let listening =
            parse("0      128    127.0.0.1:9092 0.0.0.0:* users:((\"java\",pid=9,fd=1))\n");
        assert_eq!((listening[0].local_port, listening[0].peer_port), (9092, 0));
        assert_eq!(listening[0].pids, vec![9]);
        assert_eq!((c[1].bytes_sent, c[1].bytes_received), (10, 20));
    }

    #[tokio::test]
    async fn finds_this_process_by_a_port_it_listens_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(
            super::listener(port).await.expect("ss runs"),
            Some(std::process::id())
        );
        drop(listener);
        assert_eq!(super::listener(port).await.expect("ss runs"), None);
    }

    #[tokio::test]
    async fn counts_what_this_process_sends_on_a_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        server.write_all(&[7u8; 50_000]).await.expect("write");
        let mut got = vec![0u8; 50_000];
        client.read_exact(&mut got).await.expect("read");
        let now = established().await.expect("ss runs");
        let sent: u64 = now
            .iter()
            .filter(|c| c.local_port == port && c.pids.contains(&std::process::id()))
            .map(|c| c.bytes_sent)
            .sum();
        assert_eq!(sent, 50_000);
    }
}
