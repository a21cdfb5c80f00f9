//! One validated configuration struct. Sources, weakest first: built-in defaults, a
//! TOML file (`--config` / `PGBAAS_CONFIG`), environment variables, command-line flags.
//!
//! Each setting is written once, as a field of `Config`: its doc comment is its `--help`
//! text, `long` its flag, `env` its variable, `id` (the field name unless given) its key
//! in the file, `default_value` its default and `value_parser` its check. Adding a setting
//! is adding a field here and a row to docs/configuration.md (a test compares the two).
//!
//! clap reads flags and environment and tells where each value came from; the file is
//! laid between defaults and environment by passing its values, as flags, only for the
//! settings that neither a flag nor the environment set, so one parser checks a value
//! whatever its source. (figment or a serde merge would need a second, all-`Option`
//! mirror of the struct and could not tell a clap default from a value the user gave.)

use crate::ratelimit::{Cidr, InFlight, InFlightCaps, Limit, Limits};
use clap::builder::Command;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use std::ffi::OsString;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[derive(Parser, Debug, Clone)]
#[command(name = "pgbaas-proxy", version, about = "HTTP edge of pgbaas: verifies tokens, calls the extension's SQL functions")]
pub struct Config {
    /// TOML configuration file (keys: the settings' names below, with _ for -)
    #[arg(long, env = "PGBAAS_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on, e.g. 0.0.0.0:8080 (default: all interfaces on `port`)
    #[arg(long, env = "PGBAAS_LISTEN", default_value = "0.0.0.0:8080", hide_default_value = true, value_parser = address)]
    pub listen: SocketAddr,

    /// Port to listen on, all interfaces (when `listen` is not given)
    #[arg(long, env = "PGBAAS_HTTP_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Postgres connection string; the proxy logs in as baas_authenticator (required)
    #[arg(long, env = "DATABASE_URL", default_value = "", hide_default_value = true, value_parser = database_url)]
    pub database_url: String,

    /// Maximum pooled database connections for requests
    #[arg(long, env = "PGBAAS_POOL_SIZE", default_value = "16", value_parser = int(1usize, 1000, ""))]
    pub pool_size: usize,

    /// Largest request body accepted, in bytes
    #[arg(long, env = "PGBAAS_BODY_LIMIT", default_value = "1048576", value_parser = int(1024usize, 256 * 1024 * 1024, " bytes"))]
    pub body_limit: usize,

    /// Worker threads (default: number of CPUs)
    #[arg(long, env = "PGBAAS_THREADS", default_value_t = cpus(), hide_default_value = true, value_parser = int(1usize, 256, ""))]
    pub threads: usize,

    /// Seconds between reloads of the signing keys from the database
    #[arg(id = "jwks_refresh_secs", value_name = "SECS", long = "jwks-refresh-secs", env = "PGBAAS_JWKS_REFRESH_SECS", default_value = "30", value_parser = secs(86_400))]
    pub jwks_refresh: Duration,

    /// Seconds a request may wait for a pooled connection before 503
    #[arg(id = "pool_timeout_secs", value_name = "SECS", long = "pool-timeout-secs", env = "PGBAAS_POOL_TIMEOUT_SECS", default_value = "5", value_parser = secs(600))]
    pub pool_timeout: Duration,

    /// Seconds a client has to send its request body before 408
    #[arg(id = "body_timeout_secs", value_name = "SECS", long = "body-timeout-secs", env = "PGBAAS_BODY_TIMEOUT_SECS", default_value = "10", value_parser = secs(600))]
    pub body_timeout: Duration,

    /// Seconds from a request head's first byte to its end before the connection is closed
    #[arg(id = "header_timeout_secs", value_name = "SECS", long = "header-timeout-secs", env = "PGBAAS_HEADER_TIMEOUT_SECS", default_value = "10", value_parser = secs(600))]
    pub header_timeout: Duration,

    /// After an early answer to a request whose body is unread (413, 401, 404...), read and discard at most this many more body bytes before closing, so the client can read the answer (0: off)
    #[arg(long, value_name = "BYTES", env = "PGBAAS_LINGER_BYTES", default_value = "16777216", value_parser = int(0usize, 1 << 30, " bytes"))]
    pub linger_bytes: usize,

    /// ... and for at most this many seconds (nginx's lingering_timeout is 5 s)
    #[arg(id = "linger_secs", value_name = "SECS", long = "linger-secs", env = "PGBAAS_LINGER_SECS", default_value = "5", value_parser = secs(600))]
    pub linger: Duration,

    /// Milliseconds a request's SQL may run before 503 query_timeout
    #[arg(id = "statement_timeout_ms", value_name = "MS", long = "statement-timeout-ms", env = "PGBAAS_STATEMENT_TIMEOUT_MS", default_value = "5000", value_parser = millis(3_600_000))]
    pub statement_timeout: Duration,

    /// Milliseconds an anonymous caller's query may run before 503 query_timeout (at most statement_timeout_ms; sign-up, login and refresh keep statement_timeout_ms)
    #[arg(id = "anon_statement_timeout_ms", value_name = "MS", long = "anon-statement-timeout-ms", env = "PGBAAS_ANON_STATEMENT_TIMEOUT_MS", default_value = "1000", value_parser = millis(3_600_000))]
    pub anon_statement_timeout: Duration,

    /// Rate limits: on (default) or off (load tests and benchmarks only)
    #[arg(long, env = "PGBAAS_RATE_LIMITS", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    pub rate_limits: bool,

    /// Requests per minute per client IP
    #[arg(long, env = "PGBAAS_RATE_LIMIT_REQUESTS_PER_MINUTE", default_value = "3000", value_parser = int(1u32, 1_000_000, ""))]
    pub rate_limit_requests_per_minute: u32,

    /// Sign-ups per hour per client IP
    #[arg(long, env = "PGBAAS_RATE_LIMIT_SIGNUPS_PER_HOUR", default_value = "20", value_parser = int(1u32, 1_000_000, ""))]
    pub rate_limit_signups_per_hour: u32,

    /// Logins, refreshes and password changes per minute per client IP
    #[arg(long, env = "PGBAAS_RATE_LIMIT_AUTH_PER_MINUTE", default_value = "60", value_parser = int(1u32, 1_000_000, ""))]
    pub rate_limit_auth_per_minute: u32,

    /// Logins, sign-ups, refreshes and password changes per minute per account
    #[arg(long, env = "PGBAAS_RATE_LIMIT_ACCOUNT_PER_MINUTE", default_value = "10", value_parser = int(1u32, 1_000_000, ""))]
    pub rate_limit_account_per_minute: u32,

    /// Clients (or accounts) each rate limit tracks at once; past it new ones get 429
    #[arg(long, env = "PGBAAS_RATE_LIMIT_MAX_KEYS", default_value = "100000", value_parser = int(1_000usize, 100_000_000, ""))]
    pub rate_limit_max_keys: usize,

    /// Database-bound requests one client IP (IPv6: one /56) may have in flight at once (0: no cap; default: pool_size/4, at least 1)
    #[arg(long, env = "PGBAAS_MAX_DB_REQUESTS_PER_IP", value_parser = int(0u32, 100_000, ""))]
    pub max_db_requests_per_ip: Option<u32>,

