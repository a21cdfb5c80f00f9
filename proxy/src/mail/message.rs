//! One outbox row as a MIME message: From, To, Subject and Message-ID from the row;
//! text/plain, or multipart/alternative with the HTML body. A row that cannot become a
//! message because of its recipient fails permanently (retrying would not change it);
//! an unusable From (`email_from`, the same for every message) is a configuration
//! error: temporary, logged as an error, so that fixing the setting saves the queue.

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::Message;

/// A claimed outbox row (`baas._outbox_claim`).
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub from_address: String,
    pub to_address: String,
    pub message_id: String,
    pub subject: String,
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub attempt: i32,
}

/// Why a row cannot become a message.
#[derive(Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The From (baas.settings.email_from): fix the setting, then it goes.
    Config(String),
    /// This message itself (its recipient): permanent.
    Message(String),
}

/// The message to send, or why the row cannot be one.
pub fn build(row: &OutboxRow) -> Result<Message, BuildError> {
    let from: Mailbox = row
        .from_address
        .parse()
        .map_err(|e| BuildError::Config(format!("the From address {:?} (baas.settings.email_from) is not usable: {e}", row.from_address)))?;
    let to: Mailbox = row.to_address.parse().map_err(|e| BuildError::Message(format!("the recipient address is not usable: {e}")))?;
    let builder = Message::builder().from(from).to(to).subject(row.subject.clone()).message_id(Some(row.message_id.clone()));
    let text = row.text_body.clone().unwrap_or_default();
    let built = match &row.html_body {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(text, html.clone())),
        None => builder.singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(text)),
    };
    built.map_err(|e| BuildError::Message(format!("the message cannot be built: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> OutboxRow {
        OutboxRow {
            id: 1,
            from_address: "My App <noreply@example.com>".into(),
            to_address: "jörg@xn--bcher-kva.de".into(),
            message_id: "<0190-abc@example.com>".into(),
            subject: "Grüße from My App".into(),
            text_body: Some("Open https://example.com/a?b=1&c=2\n".into()),
            html_body: Some("<p>Open <a href=\"https://example.com/a?b=1&amp;c=2\">it</a></p>".into()),
            attempt: 1,
        }
    }

    fn text(m: &Message) -> String {
        String::from_utf8_lossy(&m.formatted()).into_owned()
    }

    #[test]
    fn carries_the_rows_message_id_and_both_bodies() {
        let mut r = row();
        r.to_address = "user@example.org".into();
        let m = build(&r).unwrap();
        let t = text(&m);
        assert!(t.contains("Message-ID: <0190-abc@example.com>"), "{t}");
        assert!(t.contains("multipart/alternative"), "{t}");
        assert!(t.contains("text/html"), "{t}");
        assert!(t.contains("To: user@example.org"), "{t}");
        let env = m.envelope();
        assert_eq!(env.to()[0].to_string(), "user@example.org");
        assert_eq!(env.from().map(|a| a.to_string()).as_deref(), Some("noreply@example.com"));
    }

    #[test]
    fn plain_text_only_without_html() {
        let mut r = row();
        r.to_address = "user@example.org".into();
        r.html_body = None;
        let t = text(&build(&r).unwrap());
        assert!(!t.contains("multipart"), "{t}");
        assert!(t.contains("text/plain"), "{t}");
    }

    #[test]
    fn an_unusable_address_is_an_error_not_a_panic() {
        let mut r = row();
        r.to_address = "not an address".into();
        assert!(matches!(build(&r), Err(BuildError::Message(_))));
        r.to_address = "a@b.de".into();
        r.from_address = "<<bad".into();
        assert!(matches!(build(&r), Err(BuildError::Config(_))), "a bad From is the configuration's fault");
        r.from_address = "Acme, Inc. <x@y.example>".into();
        assert!(matches!(build(&r), Err(BuildError::Config(_))));
    }

    #[test]
    fn froms_that_sql_accepts_are_usable() {
        // sql/email.sql's check on settings.email_from lets these through (018_email.sql).
        for from in ["\"Acme, Inc.\" <x@mail.test>", "Acme Inc. <x@mail.test>", "Jörg's App <x@mail.test>", "x@mail.test", "My App <noreply@mail.test>"] {
            let mut r = row();
            r.to_address = "user@example.org".into();
            r.from_address = from.into();
            assert!(build(&r).is_ok(), "{from}");
        }
    }

    #[test]
    fn a_subject_cannot_add_a_header() {
        let mut r = row();
        r.to_address = "user@example.org".into();
        r.subject = "Hello\r\nBcc: evil@x.example\r\nX-Evil: 1".into();
        let t = text(&build(&r).unwrap());
        let headers = t.split("\r\n\r\n").next().unwrap_or_default();
        assert!(!headers.lines().any(|l| l.to_ascii_lowercase().starts_with("bcc:")), "{headers}");
        assert!(!headers.lines().any(|l| l.starts_with("X-Evil:")), "{headers}");
        assert_eq!(build(&r).unwrap().envelope().to().len(), 1, "no extra recipient");
    }
}
