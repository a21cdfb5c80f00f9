//! Webhooks (issue 18): the outbox in Postgres (sql/webhooks.sql) holds one row per
//! event and endpoint, written in the change's own transaction; `WebhookWorker`
//! (worker.rs) claims due events, POSTs them signed the Standard Webhooks way
//! (sign.rs) and reports each attempt back. docs/webhooks.md.
//!
//! Delivery is at least once and in order per (webhook, key): a claim commits before the
//! POST and its lease keeps other proxies off; the claim hands out only the oldest
//! undelivered event of each key, so the next one waits until this one is delivered or
//! dead. A proxy that dies between the 2xx and `_webhook_delivered` lets the lease
//! lapse, and the event goes again with the same `webhook-id`.

pub mod sign;
pub mod worker;

pub use worker::{WebhookConfig, WebhookWorker};