    /// Database-bound requests without a token in flight at once, all addresses together (0: no cap; default: pool_size/2, at least 1)
    #[arg(long, env = "PGBAAS_MAX_ANONYMOUS_DB_REQUESTS", value_parser = int(0u32, 100_000, ""))]
    pub max_anonymous_db_requests: Option<u32>,

    /// Database-bound requests one signed-in user may have in flight at once (0: no cap)
    #[arg(long, env = "PGBAAS_MAX_DB_REQUESTS_PER_USER", default_value = "4", value_parser = int(0u32, 100_000, ""))]
    pub max_db_requests_per_user: u32,

    /// Comma-separated addresses/CIDRs of proxies whose X-Forwarded-For is believed
    #[arg(long, env = "PGBAAS_TRUSTED_PROXIES", value_delimiter = ',', value_parser = Cidr::parse)]
    pub trusted_proxies: Vec<Cidr>,

    /// Largest result of one request from the database, in bytes (over it: 400 response_too_large, the statement cancelled before the result is held)
    #[arg(long, value_name = "BYTES", env = "PGBAAS_MAX_RESULT_BYTES", default_value = "16777216", value_parser = int(64usize * 1024, 1 << 30, " bytes"))]
    pub max_result_bytes: usize,

    /// Live change feeds (WebSocket and SSE streams) one client IP may hold open at once (0: no cap; off with rate_limits = off)
    #[arg(long, env = "PGBAAS_REALTIME_MAX_CONNECTIONS_PER_IP", default_value = "100", value_parser = int(0u32, 1_000_000, ""))]
    pub realtime_max_connections_per_ip: u32,

    /// Live change feeds one signed-in user may hold open at once (0: no cap; off with rate_limits = off)
    #[arg(long, env = "PGBAAS_REALTIME_MAX_CONNECTIONS_PER_USER", default_value = "20", value_parser = int(0u32, 1_000_000, ""))]
    pub realtime_max_connections_per_user: u32,

    /// Largest WebSocket message a client may send, in bytes (larger: close 1009)
    #[arg(long, value_name = "BYTES", env = "PGBAAS_REALTIME_MAX_MESSAGE_BYTES", default_value = "65536", value_parser = int(1024usize, 16 << 20, " bytes"))]
    pub realtime_max_message_bytes: usize,

    /// Bytes of messages queued for one realtime connection before it is cut off as a slow consumer
    #[arg(long, value_name = "BYTES", env = "PGBAAS_REALTIME_OUTBOX_BYTES", default_value = "1048576", value_parser = int(4096usize, 1 << 30, " bytes"))]
    pub realtime_outbox_bytes: usize,

    /// Seconds between the server's WebSocket pings; no pong for twice this closes the connection
    #[arg(id = "realtime_ping_secs", value_name = "SECS", long = "realtime-ping-secs", env = "PGBAAS_REALTIME_PING_SECS", default_value = "30", value_parser = secs(3600))]
    pub realtime_ping: Duration,

    /// Seconds between `: keepalive` comments on an idle SSE stream
    #[arg(id = "realtime_keepalive_secs", value_name = "SECS", long = "realtime-keepalive-secs", env = "PGBAAS_REALTIME_KEEPALIVE_SECS", default_value = "15", value_parser = secs(3600))]
    pub realtime_keepalive: Duration,
    /// Live feeds: subscriptions one connection may hold (over it: 429 too_many_subscriptions)
    #[arg(long, env = "PGBAAS_REALTIME_MAX_SUBSCRIPTIONS", default_value = "100", value_parser = int(1usize, 10_000, ""))]
    pub realtime_max_subscriptions: usize,

    /// Live feeds: most documents a subscription's snapshot sends (over it: 400 snapshot_too_large)
    #[arg(long, env = "PGBAAS_REALTIME_SNAPSHOT_MAX", default_value = "500", value_parser = int(1usize, 999, ""))]
    pub realtime_snapshot_max: usize,

    /// Files: largest file accepted, in bytes (a bucket may set less; tus `Tus-Max-Size`)
    #[arg(long, value_name = "BYTES", env = "PGBAAS_FILE_MAX_BYTES", default_value = "5368709120", value_parser = int(0u64, 1u64 << 40, " bytes"))]
    pub file_max_bytes: u64,

    /// Files: seconds an upload or download may stall (no byte either way) before it is cut (408 for an upload)
    #[arg(id = "file_idle_timeout_secs", value_name = "SECS", long = "file-idle-timeout-secs", env = "PGBAAS_FILE_IDLE_TIMEOUT_SECS", default_value = "30", value_parser = secs(3600))]
    pub file_idle_timeout: Duration,

    /// Files: uploads and downloads one client IP may run at once (0: no cap; off with rate_limits = off)
    #[arg(long, env = "PGBAAS_MAX_TRANSFERS_PER_IP", default_value = "8", value_parser = int(0u32, 100_000, ""))]
    pub max_transfers_per_ip: u32,

    /// Files: uploads and downloads one signed-in user may run at once (0: no cap; off with rate_limits = off)
    #[arg(long, env = "PGBAAS_MAX_TRANSFERS_PER_USER", default_value = "4", value_parser = int(0u32, 100_000, ""))]
    pub max_transfers_per_user: u32,

    /// Files: uploads and downloads the proxy runs at once, all clients together (0: no cap)
    #[arg(long, env = "PGBAAS_MAX_TRANSFERS", default_value = "64", value_parser = int(0u32, 1_000_000, ""))]
    pub max_transfers: u32,

    /// Files: thumbnails made at once (each on a blocking thread)
    #[arg(long, env = "PGBAAS_THUMB_WORKERS", default_value = "1", value_parser = int(1usize, 256, ""))]
    pub thumb_workers: usize,

    /// Files: thumbnail requests waiting for a worker; more get 503 thumbnails_busy
    #[arg(long, env = "PGBAAS_THUMB_QUEUE", default_value = "8", value_parser = int(0usize, 100_000, ""))]
    pub thumb_queue: usize,

    /// Files: largest source image for a thumbnail, in pixels (width x height; larger: 422 image_too_large)
    #[arg(long, env = "PGBAAS_THUMB_MAX_PIXELS", default_value = "50000000", value_parser = int(1u64, 1u64 << 40, " pixels"))]
    pub thumb_max_pixels: u64,

    /// Files: most memory one thumbnail's decoder may allocate, in bytes
    #[arg(long, value_name = "BYTES", env = "PGBAAS_THUMB_MAX_ALLOC", default_value = "536870912", value_parser = int(1u64 << 20, 1u64 << 40, " bytes"))]
    pub thumb_max_alloc: u64,

    /// Files: largest source file for a thumbnail, in bytes (read whole; larger: 422 image_too_large)
    #[arg(long, value_name = "BYTES", env = "PGBAAS_THUMB_MAX_INPUT_BYTES", default_value = "33554432", value_parser = int(1usize << 10, 1usize << 30, " bytes"))]
    pub thumb_max_input_bytes: usize,

