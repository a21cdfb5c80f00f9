//! pgbaas-proxy: the HTTP edge of pgbaas. See docs/configuration.md.

mod config;
mod db;
mod deadline;
mod edge;
mod errors;
mod files;
mod housekeeping;
#[cfg(test)]
mod fuzz_tests;
mod jwt;
mod keys;
mod mail;
// --- A. Observe (issue 19): request ids, JSON request logs, the /metrics listener.
mod observe;
#[allow(dead_code)] // series are filled in by issue 19's packages
mod metrics;
mod oidc;
// --- B describe (issue 19): the OpenAPI document of the route table.
mod openapi;
mod parse;
use pgbaas_proxy::{pgconfig, pgwire};
mod ratelimit;
// Transports and hub are being built on it (issue 14); until they land, its items are unused.
#[allow(dead_code)]
mod realtime;
mod replicas;
mod router;
mod routes;
mod server;
mod tls;
mod webhooks;

use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cfg = match config::Config::load() {
        Ok(c) => c,
        Err(config::ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("pgbaas-proxy: configuration error: {e}");
            std::process::exit(2);
        }
    };

    // Load keys once before serving, on a throwaway runtime: a proxy that cannot verify
    // tokens must not start. Retries cover a database that is still starting.
    let initial = match load_initial_keys(&cfg) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("pgbaas-proxy: {e}");
            std::process::exit(1);
        }
    };

    let pools = db::make_pool(&cfg.database_url, cfg.pool_timeout)
        .and_then(|p| Ok((p, db::make_request_pool(&cfg.database_url, cfg.pool_size, cfg.pool_timeout, cfg.max_result_bytes)?)));
    let (pool, requests) = match pools {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pgbaas-proxy: {e}");
            std::process::exit(2);
        }
    };
    let keys = Arc::new(jwt::KeyCache::new(initial, cfg.jwks_refresh));

    let mut conf = ServerConf::default();
    conf.threads = cfg.threads;
    // Graceful stop (issue 19, edge): pingora sleeps its grace period whole after
    // SIGTERM; edge::Drain exits as soon as nothing is in flight, and within the grace.
    conf.grace_period_seconds = Some(cfg.shutdown_grace.as_secs());
    conf.graceful_shutdown_timeout_seconds = Some(1);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // Key rotations arrive by LISTEN/NOTIFY on a connection of their own.
    let listener = keys::KeyListener {
        database_url: cfg.database_url.clone(),
        keys: keys.clone(),
        retire: db::retire_handle(&requests),
        version: std::sync::Mutex::new(None),
    };
    server.add_service(pingora::services::background::background_service("key listener", listener));

    // Live feeds (issue 14): the hub, and the capture's leader and reader on
    // connections of their own. Start-ups run on the requests' pool (hub.rs says why).
    let hub = Arc::new(realtime::hub::Hub::new(
        cfg.hub(),
        Some(realtime::hub::SqlAccess { pool: requests.clone(), timeouts: Arc::new(db_timeouts(&cfg)) }),
    ));
    let capture = realtime::capture::Capture { database_url: cfg.database_url.clone(), hub: hub.clone() };
    server.add_service(pingora::services::background::background_service("realtime capture", capture));
    let hub_for_metrics = hub.clone(); // (issue 19, observe)
    // What the transports subscribe through (server.rs hands connections over).
    let feeds: Arc<dyn realtime::Feeds> = hub;

    let listen = cfg.listen.to_string();
    let limiter = ratelimit::Limiter::new(cfg.limits());
    let timeouts = db_timeouts(&cfg);
    let in_flight = cfg.in_flight_caps();
    // One database check a second at most, however many callers (server::HealthCheck).
    let health = server::HealthCheck::new(Duration::from_secs(1));
    let realtime_caps = cfg.realtime_caps();
    let transfers = cfg.transfers();
    let thumbs = cfg.thumbs();
    // Expired upload sessions are swept in the background (files/cleanup.rs).
    let cleanup = files::cleanup::Cleanup { pool: pool.clone(), every: Duration::from_secs(cfg.upload_cleanup_secs) };
    server.add_service(pingora::services::background::background_service("upload cleanup", cleanup));
    // Email (issue 16): the outbox's SMTP worker, when an SMTP server is configured.
    if cfg.smtp_url.is_some() && cfg.mail_poll_secs > 0 {
        let worker = cfg.mail().and_then(|m| mail::MailWorker::new(cfg.database_url.clone(), pool.clone(), m));
        match worker {
            Ok(w) => {
                server.add_service(pingora::services::background::background_service("mail worker", w));
            }
            Err(e) => {
                eprintln!("pgbaas-proxy: configuration error: {e}");
                std::process::exit(2);
            }
        }
    }
    // Housekeeping (issue 18): baas.housekeeping() every housekeeping_secs.
    let hk = housekeeping::Housekeeping { pool: pool.clone(), every: Duration::from_secs(cfg.housekeeping_secs) };
    server.add_service(pingora::services::background::background_service("housekeeping", hk));
    // Webhooks (issue 18): the outbox's delivery worker.
    if let Some(w) = cfg.webhooks() {
        let worker = webhooks::WebhookWorker::new(cfg.database_url.clone(), pool.clone(), w);
        server.add_service(pingora::services::background::background_service("webhook worker", worker));
    }
    // OpenID Connect (issue 16): providers' keys fetched into Postgres, which verifies ID tokens.
    let oidc = oidc::JwksFetcher::new(pool.clone(), cfg.oidc());
    server.add_service(pingora::services::background::background_service("oidc keys", oidc::jwks::JwksService(oidc.clone())));
    // --- B describe (issue 19): the OpenAPI document is made once, before serving.
    let _ = openapi::document();
    // --- edge (issue 19): CORS, TLS, graceful stop, connection caps.
    let edge = edge::Edge::new(&cfg);
    let edge_signals = edge.signals(Duration::from_secs(cfg.shutdown_delay_secs));
    server.add_service(pingora::services::background::background_service("graceful stop", edge.drain(cfg.shutdown_grace)));
    // A request still waiting for a pool connection and then running its statement when
    // the grace ends is cut; a balancer retrying it elsewhere could apply it twice
    // (docs/operations.md, "Restarting without failed requests").
    if cfg.shutdown_grace <= cfg.pool_timeout + cfg.statement_timeout {
        log::warn!(
            "shutdown_grace_secs ({:?}) is not above pool_timeout_secs + statement_timeout_ms ({:?}): a request in flight at a stop may be cut; raise it",
            cfg.shutdown_grace,
            cfg.pool_timeout + cfg.statement_timeout
        );
    }
    // --- E. read replicas (issue 19): a request pool per replica, and their watch.
    let replicas = {
        let size = cfg.replica_pool_size.unwrap_or(cfg.pool_size);
        let wait = Duration::from_millis(cfg.replica_wait_ms);
        let max_lag_time = Duration::from_millis(cfg.replica_max_lag_ms);
        match replicas::Replicas::new(&cfg.replica_urls.0, size, cfg.pool_timeout, cfg.max_result_bytes, wait, cfg.replica_max_lag_bytes, max_lag_time) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                eprintln!("pgbaas-proxy: replica_urls: {e}");
                std::process::exit(2);
            }
        }
    };
    let watch = replicas::ReplicaWatch::new(replicas.clone(), requests.clone(), db_timeouts(&cfg));
    server.add_service(pingora::services::background::background_service("replica watch", watch));
    // --- A. Observe (issue 19): JSON request logs and the /metrics listener (observe.rs).
    observe::init(cfg.log_format == "json", cfg.metrics_listen.is_some());
    if let Some(addr) = cfg.metrics_listen {
        let (requests, hub) = (requests.clone(), hub_for_metrics);
        let gauges = Box::new(move || {
            let p = db::pool_use(&requests);
            metrics::POOL_IN_USE.set((p.size - p.available.min(p.size)) as i64);
            metrics::POOL_WAITING.set(p.waiting as i64);
            metrics::REALTIME_SUBSCRIPTIONS.set(hub.count() as i64);
        });
        // A scrape's head has header_timeout too, as on the public listener.
        let app = deadline::HeadDeadline { inner: Arc::new(observe::MetricsApp { gauges }), limit: cfg.header_timeout, conns: None, tls: None };
        let mut service = Service::new("pgbaas metrics".to_string(), app);
        service.add_tcp(&addr.to_string());
        server.add_service(service);
        println!("pgbaas-proxy metrics on http://{addr}/metrics");
    }
    // The Parse door (issue 21): its settings checked before anything listens.
    let parse = match parse::Door::from_config(&cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pgbaas-proxy: {e}");
            std::process::exit(2);
        }
    };
    let app = server::App { timeouts, cfg, pool, requests, keys, limiter, in_flight, health, feeds, realtime_caps, transfers, thumbs, oidc, edge, replicas, parse };
    let header_timeout = app.cfg.header_timeout;
    let conns = edge::ConnCap::new(app.cfg.max_connections_per_ip, &app.cfg.trusted_proxies, app.edge.cors.clone()); // (issue 19, edge)
    // TLS (issue 19, edge): the pair is checked before serving; SIGHUP re-reads it.
    let tls = match (&app.cfg.tls_cert_file, &app.cfg.tls_key_file) {
        (Some(cert), Some(key)) => {
            let acceptor = tls::Certs::load(cert.clone(), key.clone()).and_then(|certs| {
                server.add_service(pingora::services::background::background_service("tls reload", tls::Reload(certs.clone())));
                certs.acceptor(app.cfg.tls_http2)
            });
            match acceptor {
                Ok(a) => Some(a),
                Err(e) => {
                    eprintln!("pgbaas-proxy: configuration error: tls_cert_file/tls_key_file: {e}");
                    std::process::exit(2);
                }
            }
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let http = deadline::HeadDeadline { inner: Arc::new(app), limit: header_timeout, conns, tls };
    let mut service = Service::new("pgbaas http".to_string(), http);
    // pingora's default per-connection L4 read buffer is 64 KiB (zero-filled when the
    // connection is accepted): most of what an idle realtime connection held (measured
    // with pgbaas-bench --realtime, 2000 subscribers: 59 KiB each with it). Plaintext
    // HTTP/1 gains little from it: the session reads heads and bodies into its own
    // buffers (a read as large as the buffer bypasses it).
    let l4 = pingora::protocols::l4::stream::L4BufferSettings::new(4096, 1460);
    service.add_listener(pingora::listeners::ListenerConfig::tcp(listen.as_str()).l4_buffer(l4));
    server.add_service(service);
    println!("pgbaas-proxy listening on {scheme}://{listen}");
    // SIGTERM's delay before the graceful stop (edge::Signals).
    let signals = Box::new(edge_signals);
    server.run(pingora::server::RunArgs { shutdown_signal: signals });
    std::process::exit(0);
}

fn db_timeouts(cfg: &config::Config) -> db::Timeouts {
    db::Timeouts {
        statement: format!("{}ms", cfg.statement_timeout.as_millis()),
        anon_statement: format!("{}ms", cfg.anon_statement_timeout.min(cfg.statement_timeout).as_millis()),
        // A request runs two statements under the timeout; the margin is for the network.
        answer: cfg.statement_timeout * 2 + std::time::Duration::from_secs(10),
    }
}

fn load_initial_keys(cfg: &config::Config) -> Result<jwt::KeySet, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match try_load(&cfg.database_url).await {
                Ok(k) => return Ok(k),
                Err((e, retry)) if retry && Instant::now() < deadline => {
                    log::warn!("waiting for the database: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    })
}

async fn try_load(url: &str) -> Result<jwt::KeySet, (String, bool)> {
    let cfg = db::keys_config(url).map_err(|e| (e, false))?;
    // Down, starting, or a standby that may be promoted: worth waiting for. A refusal
    // by our own rules (TLS, the password rule) or by the server's is not.
    let (client, conn) = pgconfig::connect_client(&cfg, Duration::from_secs(10))
        .await
        .map_err(|(e, retry)| (format!("cannot connect to the database: {e}"), retry))?;
    let task = tokio::spawn(conn);
    let row = client
        .query_one(keys::KEYS_SQL, &[])
        .await
        .map_err(|e| {
            let hint = match e.as_db_error().map(|d| d.code().code()) {
                Some("3F000") | Some("42883") => " (is the pgbaas extension created in this database? CREATE EXTENSION pgbaas)",
                Some("42501") => " (connect as baas_authenticator or a role that may call baas.jwks())",
                _ => "",
            };
            (format!("cannot load signing keys: {e}{hint}"), false)
        })?;
    drop(client);
    let _ = task.await;
    keys::key_set(&row).map_err(|e| (e, false))
}
