//! Email delivery end to end (issue 16, docs/email.md): a real cluster, the real proxy
//! binary with its mail worker, and a real SMTP server (pgbaas_testkit::smtp) that can
//! refuse, defer, drop and go away. Messages are queued with `baas.send_email`, as a
//! service or a DBA would; what arrives is read back as a mail reader would.
//!
//! One cluster, sink and proxy for the binary. Each test writes to its own addresses;
//! the test that stops the sink takes the lock exclusively.

use pgbaas_testkit::smtp::{Rule, SmtpSink};
use pgbaas_testkit::{Cluster, Proxy, DB};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

const MAX_ATTEMPTS: i32 = 4;

struct Env {
    cluster: Cluster,
    sink: SmtpSink,
    /// Runs for the binary's life (its mail worker is what delivers).
    _proxy: Proxy,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let cluster = Cluster::temporary().expect("start a Postgres cluster");
        let mut db = cluster.connect("postgres", DB).unwrap();
        db.batch_execute(&format!(
            "update baas.settings set email_from = 'Test App <noreply@pgbaas.test>', app_url = 'testapp://auth',
                    app_name = 'Test App', email_retry_base = '1 second', email_retry_max = '4 seconds',
                    email_max_attempts = {MAX_ATTEMPTS}"
        ))
        .unwrap();
        let sink = SmtpSink::start();
        let url = cluster.authenticator_url().expect("authenticator password");
        let proxy = start_proxy(&url, &sink);
        Env { cluster, sink, _proxy: proxy }
    })
}

fn start_proxy(url: &str, sink: &SmtpSink) -> Proxy {
    Proxy::start(
        url,
        &["--smtp-url", &sink.url(), "--mail-poll-secs", "1", "--smtp-timeout-secs", "5", "--mail-lease-secs", "10", "--pool-size", "3"],
    )
    .expect("start the proxy with its mail worker")
}

/// Tests that only send share the sink; the one that stops it runs alone.
static SINK: RwLock<()> = RwLock::new(());
fn shared() -> RwLockReadGuard<'static, ()> {
    SINK.read().unwrap_or_else(|e| e.into_inner())
}
fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SINK.write().unwrap_or_else(|e| e.into_inner())
}

fn db() -> postgres::Client {
    env().cluster.connect("postgres", DB).unwrap()
}

fn send(db: &mut impl postgres::GenericClient, to: &str, template: &str, vars: Value, language: Option<&str>) -> i64 {
    db.query_one("select baas.send_email($1, $2, $3, $4)", &[&to, &template, &vars, &language]).unwrap().get(0)
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    status: String,
    attempts: i32,
    last_error: Option<String>,
    next_attempt_at: f64,
    message_id: String,
    bodies_cleared: bool,
    sent: bool,
}

fn row(db: &mut postgres::Client, id: i64) -> Row {
    let r = db
        .query_one(
            "select status, attempts, last_error, extract(epoch from next_attempt_at)::float8, message_id,
                    text_body is null and html_body is null, sent_at is not null
               from baas.email_outbox where id = $1",
            &[&id],
        )
        .unwrap();
    Row {
        status: r.get(0),
        attempts: r.get(1),
        last_error: r.get(2),
        next_attempt_at: r.get(3),
        message_id: r.get(4),
        bodies_cleared: r.get(5),
        sent: r.get(6),
    }
}

