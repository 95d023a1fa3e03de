//! How every component loads its own configuration (each crate owns its `Config`, clap
//! derive with `env = "…"` on every flag, so flags, environment and `.env` agree): [`load`]
//! reads `.env`, parses, validates, and on a bad value exits with one line naming the
//! variable and an example. Also the value parsers both ends of the API share.

use clap::Parser;

/// A configuration value that is missing or wrong, said the way an operator fixes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set (flag --{flag}); for example {var}={example}")]
    Missing {
        var: &'static str,
        flag: &'static str,
        example: &'static str,
    },
    #[error("{var} is invalid: {reason}; for example {var}={example}")]
    Invalid {
        var: &'static str,
        reason: String,
        example: &'static str,
    },
}

/// A configuration struct that can check itself after parsing.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Reads `.env` (if any), parses flags and environment, validates; on failure prints one
/// line and exits with status 2.
pub fn load<T: Parser + Validate>() -> T {
    load_from(None)
}

/// [`load`], reading the env-file `env_file` instead of `./.env` when one is named; a
/// named file that cannot be read is one line and exit status 2 as well.
pub fn load_from<T: Parser + Validate>(env_file: Option<(&std::path::Path, &str)>) -> T {
    match env_file {
        Some((path, named_by)) => {
            if let Err(err) = dotenvy::from_path(path) {
                eprintln!("error: {named_by}: cannot read {}: {err}", path.display());
                std::process::exit(2);
            }
        }
        None => {
            let _ = dotenvy::dotenv();
        }
    }
    let config = match T::try_parse() {
        Ok(config) => config,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            let text = err.render().to_string();
            let line = text
                .lines()
                .next()
                .unwrap_or("invalid configuration")
                .trim_start_matches("error: ");
            eprintln!("error: {line}");
            std::process::exit(2);
        }
    };
    if let Err(err) = config.validate() {
        eprintln!("error: {err}");
        std::process::exit(2);
    }
    config
}

/// How a binary ends: on an error, one line on stderr with its causes (`error: …: …`) and
/// exit status 1.
pub fn exit_code<E: std::fmt::Display>(result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` puts anyhow's causes on the same line.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The configuration `T` holds with no flag given and nothing in the environment: the
/// defaults its flags declare, in one place, for code that builds a configuration itself.
pub fn defaults<T: Parser>() -> T {
    let command = T::command().mut_args(|arg| arg.env(None));
    let name = command.get_name().to_owned();
    let matches = command
        .try_get_matches_from([name])
        .expect("every flag without a default is optional");
    T::from_arg_matches(&matches).expect("the matches come from T's own command")
}

/// `localhost`, or an address in 127.0.0.0/8 or `::1` (brackets allowed).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `API_PREFIX`: a path starting with `/`, no trailing `/` (empty for none).
pub fn parse_prefix(s: &str) -> Result<String, String> {
    let trimmed = s.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if !trimmed.starts_with('/') || trimmed.contains(['?', '#', ' ']) {
        return Err(format!("expected a path such as /api/v1, got {s:?}"));
    }
    Ok(trimmed.to_owned())
}

/// Refuses a required value that is unset or blank.
pub fn required(
    value: &Option<String>,
    var: &'static str,
    flag: &'static str,
    example: &'static str,
) -> Result<(), ConfigError> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(()),
        _ => Err(ConfigError::Missing { var, flag, example }),
    }
}

/// The host of a URL after its `scheme://`: without user info, port, path, query or
/// fragment (an IPv6 address keeps its brackets).
pub fn url_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        return host_port
            .find(']')
            .map_or(host_port, |end| &host_port[..=end]);
    }
    host_port
        .rsplit_once(':')
        .map_or(host_port, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(parse_prefix("/api/v1/"), Ok("/api/v1".into()));
        assert_eq!(parse_prefix(""), Ok(String::new()));
        assert!(parse_prefix("api").is_err());
    }
}
