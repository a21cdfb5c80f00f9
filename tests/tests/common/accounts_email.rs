//! The account email flows end to end (tests/tests/accounts_email.rs): one real
//! cluster, one real SMTP sink and one real proxy with its mail worker per binary.
//! Settings are global: a test that changes them holds `exclusive()`, the others
//! `shared()`.

use super::{request_at, Resp, User, PASSWORD};
use pgbaas_testkit::smtp::{Mail, SmtpSink};
use pgbaas_testkit::{Cluster, Proxy, DB};
use serde_json::{json, Value};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub struct MailEnv {
    pub cluster: Cluster,
    pub sink: SmtpSink,
    pub proxy: Proxy,
}

/// The settings every test starts from (and that an exclusive test puts back).
pub const DEFAULTS: &str = "update baas.settings set email_from = 'Test App <noreply@pgbaas.test>',
    app_url = 'testapp://auth', app_name = 'Test App', email_retry_base = '1 second',
    email_verification = 'off', magic_link_signup = false, email_min_interval = '0',
    email_max_per_hour = 5";

/// Cluster + SMTP sink + proxy (`--smtp-url smtp://127.0.0.1:<port> --mail-poll-secs 1`),
/// with email_from, app_url = 'testapp://auth' and no cooldown between two mails.
pub fn mail_env() -> &'static MailEnv {
    static ENV: OnceLock<MailEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let cluster = Cluster::temporary().expect("start a Postgres cluster");
        cluster.connect("postgres", DB).unwrap().batch_execute(DEFAULTS).unwrap();
        let sink = SmtpSink::start();
        let url = cluster.authenticator_url().expect("authenticator password");
        let proxy = Proxy::start(&url, &["--smtp-url", &sink.url(), "--mail-poll-secs", "1", "--pool-size", "3"])
            .expect("start the proxy with its mail worker");
        MailEnv { cluster, sink, proxy }
    })
}

static SETTINGS: RwLock<()> = RwLock::new(());
pub fn shared() -> RwLockReadGuard<'static, ()> {
    mail_env();
    SETTINGS.read().unwrap_or_else(|e| e.into_inner())
}
/// For a test that changes settings: `Restore` puts DEFAULTS back when dropped.
pub fn exclusive(settings: &str) -> (RwLockWriteGuard<'static, ()>, Restore) {
    mail_env();
    let g = SETTINGS.write().unwrap_or_else(|e| e.into_inner());
    db().batch_execute(&format!("update baas.settings set {settings}")).unwrap();
    (g, Restore)
}
pub struct Restore;
impl Drop for Restore {
    fn drop(&mut self) {
        db().batch_execute(DEFAULTS).unwrap();
    }
}

pub fn db() -> postgres::Client {
    mail_env().cluster.connect("postgres", DB).unwrap()
}

pub fn http(method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
    let body = body.map(|b| b.to_string());
    let r = request_at(&mail_env().proxy.base(), method, path, token, &[], body.as_deref());
    assert!(r.status < 500 || r.status == 503, "{method} {path} gave {}: {}", r.status, r.body);
    r
}

pub fn post(path: &str, token: Option<&str>, body: Value) -> Resp {
    http("POST", path, token, Some(body))
}

/// A new account (email_verification off: signed in at once).
pub fn signup(tag: &str) -> User {
    let email = super::email(tag);
    let r = post("/v1/auth/signup", None, json!({"email": email, "password": PASSWORD}));
    assert_eq!(r.status, 201, "{}", r.body);
    User {
        id: r.body["user"]["id"].as_str().unwrap().to_string(),
        access: r.body["access_token"].as_str().unwrap().to_string(),
        refresh: r.body["refresh_token"].as_str().unwrap().to_string(),
        email,
    }
}

pub fn login(email: &str, password: &str) -> Resp {
    post("/v1/auth/login", None, json!({"email": email, "password": password}))
}

/// The `n`-th (1-based) mail to `to` whose subject contains `subject`, waiting up to 30 s.
pub fn nth_mail(to: &str, subject: &str, n: usize) -> Mail {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: Vec<Mail> = mail_env().sink.mails_to(to).into_iter().filter(|m| m.subject.contains(subject)).collect();
        if got.len() >= n {
            return got[n - 1].clone();
        }
        assert!(Instant::now() < deadline, "no mail #{n} '{subject}' to {to} within 30 s (got {})", got.len());
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn mail(to: &str, subject: &str) -> Mail {
    nth_mail(to, subject, 1)
}

/// The code a mail asks to type into the app.
pub fn code(m: &Mail) -> String {
    let at = m.text.find("code in the app: ").expect("a code in the mail") + "code in the app: ".len();
    m.text[at..at + 6].to_string()
}

/// Messages queued to `to` (sent or not).
pub fn queued(to: &str) -> i64 {
    db().query_one("select count(*) from baas.email_outbox where to_address = $1", &[&to]).unwrap().get(0)
}
