//! One validated configuration struct. Sources, weakest first: built-in defaults, a
//! TOML file (`--config` / `PGBAAS_CONFIG`), environment variables, command-line flags.

use crate::ratelimit::{Cidr, Limit, Limits};
use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug, Default)]
#[command(name = "pgbaas-proxy", version, about = "HTTP edge of pgbaas: verifies tokens, calls the extension's SQL functions")]
pub struct Cli {
    /// TOML configuration file
    #[arg(long, env = "PGBAAS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:8080 (overrides --port)
    #[arg(long, env = "PGBAAS_LISTEN")]
    pub listen: Option<String>,
    /// Port to listen on, all interfaces
    #[arg(long, env = "PGBAAS_HTTP_PORT")]
    pub port: Option<u16>,
    /// Postgres connection string; the proxy logs in as baas_authenticator
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Maximum pooled database connections
    #[arg(long, env = "PGBAAS_POOL_SIZE")]
    pub pool_size: Option<usize>,
    /// Largest request body accepted, in bytes
    #[arg(long, env = "PGBAAS_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Worker threads (default: number of CPUs)
    #[arg(long, env = "PGBAAS_THREADS")]
    pub threads: Option<usize>,
    /// Seconds between reloads of the signing keys from the database
    #[arg(long, env = "PGBAAS_JWKS_REFRESH_SECS")]
    pub jwks_refresh_secs: Option<u64>,
    /// Seconds a request may wait for a pooled connection before 503
    #[arg(long, env = "PGBAAS_POOL_TIMEOUT_SECS")]
    pub pool_timeout_secs: Option<u64>,
    /// Seconds a client has to send its request body before 408
    #[arg(long, env = "PGBAAS_BODY_TIMEOUT_SECS")]
    pub body_timeout_secs: Option<u64>,
    /// Seconds from a request head's first byte to its end before the connection is closed
    #[arg(long, env = "PGBAAS_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Milliseconds a request's SQL may run before 503 query_timeout
    #[arg(long, env = "PGBAAS_STATEMENT_TIMEOUT_MS")]
    pub statement_timeout_ms: Option<u64>,
    /// Rate limits: on (default) or off (load tests and benchmarks only)
    #[arg(long, env = "PGBAAS_RATE_LIMITS")]
    pub rate_limits: Option<String>,
    /// Requests per minute per client IP
    #[arg(long, env = "PGBAAS_RATE_LIMIT_REQUESTS_PER_MINUTE")]
    pub rate_limit_requests_per_minute: Option<u32>,
    /// Sign-ups per hour per client IP
    #[arg(long, env = "PGBAAS_RATE_LIMIT_SIGNUPS_PER_HOUR")]
    pub rate_limit_signups_per_hour: Option<u32>,
    /// Logins, refreshes and password changes per minute per client IP
    #[arg(long, env = "PGBAAS_RATE_LIMIT_AUTH_PER_MINUTE")]
    pub rate_limit_auth_per_minute: Option<u32>,
    /// Logins and password changes per minute per account
    #[arg(long, env = "PGBAAS_RATE_LIMIT_ACCOUNT_PER_MINUTE")]
    pub rate_limit_account_per_minute: Option<u32>,
    /// Comma-separated addresses/CIDRs of proxies whose X-Forwarded-For is believed
    #[arg(long, env = "PGBAAS_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Largest result of one request from the database, in bytes (over it: 400 response_too_large)
    #[arg(long, env = "PGBAAS_MAX_RESULT_BYTES")]
    pub max_result_bytes: Option<usize>,
}

/// What a TOML file may contain; unknown keys are an error, not silently ignored.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub port: Option<u16>,
    pub database_url: Option<String>,
    pub pool_size: Option<usize>,
    pub body_limit: Option<usize>,
    pub threads: Option<usize>,
    pub jwks_refresh_secs: Option<u64>,
    pub pool_timeout_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub header_timeout_secs: Option<u64>,
    pub statement_timeout_ms: Option<u64>,
    pub rate_limits: Option<String>,
    pub rate_limit_requests_per_minute: Option<u32>,
    pub rate_limit_signups_per_hour: Option<u32>,
    pub rate_limit_auth_per_minute: Option<u32>,
    pub rate_limit_account_per_minute: Option<u32>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_result_bytes: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub pool_size: usize,
    pub body_limit: usize,
    pub threads: usize,
    pub jwks_refresh: Duration,
    pub pool_timeout: Duration,
    pub body_timeout: Duration,
    pub header_timeout: Duration,
    pub statement_timeout: Duration,
    pub limits: Limits,
    pub trusted_proxies: Vec<Cidr>,
    pub max_result_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("{0}")]
    Invalid(String),
}

pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

impl Config {
    pub fn load(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Read(path.clone(), e))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| ConfigError::Parse(path.clone(), e))?
            }
            None => FileConfig::default(),
        };
        Self::merge(cli, file)
    }

    /// Flags and environment (already merged by clap, flags winning) over the file.
    pub fn merge(cli: Cli, file: FileConfig) -> Result<Config, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let port = cli.port.or(file.port).unwrap_or(DEFAULT_PORT);
        let listen_raw = cli
            .listen
            .or(file.listen)
            .unwrap_or_else(|| format!("0.0.0.0:{port}"));
        let listen: SocketAddr = listen_raw
            .parse()
            .map_err(|_| invalid(format!("listen: {listen_raw:?} is not an address like 0.0.0.0:8080")))?;
        let database_url = cli.database_url.or(file.database_url).ok_or_else(|| {
            invalid("database_url is required (flag --database-url, env DATABASE_URL, or the config file)".into())
        })?;
        // Read whole now: a setting the proxy cannot honour stops it here, not at every request.
        pgbaas_proxy::pgconfig::PgConfig::parse(&database_url)
            .map_err(|e| invalid(format!("database_url is not a valid Postgres connection string: {e}")))?;
        let max_result_bytes = cli.max_result_bytes.or(file.max_result_bytes).unwrap_or(pgbaas_proxy::pgwire::DEFAULT_MAX_RESULT_BYTES);
        if !(64 * 1024..=1 << 30).contains(&max_result_bytes) {
            return Err(invalid(format!("max_result_bytes must be between 65536 and 1073741824, got {max_result_bytes}")));
        }
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let threads = cli.threads.or(file.threads).unwrap_or(cpus);
        if !(1..=256).contains(&threads) {
            return Err(invalid(format!("threads must be 1..=256, got {threads}")));
        }
        let pool_size = cli.pool_size.or(file.pool_size).unwrap_or(16);
        if !(1..=1000).contains(&pool_size) {
            return Err(invalid(format!("pool_size must be 1..=1000, got {pool_size}")));
        }
        let body_limit = cli.body_limit.or(file.body_limit).unwrap_or(DEFAULT_BODY_LIMIT);
        if !(1024..=256 * 1024 * 1024).contains(&body_limit) {
            return Err(invalid(format!("body_limit must be between 1024 and 268435456 bytes, got {body_limit}")));
        }
        let secs = |name: &str, v: Option<u64>, default: u64, max: u64| {
            let v = v.unwrap_or(default);
            if v == 0 || v > max {
                Err(invalid(format!("{name} must be 1..={max} seconds, got {v}")))
            } else {
                Ok(Duration::from_secs(v))
            }
        };
        let enabled = match cli.rate_limits.or(file.rate_limits).as_deref().map(str::trim) {
            None => true,
            Some(v) if ["on", "true", "1"].contains(&v.to_ascii_lowercase().as_str()) => true,
            Some(v) if ["off", "false", "0"].contains(&v.to_ascii_lowercase().as_str()) => false,
            Some(v) => return Err(invalid(format!("rate_limits must be on or off, got {v:?}"))),
        };
        let limit = |name: &str, v: Option<u32>, default: u32, per: u64| -> Result<Limit, ConfigError> {
            let count = v.unwrap_or(default);
            if !(1..=1_000_000).contains(&count) {
                return Err(invalid(format!("{name} must be 1..=1000000, got {count}")));
            }
            Ok(Limit { count, per: Duration::from_secs(per) })
        };
        let limits = Limits {
            enabled,
            request_per_ip: limit("rate_limit_requests_per_minute", cli.rate_limit_requests_per_minute.or(file.rate_limit_requests_per_minute), 3000, 60)?,
            signup_per_ip: limit("rate_limit_signups_per_hour", cli.rate_limit_signups_per_hour.or(file.rate_limit_signups_per_hour), 20, 3600)?,
            auth_per_ip: limit("rate_limit_auth_per_minute", cli.rate_limit_auth_per_minute.or(file.rate_limit_auth_per_minute), 60, 60)?,
            auth_per_account: limit("rate_limit_account_per_minute", cli.rate_limit_account_per_minute.or(file.rate_limit_account_per_minute), 10, 60)?,
        };
        let trusted_proxies = cli
            .trusted_proxies
            .or(file.trusted_proxies)
            .unwrap_or_default()
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| Cidr::parse(s).map_err(|e| invalid(format!("trusted_proxies: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            max_result_bytes,
            limits,
            trusted_proxies,
            listen,
            database_url,
            pool_size,
            body_limit,
            threads,
            jwks_refresh: secs("jwks_refresh_secs", cli.jwks_refresh_secs.or(file.jwks_refresh_secs), 30, 86400)?,
            pool_timeout: secs("pool_timeout_secs", cli.pool_timeout_secs.or(file.pool_timeout_secs), 5, 600)?,
            body_timeout: secs("body_timeout_secs", cli.body_timeout_secs.or(file.body_timeout_secs), 10, 600)?,
            header_timeout: secs("header_timeout_secs", cli.header_timeout_secs.or(file.header_timeout_secs), 10, 600)?,
            statement_timeout: {
                let ms = cli.statement_timeout_ms.or(file.statement_timeout_ms).unwrap_or(5000);
                if !(1..=3_600_000).contains(&ms) {
                    return Err(invalid(format!("statement_timeout_ms must be 1..=3600000, got {ms}")));
                }
                Duration::from_millis(ms)
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Cli {
        Cli { database_url: Some("postgres://baas_authenticator@127.0.0.1/pgbaas".into()), ..Default::default() }
    }

    #[test]
    fn defaults() {
        let c = Config::merge(cli(), FileConfig::default()).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.body_limit, 1024 * 1024);
        assert_eq!(c.max_result_bytes, 16 << 20);
    }

    #[test]
    fn flags_win_over_file() {
        let file: FileConfig = toml::from_str("port = 9000\nbody_limit = 4096\n").unwrap();
        let mut c = cli();
        c.port = Some(9100);
        let cfg = Config::merge(c, file).unwrap();
        assert_eq!(cfg.listen.port(), 9100);
        assert_eq!(cfg.body_limit, 4096);
    }

    #[test]
    fn rejects_bad_values_with_a_reason() {
        let err = |c: Cli, f: &str| Config::merge(c, toml::from_str(f).unwrap()).unwrap_err().to_string();
        assert!(err(cli(), "body_limit = 10").contains("body_limit"));
        assert!(err(cli(), "listen = \"nonsense\"").contains("listen"));
        assert!(err(cli(), "pool_size = 0").contains("pool_size"));
        assert!(err(Cli::default(), "").contains("database_url is required"));
        assert!(err(Cli::default(), "database_url = \"postgres://x:notaport/db\"").contains("not a valid Postgres"));
        assert!(toml::from_str::<FileConfig>("bogus_key = 1").is_err(), "unknown keys must be refused");
        assert!(err(cli(), "rate_limits = \"sometimes\"").contains("rate_limits"));
        assert!(err(cli(), "rate_limit_auth_per_minute = 0").contains("rate_limit_auth_per_minute"));
        assert!(err(cli(), "trusted_proxies = [\"10.0.0.0/99\"]").contains("trusted_proxies"));
        assert!(err(cli(), "max_result_bytes = 10").contains("max_result_bytes"));
        // A URL setting the proxy cannot honour stops it at start, named.
        assert!(err(Cli::default(), "database_url = \"postgres://u@h/db?sslmode=verify-full\"").contains("sslrootcert"));
        assert!(err(Cli::default(), "database_url = \"hostaddr=10.0.0.1 user=u sslmode=verify-full sslrootcert=/etc/hostname\"").contains("host name"));
    }

    #[test]
    fn rate_limits_are_on_by_default_and_can_be_turned_off() {
        let c = Config::merge(cli(), FileConfig::default()).unwrap();
        assert!(c.limits.enabled);
        assert_eq!(c.limits.auth_per_account.count, 10);
        let mut off = cli();
        off.rate_limits = Some("off".into());
        assert!(!Config::merge(off, FileConfig::default()).unwrap().limits.enabled);
        let file: FileConfig = toml::from_str("rate_limits = \"off\"\ntrusted_proxies = [\"10.0.0.0/8\"]").unwrap();
        let c = Config::merge(cli(), file).unwrap();
        assert!(!c.limits.enabled);
        assert_eq!(c.trusted_proxies.len(), 1);
    }
}