/// Wait until message `id` is in `status` (sent or failed are final).
fn wait_status(db: &mut postgres::Client, id: i64, status: &str, timeout: Duration) -> Row {
    let deadline = Instant::now() + timeout;
    loop {
        let r = row(db, id);
        if r.status == status {
            return r;
        }
        assert!(Instant::now() < deadline, "message {id} never became {status}: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bare(message_id: &str) -> &str {
    message_id.trim_start_matches('<').trim_end_matches('>')
}

/// Long enough for a duplicate to arrive if the worker were to send one.
fn settle() {
    std::thread::sleep(Duration::from_millis(2500));
}

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn each_message_arrives_once_with_its_message_id_rendered_and_then_its_bodies_are_cleared() {
    let _g = shared();
    let e = env();
    let mut db = db();
    let mut ids = Vec::new();
    for i in 0..10 {
        let to = format!("once-{i}@mail.test");
        let link = format!("testapp://auth?type=magic_link&token=tok{i}");
        let code = format!("{:06}", 100_000 + i);
        ids.push((to.clone(), link.clone(), code.clone(), send(&mut db, &to, "magic_link", json!({"link": link, "code": code, "email": to, "expires_minutes": 60}), None)));
    }
    for (to, link, code, id) in &ids {
        let m = e.sink.wait_for(to, WAIT).unwrap_or_else(|| panic!("no mail to {to}"));
        assert_eq!(m.link().as_deref(), Some(link.as_str()), "{}", m.text);
        assert_eq!(m.code().as_deref(), Some(code.as_str()), "{}", m.text);
        assert_eq!(m.subject, "Your Test App sign-in link");
        assert_eq!(m.from, "noreply@pgbaas.test");
        assert!(m.html.as_deref().is_some_and(|h| h.contains(&format!("href=\"{}\"", link.replace('&', "&amp;")))), "{:?}", m.html);
        let r = wait_status(&mut db, *id, "sent", WAIT);
        assert_eq!(bare(&r.message_id), m.message_id);
        assert!(r.bodies_cleared && r.sent, "{r:?}");
        assert_eq!(r.attempts, 1);
    }
    settle();
    for (to, _, _, _) in &ids {
        assert_eq!(e.sink.mails_to(to).len(), 1, "{to} got exactly one message");
    }
}

#[test]
fn variables_are_escaped_in_html_kept_raw_in_text_and_the_language_falls_back() {
    let _g = shared();
    let e = env();
    let mut db = db();
    db.batch_execute(
        "insert into baas.email_templates (name, language, subject, text_body, html_body) values
            ('probe', 'en', 'Probe for {{ name }}', 'Hi {{ name }}', '<p>Hi {{ name }}</p>'),
            ('probe', 'pt', 'Sonda para {{ name }}', 'Olá {{ name }}', '<p>Olá {{ name }}</p>')
         on conflict do nothing",
    )
    .unwrap();
    let evil = "<script>alert('x')</script> & \"co\"";
    send(&mut db, "escape@mail.test", "probe", json!({"name": evil}), Some("pt-br"));
    let m = e.sink.wait_for("escape@mail.test", WAIT).expect("the probe arrives");
    assert_eq!(m.subject, format!("Sonda para {evil}"), "pt-br falls back to pt");
    assert_eq!(m.text.trim_end(), format!("Olá {evil}"));
    let html = m.html.expect("an HTML part");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;co&quot;"), "{html}");
    assert!(!html.contains("<script>"), "{html}");

    send(&mut db, "fallback@mail.test", "probe", json!({"name": "Jörg"}), Some("de"));
    let m = e.sink.wait_for("fallback@mail.test", WAIT).expect("the second probe arrives");
    assert_eq!(m.subject, "Probe for Jörg", "no German template: the default language");
}

#[test]
fn a_refused_recipient_fails_at_once_and_the_mail_queued_after_it_still_arrives() {
    let _g = shared();
    let e = env();
    let mut db = db();
    e.sink.set_rule("poison@mail.test", Some(Rule::Reject));
    let poison = send(&mut db, "poison@mail.test", "password_changed", json!({"email": "poison@mail.test"}), None);
    let after: Vec<String> = (0..10).map(|i| format!("after-poison-{i}@mail.test")).collect();
    for to in &after {
        send(&mut db, to, "password_changed", json!({"email": to}), None);
    }
    for to in &after {
        assert!(e.sink.wait_for(to, WAIT).is_some(), "{to} arrives though an earlier message is refused");
    }
    let r = wait_status(&mut db, poison, "failed", WAIT);
    assert_eq!(r.attempts, 1, "a 5xx is not retried: {r:?}");
    assert!(r.last_error.as_deref().is_some_and(|l| l.contains("550")), "{r:?}");
    let listed: Vec<(i64, String, i32)> = db
        .query("select id, to_address, attempts from baas.email_failures where to_address = 'poison@mail.test'", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(listed, vec![(poison, "poison@mail.test".to_string(), 1)]);
    assert!(e.sink.mails_to("poison@mail.test").is_empty());

    // The DBA fixes the cause and sends it again: it arrives, once.
    e.sink.set_rule("poison@mail.test", None);
    db.execute("select baas.retry_email($1)", &[&poison]).unwrap();
    let m = e.sink.wait_for("poison@mail.test", WAIT).expect("the retried message arrives");
    let r = wait_status(&mut db, poison, "sent", WAIT);
    assert_eq!(bare(&r.message_id), m.message_id, "the same Message-ID");
    settle();
    assert_eq!(e.sink.mails_to("poison@mail.test").len(), 1);
}

#[test]
fn a_recipient_deferred_forever_gives_up_at_email_max_attempts() {
    let _g = shared();
    let e = env();
    let mut db = db();
    e.sink.set_rule("busy@mail.test", Some(Rule::TempFail));
    let id = send(&mut db, "busy@mail.test", "password_changed", json!({"email": "busy@mail.test"}), None);
    let r = wait_status(&mut db, id, "failed", Duration::from_secs(45));
    assert_eq!(r.attempts, MAX_ATTEMPTS, "{r:?}");
    assert!(r.last_error.as_deref().is_some_and(|l| l.contains("451")), "{r:?}");
    assert!(!r.bodies_cleared, "a failed message keeps its bodies for retry_email");
    assert!(e.sink.mails_to("busy@mail.test").is_empty());
    e.sink.set_rule("busy@mail.test", None);
}

#[test]
fn with_the_smtp_server_down_mail_waits_longer_each_time_then_arrives_once_when_it_returns() {
    let _g = exclusive();
    let e = env();
    let mut db = db();
    e.sink.stop();
    let tos: Vec<String> = (0..3).map(|i| format!("down-{i}@mail.test")).collect();
    let ids: Vec<i64> = tos.iter().map(|to| send(&mut db, to, "password_changed", json!({"email": to}), None)).collect();
    // The first message's attempts and when each next one is due.
    // email_max_attempts is 4 for the binary: three pending attempts to look at, with
    // room for one more before the message would fail, whatever the poll timing.
    db.execute("update baas.settings set email_max_attempts = 8", &[]).unwrap();
    let mut seen: Vec<Row> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.last().is_none_or(|r| r.attempts < 3) {
        assert!(Instant::now() < deadline, "no third attempt: {seen:?}");
        let r = row(&mut db, ids[0]);
        if r.status == "pending" && r.attempts > 0 && seen.last().is_none_or(|l| l.attempts != r.attempts) {
            seen.push(r);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = seen.last().unwrap();
    assert!(r.last_error.is_some(), "{r:?}");
    let firsts: Vec<i32> = seen.iter().map(|r| r.attempts).collect();
    assert_eq!(firsts, vec![1, 2, 3], "each pending attempt seen: {seen:?}");
    let gap1 = seen[1].next_attempt_at - seen[0].next_attempt_at;
    let gap2 = seen[2].next_attempt_at - seen[1].next_attempt_at;
    assert!(gap2 > gap1, "the waits grow: {gap1:.2} s then {gap2:.2} s ({seen:?})");
    e.sink.restart();
    db.execute(&format!("update baas.settings set email_max_attempts = {MAX_ATTEMPTS}"), &[]).unwrap();
    for (to, id) in tos.iter().zip(&ids) {
        assert!(e.sink.wait_for(to, WAIT).is_some(), "{to} arrives once the server is back");
        let r = wait_status(&mut db, *id, "sent", WAIT);
        assert!(r.attempts >= 2, "{r:?}");
    }
    settle();
    for to in &tos {
        assert_eq!(e.sink.mails_to(to).len(), 1, "{to}: nothing lost, nothing twice");
    }
}

#[test]
fn a_lost_acknowledgement_sends_again_with_the_same_message_id() {
    let _g = shared();
    let e = env();
    let mut db = db();
    e.sink.set_rule("lost@mail.test", Some(Rule::DropAfterDataOnce));
    let id = send(&mut db, "lost@mail.test", "password_changed", json!({"email": "lost@mail.test"}), None);
    let got = e.sink.wait_for_n("lost@mail.test", 2, WAIT);
    assert_eq!(got.len(), 2, "the server kept it but never said so: it comes again");
    assert!(!got[0].acknowledged && got[1].acknowledged);
    assert_eq!(got[0].message_id, got[1].message_id, "receivers can drop the duplicate");
    let r = wait_status(&mut db, id, "sent", WAIT);
    assert_eq!(r.attempts, 2);
    assert_eq!(bare(&r.message_id), got[0].message_id);
}

/// An answer to DATA later than smtp_timeout_secs (5 s here): the attempt is abandoned
/// and retried, and the connection it used is never handed to the next message (whose
/// commands would then be matched with the late answers).
#[test]
fn a_timed_out_conversation_is_retried_and_the_next_message_is_unharmed() {
    let _g = shared();
    let e = env();
    let mut db = db();
    e.sink.set_rule("slow@mail.test", Some(Rule::SlowAckOnce(7)));
    let slow = send(&mut db, "slow@mail.test", "password_changed", json!({"email": "slow@mail.test"}), None);
    let first = e.sink.wait_for("slow@mail.test", WAIT).expect("the slow message reaches the server");
    assert!(!first.acknowledged);
    // Queued while the first conversation still waits for its 250, and claimed alone
    // right after the timeout: a connection reused from it would read the late 250 as
    // the answer to this message's commands, and take a refusal for an acceptance.
    e.sink.set_rule("refused-after-slow@mail.test", Some(Rule::Reject));
    let refused = send(&mut db, "refused-after-slow@mail.test", "password_changed", json!({"email": "x"}), None);
    let r = wait_status(&mut db, refused, "failed", WAIT);
    assert!(r.last_error.as_deref().is_some_and(|l| l.contains("550")), "its own answer, a refusal: {r:?}");
    assert_eq!(r.attempts, 1, "{r:?}");
    let nexts: Vec<(String, i64)> = (0..4)
        .map(|i| {
            let to = format!("after-slow-{i}@mail.test");
            let id = send(&mut db, &to, "password_changed", json!({"email": to}), None);
            (to, id)
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let more: Vec<(String, i64)> = (0..4)
        .map(|i| {
            let to = format!("after-timeout-{i}@mail.test");
            let id = send(&mut db, &to, "password_changed", json!({"email": to}), None);
            (to, id)
        })
        .collect();
    for (to, id) in nexts.iter().chain(&more) {
        let m = e.sink.wait_for(to, WAIT).unwrap_or_else(|| panic!("{to} arrives"));
        let r = wait_status(&mut db, *id, "sent", WAIT);
        assert_eq!(r.attempts, 1, "{to}: {r:?}");
        assert_eq!(bare(&r.message_id), m.message_id, "{to}: its own message, acknowledged as its own");
    }
    let got = e.sink.wait_for_n("slow@mail.test", 2, WAIT);
    assert_eq!(got.len(), 2, "the timed-out message is sent again");
    let r = wait_status(&mut db, slow, "sent", WAIT);
    assert_eq!(r.attempts, 2, "{r:?}");
    assert_eq!(got[0].message_id, got[1].message_id);
    assert_eq!(bare(&r.message_id), got[1].message_id);
    settle();
    for (to, _) in nexts.iter().chain(&more) {
        assert_eq!(e.sink.mails_to(to).len(), 1, "{to} once");
    }
    assert!(e.sink.mails_to("refused-after-slow@mail.test").is_empty());
    e.sink.set_rule("refused-after-slow@mail.test", None);
}

/// A non-ASCII address to a server without SMTPUTF8 can never go: it fails at once.
#[test]
fn a_non_ascii_address_fails_at_once_when_the_server_lacks_smtputf8() {
    let _g = exclusive();
    let e = env();
    let mut db = db();
    e.sink.set_smtputf8(false);
    let id = send(&mut db, "jörg@mail.test", "password_changed", json!({"email": "jörg@mail.test"}), None);
    let r = wait_status(&mut db, id, "failed", WAIT);
    e.sink.set_smtputf8(true);
    assert_eq!(r.attempts, 1, "not retried: {r:?}");
    assert!(r.last_error.as_deref().is_some_and(|l| l.contains("SMTPUTF8")), "{r:?}");
    assert!(e.sink.mails_to("jörg@mail.test").is_empty());
    // With SMTPUTF8 it goes.
    db.execute("select baas.retry_email($1)", &[&id]).unwrap();
    assert!(e.sink.wait_for("jörg@mail.test", WAIT).is_some(), "delivered by a server with SMTPUTF8");
    wait_status(&mut db, id, "sent", WAIT);
}

#[test]
fn a_message_claimed_by_a_proxy_that_died_is_sent_when_its_lease_lapses() {
    let _g = shared();
    let e = env();
    let mut db = db();
    // As if another proxy claimed it and died before reporting: a lease for 2 s.
    let mut tx = db.transaction().unwrap();
    let id = send(&mut tx, "lapsed@mail.test", "password_changed", json!({"email": "lapsed@mail.test"}), None);
    tx.execute("update baas.email_outbox set status = 'sending', attempts = 1, claimed_until = now() + interval '2 seconds' where id = $1", &[&id])
        .unwrap();
    tx.commit().unwrap();
    let m = e.sink.wait_for("lapsed@mail.test", WAIT).expect("sent once the lease lapsed");
    let r = wait_status(&mut db, id, "sent", WAIT);
    assert_eq!(r.attempts, 2, "the second attempt: {r:?}");
    assert_eq!(bare(&r.message_id), m.message_id);
}

#[test]
fn two_proxies_send_each_message_once() {
    // Exclusive: the second proxy is killed at the end, which could cut another test's
    // conversation in the middle (and make it look like a bug of that test).
    let _g = exclusive();
    let e = env();
    let url = e.cluster.authenticator_url().unwrap();
    let second = start_proxy(&url, &e.sink);
    let mut db = db();
    let tos: Vec<String> = (0..50).map(|i| format!("pair-{i}@mail.test")).collect();
    // One transaction: one notification wakes both proxies at once.
    let mut tx = db.transaction().unwrap();
    let ids: Vec<i64> = tos.iter().map(|to| send(&mut tx, to, "password_changed", json!({"email": to}), None)).collect();
    tx.commit().unwrap();
    for (to, id) in tos.iter().zip(&ids) {
        assert!(e.sink.wait_for(to, WAIT).is_some(), "{to}");
        wait_status(&mut db, *id, "sent", WAIT);
    }
    settle();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for to in &tos {
        for m in e.sink.mails_to(to) {
            *per_id.entry(m.message_id).or_default() += 1;
        }
    }
    assert_eq!(per_id.len(), 50);
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    drop(second);
}

#[test]
fn send_email_refuses_what_it_cannot_send() {
    let _g = shared();
    let mut db = db();
    let detail = |db: &mut postgres::Client, sql: &str| -> (String, String) {
        let e = db.batch_execute(sql).expect_err(sql);
        let d = e.as_db_error().expect("a database error");
        (d.code().code().to_string(), d.detail().unwrap_or_default().to_string())
    };
    assert_eq!(detail(&mut db, "select baas.send_email('no address', 'password_changed')"), ("22023".into(), "invalid_email".into()));
    assert_eq!(detail(&mut db, "select baas.send_email('a@mail.test', 'no_such_template')"), ("22023".into(), "invalid_template".into()));
    assert_eq!(
        detail(&mut db, "begin; update baas.settings set email_from = null; select baas.send_email('a@mail.test', 'password_changed')"),
        ("55000".into(), "email_not_configured".into())
    );
    db.batch_execute("rollback").unwrap();
    assert_eq!(
        detail(&mut db, "begin; set local role baas_user; select baas.send_email('a@mail.test', 'password_changed')"),
        ("42501".into(), String::new())
    );
    db.batch_execute("rollback").unwrap();
    let n: i64 = db.query_one("select count(*) from baas.email_outbox where to_address = 'a@mail.test'", &[]).unwrap().get(0);
    assert_eq!(n, 0, "nothing queued");
}

#[test]
fn the_proxy_refuses_smtp_settings_it_cannot_use() {
    let e = env();
    let url = e.cluster.authenticator_url().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(pgbaas_testkit::proxy_bin())
            .args(["--listen", "127.0.0.1:0", "--database-url", &url])
            .args(args)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["--smtp-url", "smtp://me:secret@mail.example.com:25"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unencrypted") && !err.contains("secret"), "{err}");
    let (code, err) = run(&["--smtp-url", "smtp://127.0.0.1:25", "--smtp-timeout-secs", "60", "--mail-lease-secs", "30"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("mail_lease_secs"), "{err}");
    let (code, err) = run(&["--smtp-url", "ftp://127.0.0.1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("smtp_url"), "{err}");
    let (code, err) = run(&["--smtp-url", "smtp://me@127.0.0.1:25", "--smtp-password-file", "/nonexistent/pw"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("smtp_password_file"), "{err}");
}

/// STARTTLS with a private CA (`smtp_ca_file`) and AUTH with `smtp_password_file`, on a
/// cluster of its own (a proxy of the shared one would deliver these messages to the
/// shared sink). A wrong password (535) is the configuration's fault, not the message's:
/// the message stays pending, attempt after attempt; once the proxy has the right one it
/// goes over TLS as the configured user, without anyone calling retry_email.
#[test]
fn starttls_with_a_private_ca_and_auth_from_a_password_file() {
    use pgbaas_testkit::smtp::{Security, TestCa};
    let ca = TestCa::make();
    let sink = SmtpSink::start_with(0, Security { tls: Some(ca.cert_and_key()), auth: Some(("pgbaas".into(), "s3cret pw".into())) });
    let cluster = Cluster::temporary().expect("a cluster of its own");
    let mut db = cluster.connect("postgres", DB).unwrap();
    db.batch_execute("update baas.settings set email_from = 'noreply@pgbaas.test', email_retry_base = '1 second', email_retry_max = '1 second', email_max_attempts = 20").unwrap();
    let url = cluster.authenticator_url().unwrap();
    let pw = ca.dir.join("smtp-password");
    let smtp_url = format!("smtp://pgbaas@127.0.0.1:{}?tls=required", sink.port());
    let start = |password: &str| {
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        Proxy::start(
            &url,
            &[
                "--smtp-url", &smtp_url,
                "--smtp-password-file", pw.to_str().unwrap(),
                "--smtp-ca-file", ca.ca_file().to_str().unwrap(),
                "--mail-poll-secs", "1",
            ],
        )
        .expect("start the proxy with TLS and AUTH settings")
    };

    let proxy = start("wrong pw");
    let id = send(&mut db, "tls@mail.test", "password_changed", json!({"email": "tls@mail.test"}), None);
    let deadline = Instant::now() + WAIT;
    let r = loop {
        let r = row(&mut db, id);
        assert_ne!(r.status, "failed", "refused credentials fail no message: {r:?}");
        if r.attempts >= 3 && r.status == "pending" {
            break r;
        }
        assert!(Instant::now() < deadline, "no third attempt: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(r.last_error.as_deref().is_some_and(|l| l.contains("535")), "{r:?}");
    assert!(sink.auth_failures() >= 3);
    assert!(sink.mails_to("tls@mail.test").is_empty());
    drop(proxy);

    let _proxy = start("s3cret pw");
    let m = sink.wait_for("tls@mail.test", WAIT).expect("delivered with the right password");
    assert!(m.tls, "over STARTTLS");
    assert_eq!(m.user.as_deref(), Some("pgbaas"));
    let r = wait_status(&mut db, id, "sent", WAIT);
    assert_eq!(bare(&r.message_id), m.message_id);
}