    /// Files: seconds between sweeps of expired upload sessions (0: off)
    #[arg(id = "upload_cleanup_secs", value_name = "SECS", long = "upload-cleanup-secs", env = "PGBAAS_UPLOAD_CLEANUP_SECS", default_value = "60", value_parser = int(0u64, 86_400, " s"))]
    pub upload_cleanup_secs: u64,

    /// Files: the proxy's public base URL (e.g. https://api.example.com), for absolute tus Locations; none: relative
    #[arg(long, env = "PGBAAS_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Email: SMTP server for the outbox (smtp://host:25, smtp://host:587?tls=required, smtps://host:465; user:password@ allowed); none: mail stays queued
    #[arg(long, env = "PGBAAS_SMTP_URL")]
    pub smtp_url: Option<String>,

    /// Email: file holding the SMTP password (for the user named in smtp_url)
    #[arg(long, env = "PGBAAS_SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<PathBuf>,

    /// Email: PEM file of CA certificates to trust for the SMTP server's TLS (besides the web's roots)
    #[arg(long, env = "PGBAAS_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,

    /// Email: seconds one SMTP delivery may take
    #[arg(id = "smtp_timeout_secs", value_name = "SECS", long = "smtp-timeout-secs", env = "PGBAAS_SMTP_TIMEOUT_SECS", default_value = "30", value_parser = secs(600))]
    pub smtp_timeout: Duration,

    /// Email: seconds between looks at the outbox besides notifications (0: no mail worker)
    #[arg(id = "mail_poll_secs", value_name = "SECS", long = "mail-poll-secs", env = "PGBAAS_MAIL_POLL_SECS", default_value = "5", value_parser = int(0u64, 86_400, " s"))]
    pub mail_poll_secs: u64,

    /// Email: most messages claimed at once
    #[arg(long, env = "PGBAAS_MAIL_BATCH", default_value = "10", value_parser = int(1u32, 1000, ""))]
    pub mail_batch: u32,

    /// Email: most SMTP deliveries at once
    #[arg(long, env = "PGBAAS_MAIL_CONCURRENCY", default_value = "4", value_parser = int(1usize, 64, ""))]
    pub mail_concurrency: usize,

    /// Email: seconds a claimed message is kept from other proxies (more than smtp_timeout_secs)
    #[arg(id = "mail_lease_secs", value_name = "SECS", long = "mail-lease-secs", env = "PGBAAS_MAIL_LEASE_SECS", default_value = "120", value_parser = secs(3600))]
    pub mail_lease: Duration,

    // --- Webhooks (issue 18): the outbox's delivery worker (proxy/src/webhooks/).
    /// Webhooks: seconds between looks at the webhook outbox (0: no webhook worker)
    #[arg(id = "webhook_poll_secs", value_name = "SECS", long = "webhook-poll-secs", env = "PGBAAS_WEBHOOK_POLL_SECS", default_value = "1", value_parser = int(0u64, 86_400, " s"))]
    pub webhook_poll_secs: u64,

    /// Webhooks: seconds one delivery (connect, POST, answer) may take
    #[arg(id = "webhook_timeout_secs", value_name = "SECS", long = "webhook-timeout-secs", env = "PGBAAS_WEBHOOK_TIMEOUT_SECS", default_value = "10", value_parser = secs(300))]
    pub webhook_timeout: Duration,

    /// Webhooks: most deliveries at once (one webhook gets at most half of them)
    #[arg(long, env = "PGBAAS_WEBHOOK_CONCURRENCY", default_value = "8", value_parser = int(1usize, 256, ""))]
    pub webhook_concurrency: usize,

    /// OpenID Connect: seconds between looks for providers whose keys are missing or expire within 5 minutes
    #[arg(id = "oidc_poll_secs", value_name = "SECS", long = "oidc-poll-secs", env = "PGBAAS_OIDC_POLL_SECS", default_value = "60", value_parser = int(10u64, 86_400, " s"))]
    pub oidc_poll_secs: u64,

    /// OpenID Connect: least seconds between two fetches of one provider's keys for tokens naming an unknown key
    #[arg(id = "oidc_refetch_floor_secs", value_name = "SECS", long = "oidc-refetch-floor-secs", env = "PGBAAS_OIDC_REFETCH_FLOOR_SECS", default_value = "30", value_parser = int(1u64, 3600, " s"))]
    pub oidc_refetch_floor_secs: u64,

    /// OpenID Connect: seconds one key set fetch may take
    #[arg(id = "oidc_fetch_timeout_secs", value_name = "SECS", long = "oidc-fetch-timeout-secs", env = "PGBAAS_OIDC_FETCH_TIMEOUT_SECS", default_value = "10", value_parser = int(1u64, 60, " s"))]
    pub oidc_fetch_timeout_secs: u64,

    // --- housekeeping (issue 18)
    /// Housekeeping: seconds between runs of baas.housekeeping() (ended sessions, expired tokens and uploads, old outbox rows; 0: off)
    #[arg(id = "housekeeping_secs", value_name = "SECS", long = "housekeeping-secs", env = "PGBAAS_HOUSEKEEPING_SECS", default_value = "300", value_parser = int(0u64, 86_400, " s"))]
    pub housekeeping_secs: u64,

    // --- edge (issue 19)
    /// Browsers (CORS): allowed origins, comma-separated: exact (https://app.example.com), wildcard subdomain (https://*.example.com) or * (none: no CORS headers)
    #[arg(long, env = "PGBAAS_CORS_ORIGINS", value_delimiter = ',', value_parser = crate::edge::Origin::parse)]
    pub cors_origins: Vec<crate::edge::Origin>,

    /// Browsers (CORS): methods a preflight allows
    #[arg(long, env = "PGBAAS_CORS_METHODS", default_value = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")]
    pub cors_methods: String,

    /// Browsers (CORS): request headers a preflight allows
    #[arg(long, env = "PGBAAS_CORS_HEADERS", default_value = CORS_HEADERS)]
    pub cors_headers: String,

    /// Browsers (CORS): answer headers scripts may read
    #[arg(long, env = "PGBAAS_CORS_EXPOSE_HEADERS", default_value = CORS_EXPOSE)]
    pub cors_expose_headers: String,

    /// Browsers (CORS): allow credentials (cookies); refused with the origin *
    #[arg(long, env = "PGBAAS_CORS_CREDENTIALS", default_value = "off", value_parser = on_off, action = clap::ArgAction::Set)]
    pub cors_credentials: bool,

    /// Browsers (CORS): seconds a browser may cache a preflight's answer (0: not sent)
    #[arg(long, value_name = "SECS", env = "PGBAAS_CORS_MAX_AGE_SECS", default_value = "600", value_parser = int(0u64, 86_400, " s"))]
    pub cors_max_age_secs: u64,

    /// Graceful stop: seconds after SIGTERM to finish requests in flight and tell streams to reconnect, then exit
    #[arg(id = "shutdown_grace_secs", value_name = "SECS", long = "shutdown-grace-secs", env = "PGBAAS_SHUTDOWN_GRACE_SECS", default_value = "15", value_parser = secs(3600))]
    pub shutdown_grace: std::time::Duration,

