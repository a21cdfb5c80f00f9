//! Prometheus metrics (issue 19): one registry for the whole proxy, served on the
//! separate `--metrics-listen` address (package A wires the listener and the request
//! metrics). Every door registers its series here, under the `pgbaas_` prefix, so that
//! the names are in one place; docs/operations.md lists them.
//!
//! The `prometheus` crate (TiKV's): lock-free counters and histograms, text exposition.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Names are constants of this file: a clash is a programming error caught by the
    // unit test below, never at run time in production.
    if let Err(e) = REGISTRY.register(Box::new(c.clone())) {
        log::error!("metrics: {e}");
    }
    c
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help).expect("valid metric"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).expect("valid metric"))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

/// Requests answered, by route name (the route table's; `unknown` for 404s) and status.
pub static REQUESTS: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("pgbaas_http_requests_total", "HTTP requests answered, by route and status", &["route", "status"]));

/// Seconds from a request head to its answer written, by route name.
pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    let opts = HistogramOpts::new("pgbaas_http_request_duration_seconds", "Seconds from request head to answer, by route")
        .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
    register(HistogramVec::new(opts, &["route"]).expect("valid metric"))
});

/// The requests' pool: connections in use, and requests waiting for one.
pub static POOL_IN_USE: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("pgbaas_pool_connections_in_use", "Request pool connections in use"));
pub static POOL_WAITING: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("pgbaas_pool_waiting", "Requests waiting for a pooled connection"));

/// 429s, by limit kind (ratelimit::Kind's name, or `in_flight`, `connections`).
pub static RATE_LIMITED: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("pgbaas_rate_limited_total", "Requests refused by a rate limit, by kind", &["kind"]));

/// Bearer tokens refused, by reason (the error code: invalid_token, token_expired...).
pub static TOKEN_FAILURES: LazyLock<IntCounterVec> =
    LazyLock::new(|| counter_vec("pgbaas_token_verification_failures_total", "Access tokens refused, by error code", &["code"]));

/// Live feeds: open realtime connections and subscriptions, and the capture's lag.
pub static REALTIME_CONNECTIONS: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("pgbaas_realtime_connections", "Open WebSocket and SSE connections"));
pub static REALTIME_SUBSCRIPTIONS: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("pgbaas_realtime_subscriptions", "Live feed subscriptions held"));
pub static REALTIME_LAG: LazyLock<Histogram> = LazyLock::new(|| {
    let opts = HistogramOpts::new("pgbaas_realtime_lag_seconds", "Seconds from a change's commit to its delivery to the hub")
        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
    register(Histogram::with_opts(opts).expect("valid metric"))
});

/// Outbox backlogs (rows waiting), by outbox: `mail`, `webhooks`.
pub static OUTBOX_BACKLOG: LazyLock<IntGaugeVec> =
    LazyLock::new(|| gauge_vec("pgbaas_outbox_backlog", "Outbox rows waiting for delivery, by outbox", &["outbox"]));

/// Read replicas (package E): replay lag in bytes behind the primary, and whether each is
/// in rotation (1) or taken out (0), by replica (its host:port, never its password).
pub static REPLICA_LAG_BYTES: LazyLock<IntGaugeVec> =
    LazyLock::new(|| gauge_vec("pgbaas_replica_lag_bytes", "WAL bytes a replica is behind the primary", &["replica"]));
pub static REPLICA_IN_ROTATION: LazyLock<IntGaugeVec> =
    LazyLock::new(|| gauge_vec("pgbaas_replica_in_rotation", "1 when a replica takes reads, 0 when it is out", &["replica"]));

/// JSON log lines dropped because stdout did not keep up (observe.rs).
pub static LOG_LINES_DROPPED: LazyLock<IntCounter> =
    LazyLock::new(|| counter("pgbaas_log_lines_dropped_total", "JSON log lines dropped because stdout did not keep up"));

/// Every series, in Prometheus's text exposition format.
pub fn render() -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * 1024);
    if let Err(e) = TextEncoder::new().encode(&REGISTRY.gather(), &mut out) {
        log::error!("metrics: {e}");
    }
    out
}

/// Registers every series (so that a scrape shows them at zero before first use).
pub fn init() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&LATENCY);
    LazyLock::force(&POOL_IN_USE);
    LazyLock::force(&POOL_WAITING);
    LazyLock::force(&RATE_LIMITED);
    LazyLock::force(&TOKEN_FAILURES);
    LazyLock::force(&REALTIME_CONNECTIONS);
    LazyLock::force(&REALTIME_SUBSCRIPTIONS);
    LazyLock::force(&REALTIME_LAG);
    LazyLock::force(&OUTBOX_BACKLOG);
    LazyLock::force(&REPLICA_LAG_BYTES);
    LazyLock::force(&REPLICA_IN_ROTATION);
    LazyLock::force(&LOG_LINES_DROPPED);
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_series_registers_once_and_renders() {
        super::init();
        super::REQUESTS.with_label_values(&["get_document", "200"]).inc();
        let text = String::from_utf8(super::render()).unwrap();
        assert!(text.contains("pgbaas_http_requests_total{route=\"get_document\",status=\"200\"} 1"), "{text}");
        // Unlabelled series show at zero before first use (labelled ones once a child exists).
        assert!(text.contains("pgbaas_pool_connections_in_use 0"), "{text}");
        assert!(text.contains("pgbaas_realtime_lag_seconds_count 0"), "{text}");
    }
}
