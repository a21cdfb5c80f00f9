//! The SQL face of the email templates (extension/src/email): sql/email.sql renders
//! the outbox's messages with these and checks each stored template with `_check_template`.
use super::Json;
use crate::email::template;
use crate::error::{BaasError, OrRaise};
use pgrx::prelude::*;

impl From<template::TemplateError> for BaasError {
    fn from(e: template::TemplateError) -> BaasError {
        BaasError::InvalidTemplate(e.0)
    }
}

/// `template` with each `{{ name }}` replaced by `vars ->> name` (HTML-escaped when
/// `html`); missing names become ''. 22023 invalid_template when it cannot be parsed.
#[pg_extern(immutable, strict, parallel_safe, name = "_render_template")]
fn render_template(template: &str, vars: Json, html: bool) -> String {
    let vars = vars.value("_render_template");
    template::render(template, &vars, html).or_raise("_render_template")
}

/// 22023 invalid_template unless `template` is text with well-formed `{{ name }}` placeholders.
#[pg_extern(immutable, strict, parallel_safe, name = "_check_template")]
fn check_template(template: &str) {
    template::check(template).or_raise("_check_template")
}