    /// Graceful stop: seconds after SIGTERM during which /healthz answers 503 and requests are still served, so a balancer takes the proxy out first (0: none)
    #[arg(long, value_name = "SECS", env = "PGBAAS_SHUTDOWN_DELAY_SECS", default_value = "0", value_parser = int(0u64, 600, " s"))]
    pub shutdown_delay_secs: u64,

    /// Open TCP connections one client address may hold (0: no cap); one more gets 429 then close
    #[arg(long, env = "PGBAAS_MAX_CONNECTIONS_PER_IP", default_value = "0", value_parser = int(0u32, 1_000_000, ""))]
    pub max_connections_per_ip: u32,

    /// TLS: PEM certificate chain for the listener (with tls_key_file; re-read on SIGHUP)
    #[arg(long, env = "PGBAAS_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// TLS: PEM private key of tls_cert_file (re-read on SIGHUP)
    #[arg(long, env = "PGBAAS_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// TLS: offer HTTP/2 (ALPN h2) besides HTTP/1.1
    #[arg(long, env = "PGBAAS_TLS_HTTP2", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    pub tls_http2: bool,

    /// TLS: Strict-Transport-Security max-age in seconds on answers over TLS (0: not sent)
    #[arg(long, value_name = "SECS", env = "PGBAAS_HSTS_MAX_AGE_SECS", default_value = "0", value_parser = int(0u64, 100_000_000, " s"))]
    pub hsts_max_age_secs: u64,
    // --- E. read replicas (issue 19)
    /// Read replicas: connection URLs of streaming replicas of the database, comma-separated (each as database_url); reads go to them (docs/operations.md)
    #[arg(long, env = "PGBAAS_REPLICA_URLS", default_value = "", hide_default_value = true, value_parser = replica_urls)]
    pub replica_urls: ReplicaUrls,

    /// Read replicas: maximum connections to each replica (default: pool_size)
    #[arg(long, env = "PGBAAS_REPLICA_POOL_SIZE", value_parser = int(1usize, 1000, ""))]
    pub replica_pool_size: Option<usize>,

    /// Read replicas: most milliseconds a read carrying a commit position waits for a replica to replay it before it goes to the primary
    #[arg(id = "replica_wait_ms", value_name = "MS", long = "replica-wait-ms", env = "PGBAAS_REPLICA_WAIT_MS", default_value = "100", value_parser = int(0u64, 10_000, " ms"))]
    pub replica_wait_ms: u64,

    /// Read replicas: WAL bytes a replica may be behind the primary and stay in rotation
    #[arg(long, value_name = "BYTES", env = "PGBAAS_REPLICA_MAX_LAG_BYTES", default_value = "16777216", value_parser = int(0u64, 1u64 << 50, " bytes"))]
    pub replica_max_lag_bytes: u64,

    /// Read replicas: milliseconds after which WAL the primary wrote must have been replayed by a replica for it to stay in rotation (catches a paused or stuck replay)
    #[arg(id = "replica_max_lag_ms", value_name = "MS", long = "replica-max-lag-ms", env = "PGBAAS_REPLICA_MAX_LAG_MS", default_value = "5000", value_parser = int(100u64, 3_600_000, " ms"))]
    pub replica_max_lag_ms: u64,
    // --- A. Observe (issue 19)
    /// Observe: address of the Prometheus /metrics listener, e.g. 127.0.0.1:9090 (none: no metrics)
    #[arg(long, env = "PGBAAS_METRICS_LISTEN", value_parser = address)]
    pub metrics_listen: Option<SocketAddr>,

    /// Observe: request log format, text (env_logger's, stderr) or json (one line per request on stdout)
    #[arg(long, env = "PGBAAS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    // --- The Parse door (issue 21, docs/parse.md)
    /// Parse: the application id Parse SDKs send (X-Parse-Application-Id); none: no Parse door
    #[arg(long, env = "PGBAAS_PARSE_APP_ID")]
    pub parse_app_id: Option<String>,

    /// Parse: file holding the master key (X-Parse-Master-Key acts as a service token); none: no master key is accepted
    #[arg(long, env = "PGBAAS_PARSE_MASTER_KEY_FILE")]
    pub parse_master_key_file: Option<PathBuf>,

    /// Parse: the path the Parse REST API is mounted at
    #[arg(long, env = "PGBAAS_PARSE_MOUNT", default_value = "/parse", value_parser = parse_mount)]
    pub parse_mount: String,

    /// Parse: seconds between checks of a LiveQuery connection's session (its end is announced at once; this also catches expiry)
    #[arg(id = "parse_live_recheck_secs", value_name = "SECS", long = "parse-live-recheck-secs", env = "PGBAAS_PARSE_LIVE_RECHECK_SECS", default_value = "300", value_parser = secs(86400))]
    pub parse_live_recheck: Duration,

    /// Parse: the bucket (a collection with "bucket": true) Parse Files are stored in
    #[arg(long, env = "PGBAAS_PARSE_FILES_BUCKET", default_value = "parse_files")]
    pub parse_files_bucket: String,

    /// Parse: largest file uploaded through POST /parse/files (held in memory whole; larger files go through /v1 uploads)
    #[arg(long, value_name = "BYTES", env = "PGBAAS_PARSE_FILE_MAX_BYTES", default_value = "20971520", value_parser = int(1024usize, 1 << 30, " bytes"))]
    pub parse_file_max_bytes: usize,

    /// Parse: the server URL clients reach the door at (Parse Server's publicServerURL), for file URLs; none: the request's scheme, Host and the mount
    #[arg(long, env = "PGBAAS_PARSE_PUBLIC_URL")]
    pub parse_public_url: Option<String>,
}

/// `--parse-mount`: an absolute path of letters, digits and `_ - .`, not under `/v1`.
fn parse_mount(s: &str) -> Result<String, String> {
    let t = s.trim_end_matches('/');
    let ok = t.starts_with('/') && t.len() > 1 && t[1..].split('/').all(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)));
    if !ok || t == "/v1" || t.starts_with("/v1/") {
        return Err("a path such as /parse (segments of letters, digits, _ - .; not under /v1)".to_string());
    }
    Ok(t.to_string())
}

/// `--replica-urls`: each as `database_url`. Split at commas that start a new
/// `postgres://`/`postgresql://` URL (a URL's own host list has commas too); a
/// key=value string is one replica. (issue 19, replicas)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaUrls(pub Vec<String>);

fn replica_urls(s: &str) -> Result<ReplicaUrls, String> {
    let mut urls: Vec<String> = Vec::new();
    for piece in s.split(',') {
        let starts = piece.trim_start().starts_with("postgres://") || piece.trim_start().starts_with("postgresql://");
        if urls.is_empty() && piece.trim().is_empty() {
            continue;
        }
        match urls.last_mut() {
            Some(last) if !starts => {
                last.push(',');
                last.push_str(piece);
            }
            _ => urls.push(piece.trim().to_string()),
        }
    }
    // Checked in `Config::load_from`, not here: clap's error for a value parser
    // repeats the value, and with it a URL's password.
    Ok(ReplicaUrls(urls))
}

