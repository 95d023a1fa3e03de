//! Logging set-up, once per process: `RUST_LOG` filters (default `info`), and
//! `LOG_FORMAT=json` switches to one JSON object per line for production log pipelines.
//! Logs go to stderr, or to a writer the binary gives (the client's `LOG_FILE`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber, logging to stderr; later calls are no-ops.
pub fn init() {
    init_with(std::io::stderr, true);
}

/// Installs the global subscriber, logging to `writer` (colours only if `ansi`); later
/// calls are no-ops.
pub fn init_with<W>(writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
