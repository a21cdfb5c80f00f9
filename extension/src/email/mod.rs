//! Email templates (issue 16): `{{ name }}` placeholders filled from a JSON object.
//! Plain logic, no Postgres: `api/email.rs` is the SQL face (`baas._render_template`,
//! `baas._check_template`), sql/email.sql the outbox that uses them.
pub mod template;