/// Each replica URL parses and allows a standby (target_session_attrs=any); errors
/// name the replica by its place, never by its URL (it may hold a password).
fn check_replica_urls(urls: &ReplicaUrls) -> Result<(), String> {
    for (i, u) in urls.0.iter().enumerate() {
        if u.is_empty() {
            return Err(format!("replica_urls: replica {} is empty", i + 1));
        }
        let c = pgbaas_proxy::pgconfig::PgConfig::parse(u).map_err(|e| format!("replica_urls: replica {}: not a valid Postgres connection string: {e}", i + 1))?;
        if c.read_write {
            return Err(format!("replica_urls: replica {}: target_session_attrs must be any: a replica is read-only, and would never take reads", i + 1));
        }
    }
    Ok(())
}

/// The request headers browsers may send by default (issue 19, edge): every header a
/// route reads, tus's included.
const CORS_HEADERS: &str = "Authorization, Content-Type, If-Match, If-None-Match, Range, Last-Event-ID, X-Request-Id, Pgbaas-Commit-Lsn, Tus-Resumable, Upload-Length, Upload-Offset, Upload-Metadata, Upload-Checksum, Upload-Defer-Length, Upload-Concat";
/// ...and the answer headers scripts may read (tus-js-client needs Location and Upload-Offset).
const CORS_EXPOSE: &str = "X-Request-Id, ETag, Pgbaas-Commit-Lsn, Retry-After, Location, Content-Range, Upload-Offset, Upload-Length, Tus-Resumable, Tus-Version, Tus-Max-Size, Tus-Extension";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("{0}")]
    Invalid(String),
    /// --help, --version and command-line usage errors: clap prints them (Error::exit).
    #[error("{0}")]
    Cli(clap::Error),
}

impl Config {
    /// The configuration from this process's command line, environment and file.
    pub fn load() -> Result<Config, ConfigError> {
        Self::load_from(std::env::args_os())
    }

    pub fn load_from(args: impl IntoIterator<Item = impl Into<OsString>>) -> Result<Config, ConfigError> {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        // An empty variable counts as unset (`PGBAAS_TRUSTED_PROXIES=` for none).
        let cmd = Config::command().mut_args(|a| match a.get_env() {
            Some(name) if std::env::var_os(name).is_some_and(|v| v.is_empty()) => a.env(None),
            _ => a,
        });
        let first = cmd.clone().try_get_matches_from(&args).map_err(|e| explain(&cmd, e))?;
        let mut all = args.clone();
        if let Some(path) = first.get_one::<PathBuf>("config") {
            all.extend(file_args(&cmd, &first, path)?);
        }
        let matches = cmd.clone().try_get_matches_from(&all).map_err(|e| explain(&cmd, e))?;
        let mut cfg = Config::from_arg_matches(&matches).map_err(|e| explain(&cmd, e))?;
        if cfg.database_url.is_empty() {
            return Err(ConfigError::Invalid(
                "database_url is required (flag --database-url, env DATABASE_URL, or the config file)".into(),
            ));
        }
        if matches.value_source("listen") == Some(ValueSource::DefaultValue) {
            cfg.listen.set_port(cfg.port);
        }
        if cfg.mail_lease <= cfg.smtp_timeout {
            return Err(ConfigError::Invalid(format!(
                "mail_lease_secs ({}) must be more than smtp_timeout_secs ({}): a lease that lapses mid-send lets another proxy send the message too",
                cfg.mail_lease.as_secs(),
                cfg.smtp_timeout.as_secs()
            )));
        }
        if let Some(url) = &cfg.smtp_url {
            // Checked now, with the password and certificates read, so that a proxy
            // that could not send mail does not start.
            cfg.mail().map_err(ConfigError::Invalid)?;
            if url.is_empty() {
                return Err(ConfigError::Invalid("smtp_url is empty".into()));
            }
        } else if cfg.smtp_password_file.is_some() || cfg.smtp_ca_file.is_some() {
            return Err(ConfigError::Invalid("smtp_password_file and smtp_ca_file need smtp_url".into()));
        }
        // --- edge (issue 19)
        if cfg.cors_credentials && cfg.cors_origins.contains(&crate::edge::Origin::Any) {
            return Err(ConfigError::Invalid("cors_credentials = on cannot go with cors_origins = *: browsers refuse it; list the origins".into()));
        }
        if cfg.tls_cert_file.is_some() != cfg.tls_key_file.is_some() {
            return Err(ConfigError::Invalid("tls_cert_file and tls_key_file go together: give both or neither".into()));
        }
        check_replica_urls(&cfg.replica_urls).map_err(ConfigError::Invalid)?; // (issue 19, replicas)
        Ok(cfg)
    }

    /// CORS (issue 19, edge): None when no origin is configured.
    pub fn cors(&self) -> Option<crate::edge::Cors> {
        (!self.cors_origins.is_empty()).then(|| crate::edge::Cors {
            origins: self.cors_origins.clone(),
            methods: crate::edge::list(&self.cors_methods),
            headers: crate::edge::list(&self.cors_headers),
            expose: crate::edge::list(&self.cors_expose_headers),
            credentials: self.cors_credentials,
            max_age_secs: self.cors_max_age_secs,
        })
    }

    /// The caps on requests in flight per client IP, per user, and for all anonymous
    /// requests together; like the rate limits, off with `rate_limits = off` (load tests
    /// send from one address). Unset, the per-address cap is a quarter of the pool and
    /// the anonymous one half: so neither a few addresses (4 of them, or 2 with no token)
    /// nor anonymous traffic from everywhere can hold every connection, and signed-in
    /// users always find half the pool not held by anonymous requests.
    pub fn in_flight_caps(&self) -> InFlightCaps {
        let cap = |n| InFlight::new(if self.rate_limits { n } else { 0 }, self.rate_limit_max_keys);
        let share = |divisor: usize| u32::try_from((self.pool_size / divisor).max(1)).unwrap_or(u32::MAX);
        InFlightCaps {
            per_ip: cap(self.max_db_requests_per_ip.unwrap_or_else(|| share(4))),
            per_user: cap(self.max_db_requests_per_user),
            anonymous: cap(self.max_anonymous_db_requests.unwrap_or_else(|| share(2))),
        }
    }

    /// The caps on open realtime connections per client IP and per user (service tokens
    /// are not capped, as for requests); off with `rate_limits = off`.
    pub fn realtime_caps(&self) -> crate::realtime::transport::Caps {
        let cap = |n| InFlight::new(if self.rate_limits { n } else { 0 }, self.rate_limit_max_keys);
        crate::realtime::transport::Caps { per_ip: cap(self.realtime_max_connections_per_ip), per_user: cap(self.realtime_max_connections_per_user) }
    }

    /// The bounds on one thumbnail's work (files::thumb::make).
    pub fn thumb_limits(&self) -> crate::files::thumb::ThumbLimits {
        crate::files::thumb::ThumbLimits {
            max_pixels: self.thumb_max_pixels,
            max_alloc: self.thumb_max_alloc,
            max_input_bytes: self.thumb_max_input_bytes as u64,
        }
    }

