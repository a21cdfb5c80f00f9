//! Email delivery (issue 16): the outbox in Postgres (sql/email.sql) holds rendered
//! messages; `MailWorker` (worker.rs) claims due ones, sends them over SMTP with lettre
//! and reports each attempt back. message.rs builds the MIME message. docs/email.md.
//!
//! Delivery is at least once: a claim commits before the SMTP conversation and its lease
//! keeps other proxies off; a proxy that dies between the server's 250 and
//! `_outbox_sent` lets the lease lapse, and the message goes again with the same
//! Message-ID (the only duplicate, which receivers can drop).

pub mod message;
pub mod worker;

pub use worker::{MailConfig, MailWorker};