    /// The thumbnail workers and their queue (files::thumb::ThumbPool).
    pub fn thumbs(&self) -> crate::files::thumb::ThumbPool {
        crate::files::thumb::ThumbPool::new(self.thumb_workers, self.thumb_queue)
    }

    /// The caps on file transfers in flight (files::Transfers); per address and per
    /// user off with `rate_limits = off`, the total always.
    pub fn transfers(&self) -> crate::files::Transfers {
        let cap = |n| InFlight::new(if self.rate_limits { n } else { 0 }, self.rate_limit_max_keys);
        crate::files::Transfers { per_ip: cap(self.max_transfers_per_ip), per_user: cap(self.max_transfers_per_user), total: InFlight::new(self.max_transfers, 1) }
    }

    /// The live feeds' hub settings. Subscription start-ups (one short transaction each,
    /// on the requests' pool) run at most a quarter of the pool at once, so a burst of
    /// reconnecting clients cannot hold the connections requests need.
    pub fn hub(&self) -> crate::realtime::hub::HubConfig {
        crate::realtime::hub::HubConfig {
            max_subscriptions_per_connection: self.realtime_max_subscriptions,
            snapshot_max: self.realtime_snapshot_max,
            concurrent_startups: (self.pool_size / 4).max(1),
            ..Default::default()
        }
    }

    /// The webhook worker's settings (None: --webhook-poll-secs 0, no worker).
    pub fn webhooks(&self) -> Option<crate::webhooks::WebhookConfig> {
        (self.webhook_poll_secs > 0).then(|| crate::webhooks::WebhookConfig {
            poll: Duration::from_secs(self.webhook_poll_secs),
            timeout: self.webhook_timeout,
            concurrency: self.webhook_concurrency,
        })
    }

    /// The mail worker's settings, with the password and CA files read and the SMTP
    /// transport checked (mail::worker::builder). Err: what is wrong, naming the setting.
    pub fn mail(&self) -> Result<crate::mail::MailConfig, String> {
        let smtp_url = self.smtp_url.clone().unwrap_or_default();
        let password = match &self.smtp_password_file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("smtp_password_file {}: {e}", p.display()))?;
                let pw = text.trim_end_matches(['\r', '\n']).to_string();
                if pw.is_empty() {
                    return Err(format!("smtp_password_file {} is empty", p.display()));
                }
                Some(pw)
            }
            None => None,
        };
        let ca_pem = match &self.smtp_ca_file {
            Some(p) => {
                let pem = std::fs::read(p).map_err(|e| format!("smtp_ca_file {}: {e}", p.display()))?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(format!("smtp_ca_file {}: no PEM certificate in it", p.display()));
                }
                Some(pem)
            }
            None => None,
        };
        let m = crate::mail::MailConfig {
            smtp_url,
            password,
            ca_pem,
            timeout: self.smtp_timeout,
            poll: Duration::from_secs(self.mail_poll_secs),
            batch: self.mail_batch,
            concurrency: self.mail_concurrency,
            lease: self.mail_lease,
        };
        crate::mail::worker::builder(&m)?;
        Ok(m)
    }

    /// The OpenID Connect key fetcher's settings (proxy/src/oidc/).
    pub fn oidc(&self) -> crate::oidc::OidcConfig {
        crate::oidc::OidcConfig {
            poll: Duration::from_secs(self.oidc_poll_secs),
            refetch_floor: Duration::from_secs(self.oidc_refetch_floor_secs),
            fetch_timeout: Duration::from_secs(self.oidc_fetch_timeout_secs),
        }
    }

    /// The rate limits these settings describe.
    pub fn limits(&self) -> Limits {
        let per = |count, secs| Limit { count, per: Duration::from_secs(secs) };
        Limits {
            enabled: self.rate_limits,
            request_per_ip: per(self.rate_limit_requests_per_minute, 60),
            signup_per_ip: per(self.rate_limit_signups_per_hour, 3600),
            auth_per_ip: per(self.rate_limit_auth_per_minute, 60),
            auth_per_account: per(self.rate_limit_account_per_minute, 60),
            max_keys: self.rate_limit_max_keys,
        }
    }
}

/// The file's settings as `--flag=value` arguments, for the settings that neither a flag
/// nor the environment set; each value is checked here so that an error names the file.
fn file_args(cmd: &Command, given: &clap::ArgMatches, path: &PathBuf) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.clone(), e))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse(path.clone(), e))?;
    let bad = |m: String| ConfigError::Invalid(format!("config file {}: {m}", path.display()));
    let mut out = Vec::new();
    for (key, value) in table {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == key.as_str() && key != "config")
            .ok_or_else(|| bad(format!("unknown key `{key}` (the settings are listed in docs/configuration.md)")))?;
        if matches!(given.value_source(&key), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let values: Vec<String> = match value {
            toml::Value::String(s) => vec![s],
            toml::Value::Integer(i) => vec![i.to_string()],
            toml::Value::Float(f) => vec![f.to_string()],
            toml::Value::Boolean(b) => vec![b.to_string()],
            toml::Value::Array(items) if arg.get_value_delimiter().is_some() => items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s),
                    other => Err(bad(format!("{key}: expected a list of strings, got {other}"))),
                })
                .collect::<Result<_, _>>()?,
            other => return Err(bad(format!("{key}: expected one value, got {other}"))),
        };
        let long = arg.get_long().unwrap_or(key.as_str());
        let flags: Vec<OsString> = values.iter().map(|v| format!("--{long}={v}").into()).collect();
        // This one setting alone, so that an error is the file's, not the environment's.
        let alone = Command::new("file").no_binary_name(true).arg(arg.clone().env(None));
        if let Err(e) = alone.try_get_matches_from(&flags) {
            return Err(bad(format!("{key}: {}", reason(&e))));
        }
        out.extend(flags);
    }
    Ok(out)
}

/// A clap error about a value, reworded to name the setting (file key, flag, variable).
fn explain(cmd: &Command, e: clap::Error) -> ConfigError {
    if !matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        return ConfigError::Cli(e);
    }
    let Some(ContextValue::String(shown)) = e.get(ContextKind::InvalidArg) else {
        return ConfigError::Cli(e);
    };
    let long = shown.trim_start_matches('-').split([' ', '=']).next().unwrap_or_default();
    let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(long)) else {
        return ConfigError::Cli(e);
    };
    let env = arg.get_env().map(|v| format!(", env {}", v.to_string_lossy())).unwrap_or_default();
    ConfigError::Invalid(format!("{} (flag --{long}{env}): {}", arg.get_id(), reason(&e)))
}

/// What a value parser said, without clap's framing.
fn reason(e: &clap::Error) -> String {
    match std::error::Error::source(e) {
        Some(s) => s.to_string(),
        None => match e.get(ContextKind::InvalidValue) {
            Some(v) => format!("invalid value {v}"),
            None => e.kind().to_string(),
        },
    }
}

// Value parsers: each says what it wants and what it got.

fn int<T>(min: T, max: T, unit: &'static str) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
{
    move |s: &str| match s.trim().parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        Ok(v) => Err(format!("must be {min}..={max}{unit}, got {v}")),
        Err(_) => Err(format!("must be a whole number {min}..={max}{unit}, got {s:?}")),
    }
}

fn secs(max: u64) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    let n = int(1u64, max, " seconds");
    move |s: &str| n(s).map(Duration::from_secs)
}

fn millis(max: u64) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    let n = int(1u64, max, " ms");
    move |s: &str| n(s).map(Duration::from_millis)
}

fn on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("must be on or off, got {s:?}")),
    }
}

fn address(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| format!("{s:?} is not an address like 0.0.0.0:8080"))
}

/// Empty means "not given" (checked after all sources are read).
fn database_url(s: &str) -> Result<String, String> {
    if !s.is_empty() {
        // Read whole now: a setting the proxy cannot honour stops it here, not at every request.
        pgbaas_proxy::pgconfig::PgConfig::parse(s).map_err(|e| format!("not a valid Postgres connection string: {e}"))?;
    }
    Ok(s.to_string())
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// clap reads the process environment: tests that set variables hold this lock, and
    /// so does every test that loads a configuration.
    static ENV: Mutex<()> = Mutex::new(());

    const URL: &str = "postgres://baas_authenticator@127.0.0.1/pgbaas";

    fn load(args: &[&str], file: Option<&str>) -> Result<Config, ConfigError> {
        let mut argv = vec!["pgbaas-proxy".to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let path = std::env::temp_dir().join(format!("pgbaas-config-test-{}-{:?}.toml", std::process::id(), std::thread::current().id()));
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
            argv.push(format!("--config={}", path.display()));
        }
        let r = Config::load_from(argv);
        let _ = std::fs::remove_file(&path);
        r
    }

    // (issue 19, replicas)
    #[test]
    fn replica_urls_must_allow_a_standby_and_are_never_echoed() {
        let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let bad = |urls: &str| match load(&["--database-url", URL, "--replica-urls", urls], None) {
            Ok(c) => panic!("accepted: {:?}", c.replica_urls),
            Err(e) => e.to_string(),
        };
        let e = bad("postgres://u:sekrit@r1/app,postgres://u:sekrit@r2/app?target_session_attrs=read-write");
        assert!(e.contains("replica 2") && e.contains("target_session_attrs") && !e.contains("sekrit"), "{e}");
        let e = bad("postgres://u:sekrit@r1/app?connect_timeout=soon");
        assert!(e.contains("replica 1") && !e.contains("sekrit"), "{e}");
        let c = load(&["--database-url", URL, "--replica-urls", "postgres://u:p@r1,r1b/app,postgres://u:p@r2/app?target_session_attrs=any"], None).unwrap();
        assert_eq!(c.replica_urls.0.len(), 2, "{:?}", c.replica_urls);
        assert_eq!(c.replica_max_lag_ms, 5000);
    }

    fn err(args: &[&str], file: &str) -> String {
        match load(args, Some(file)) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults() {
        let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let c = load(&["--database-url", URL], None).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.body_limit, 1024 * 1024);
        assert_eq!(c.pool_size, 16);
        assert_eq!(c.statement_timeout, Duration::from_millis(5000));
        assert_eq!(c.anon_statement_timeout, Duration::from_millis(1000));
        assert_eq!(c.jwks_refresh, Duration::from_secs(30));
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.max_result_bytes, 16 << 20);
        let l = c.limits();
        assert!(l.enabled);
        assert_eq!(l.auth_per_account.count, 10);
        assert_eq!(l.signup_per_ip.per, Duration::from_secs(3600));
        let caps = c.in_flight_caps();
        let held: Vec<_> = (0..4).map(|_| caps.per_ip.try_acquire("1.2.3.4").unwrap()).collect();
        assert!(caps.per_ip.try_acquire("1.2.3.4").is_err(), "a quarter of the pool (16) in flight per IP by default");
        let held_user: Vec<_> = (0..4).map(|_| caps.per_user.try_acquire("u").unwrap()).collect();
        assert!(caps.per_user.try_acquire("u").is_err(), "4 in flight per user by default");
        let held_anon: Vec<_> = (0..8).map(|_| caps.anonymous.try_acquire("anonymous").unwrap()).collect();
        assert!(caps.anonymous.try_acquire("anonymous").is_err(), "half the pool for anonymous requests by default");
        drop((held, held_user, held_anon));
        let c = load(&["--database-url", URL, "--pool-size", "3"], None).unwrap();
        let caps = c.in_flight_caps();
        assert_eq!((caps.per_ip.max(), caps.anonymous.max()), (1, 1), "a small pool still lets each caller in");
        let c = load(&["--database-url", URL, "--max-db-requests-per-ip", "0", "--max-anonymous-db-requests", "5"], None).unwrap();
        let caps = c.in_flight_caps();
        assert_eq!((caps.per_ip.max(), caps.anonymous.max()), (0, 5), "set, they are as set");
    }

    #[test]
    fn mail_settings_are_checked_at_start_up() {
        let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let c = load(&["--database-url", URL], None).unwrap();
        assert!(c.smtp_url.is_none());
        assert_eq!((c.smtp_timeout, c.mail_poll_secs, c.mail_batch, c.mail_concurrency, c.mail_lease), (Duration::from_secs(30), 5, 10, 4, Duration::from_secs(120)));
        let c = load(&["--database-url", URL, "--smtp-url", "smtp://127.0.0.1:2525", "--mail-poll-secs", "0"], None).unwrap();
        assert_eq!(c.mail().unwrap().smtp_url, "smtp://127.0.0.1:2525");
        let msg = |args: &[&str]| match load(args, None) {
            Ok(c) => panic!("accepted: {:?}", c.smtp_url),
            Err(e) => e.to_string(),
        };
        let e = msg(&["--database-url", URL, "--smtp-url", "smtp://me:hunter2@mail.example.com"]);
        assert!(e.contains("unencrypted") && !e.contains("hunter2"), "{e}");
        assert!(msg(&["--database-url", URL, "--smtp-url", "smtp://127.0.0.1", "--smtp-timeout-secs", "200"]).contains("mail_lease_secs"));
        assert!(msg(&["--database-url", URL, "--smtp-ca-file", "/x.pem"]).contains("need smtp_url"));
        assert!(msg(&["--database-url", URL, "--mail-concurrency", "65"]).contains("mail_concurrency"));
        let dir = std::env::temp_dir().join(format!("pgbaas-smtp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let c = load(&["--database-url", URL, "--smtp-url", "smtps://me@mail.example.com", "--smtp-password-file", pw.to_str().unwrap()], None).unwrap();
        assert_eq!(c.mail().unwrap().password.as_deref(), Some("s3cret"), "one line, its newline dropped");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let e = msg(&["--database-url", URL, "--smtp-url", "smtps://mail.example.com", "--smtp-ca-file", ca.to_str().unwrap()]);
        assert!(e.contains("smtp_ca_file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_then_environment_then_flags() {
        let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let file = "port = 9000\nbody_limit = 4096\npool_size = 3\nthreads = 2\n";
        let c = load(&["--database-url", URL], Some(file)).unwrap();
        assert_eq!((c.listen.port(), c.body_limit, c.pool_size), (9000, 4096, 3), "the file beats defaults");
        std::env::set_var("PGBAAS_POOL_SIZE", "5");
        std::env::set_var("PGBAAS_THREADS", "4");
        let c = load(&["--database-url", URL, "--threads", "6", "--port", "9100"], Some(file));
        std::env::remove_var("PGBAAS_POOL_SIZE");
        std::env::remove_var("PGBAAS_THREADS");
        let c = c.unwrap();
        assert_eq!(c.body_limit, 4096, "file, nothing above it");
        assert_eq!(c.pool_size, 5, "the environment beats the file");
        assert_eq!(c.threads, 6, "a flag beats the environment");
        assert_eq!(c.listen.port(), 9100, "a flag beats the file");
        let c = load(&[], Some(&format!("database_url = \"{URL}\"\nlisten = \"127.0.0.1:7000\"\nport = 1"))).unwrap();
        assert_eq!(c.database_url, URL);
        assert_eq!(c.listen, "127.0.0.1:7000".parse().unwrap(), "listen beats port");
    }

    #[test]
    fn unknown_file_keys_are_refused_by_name() {
        let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let e = err(&["--database-url", URL], "listen = \"127.0.0.1:1\"\nbodylimit = 3\n");
        assert!(e.contains("unknown key `bodylimit`"), "{e}");
        assert!(err(&["--database-url", URL], "config = \"other.toml\"").contains("unknown key `config`"));
        assert!(err(&["--database-url", URL], "port = [1, 2]").contains("port: expected one value"));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let u = &["--database-url", URL][..];
        assert!(err(u, "body_limit = 10").contains("body_limit: must be 1024..=268435456 bytes, got 10"));
        assert!(err(u, "listen = \"nonsense\"").contains("listen: \"nonsense\" is not an address"));
        assert!(err(u, "pool_size = 0").contains("pool_size"));
        assert!(err(u, "rate_limits = \"sometimes\"").contains("rate_limits: must be on or off"));
        assert!(err(u, "rate_limit_auth_per_minute = 0").contains("rate_limit_auth_per_minute"));
        assert!(err(u, "trusted_proxies = [\"10.0.0.0/99\"]").contains("trusted_proxies"));
        assert!(err(u, "max_result_bytes = 10").contains("max_result_bytes"));
        // A URL setting the proxy cannot honour stops it at start, named.
        assert!(err(&[], "database_url = \"postgres://u@h/db?sslmode=verify-full\"").contains("sslrootcert"));
        assert!(err(&[], "database_url = \"hostaddr=10.0.0.1 user=u sslmode=verify-full sslrootcert=/etc/hostname\"").contains("host name"));
        assert!(err(u, "statement_timeout_ms = \"soon\"").contains("statement_timeout_ms: must be a whole number"));
        assert!(err(&[], "").contains("database_url is required"));
        assert!(err(&[], "database_url = \"postgres://x:notaport/db\"").contains("not a valid Postgres"));
        // The same checks for flags and the environment, naming flag and variable.
        let e = load(&["--database-url", URL, "--body-limit", "5"], None).unwrap_err().to_string();
        assert_eq!(e, "body_limit (flag --body-limit, env PGBAAS_BODY_LIMIT): must be 1024..=268435456 bytes, got 5");
        std::env::set_var("PGBAAS_HEADER_TIMEOUT_SECS", "0");
        let e = load(&["--database-url", URL], None).unwrap_err().to_string();
        std::env::remove_var("PGBAAS_HEADER_TIMEOUT_SECS");
        assert!(e.starts_with("header_timeout_secs (flag --header-timeout-secs"), "{e}");
        assert!(e.ends_with("must be 1..=600 seconds, got 0"), "{e}");
        assert!(matches!(load(&["--no-such-flag"], None), Err(ConfigError::Cli(_))));
    }

    #[test]
    fn rate_limits_can_be_turned_off_and_proxies_trusted() {
        let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let c = load(&["--database-url", URL, "--rate-limits", "off"], None).unwrap();
        assert!(!c.limits().enabled);
        let caps = c.in_flight_caps();
        let held: Vec<_> = (0..100).map(|_| caps.per_ip.try_acquire("1.2.3.4").unwrap()).collect();
        assert!(caps.anonymous.try_acquire("anonymous").is_ok());
        assert_eq!(held.len(), 100, "no caps on requests in flight either");
        let c = load(&["--database-url", URL], Some("rate_limits = false\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]")).unwrap();
        assert!(!c.limits().enabled);
        assert_eq!(c.trusted_proxies.len(), 2);
        std::env::set_var("PGBAAS_TRUSTED_PROXIES", "");
        let c = load(&["--database-url", URL], None);
        std::env::remove_var("PGBAAS_TRUSTED_PROXIES");
        assert!(c.unwrap().trusted_proxies.is_empty(), "an empty variable is no setting");
        let c = load(&["--database-url", URL, "--trusted-proxies", "10.0.0.0/8,192.0.2.1"], None).unwrap();
        assert_eq!(c.trusted_proxies, vec![Cidr::parse("10.0.0.0/8").unwrap(), Cidr::parse("192.0.2.1").unwrap()]);
    }

    /// docs/configuration.md has one row per setting: file key, flag, variable, default.
    #[test]
    fn every_setting_is_documented_as_it_is() {
        let doc = include_str!("../../docs/configuration.md");
        let rows: Vec<Vec<&str>> = doc
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect::<Vec<_>>())
            // The settings table's rows name a flag; other tables (the URL's fields) do not.
            .filter(|r| r.get(1).is_some_and(|c| c.starts_with("`--")))
            .collect();
        let mut problems = Vec::new();
        assert!(doc.contains("`--config FILE` or `PGBAAS_CONFIG`"), "the file's own setting is described above the table");
        for arg in Config::command().get_arguments().filter(|a| a.get_id() != "config") {
            let key = arg.get_id().as_str();
            let flag = format!("`--{}", arg.get_long().unwrap_or_default());
            let env = format!("`{}`", arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default());
            let default = arg.get_default_values().first().map(|d| d.to_string_lossy().into_owned());
            let expected = format!("| `{key}` | {flag}` | {env} | {} | … |", default.clone().unwrap_or_default());
            let Some(row) = rows.iter().find(|r| r[0] == format!("`{key}`")) else {
                problems.push(format!("missing: {expected}"));
                continue;
            };
            let default_ok = arg.is_hide_default_value_set()
                || default.as_deref().map_or(true, |d| row.get(3).map(|c| c.trim_matches('`')) == Some(d));
            if row.len() < 5 || !row[1].starts_with(&flag) || row[2] != env || !default_ok {
                problems.push(format!("differs: {}\n   code says: {expected}", row.join(" | ")));
            }
        }
        for row in &rows {
            let key = row[0].trim_matches('`');
            if !Config::command().get_arguments().any(|a| a.get_id() == key) {
                problems.push(format!("documented but not a setting: {key}"));
            }
        }
        assert!(problems.is_empty(), "docs/configuration.md and config.rs disagree:\n{}", problems.join("\n"));
    }
}
