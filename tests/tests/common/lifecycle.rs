//! Helpers for the account lifecycle tests (accounts_admin.rs, accounts_anonymous.rs):
//! sign-ins with a chosen User-Agent, the session id of a token, a service call.

use super::*;
use pgbaas_testkit::realtime::Sse;
use std::time::{Duration, Instant};

/// Sign `user` in again with `user_agent`; the answer's access token.
pub fn login_as(user: &User, user_agent: &str) -> String {
    let body = json!({"email": user.email, "password": PASSWORD}).to_string();
    let r = call_with("POST", "/v1/auth/login", None, Some(&body), &[("User-Agent", user_agent)]);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["access_token"].as_str().unwrap().to_string()
}

/// The session id (claim `sid`) of an access token.
pub fn sid(access: &str) -> String {
    payload(access)["sid"].as_str().unwrap().to_string()
}

/// A call with the service token.
pub fn service(method: &str, path: &str, body: Option<Value>) -> Resp {
    call(method, path, Some(&service_token()), body.map(|b| b.to_string()).as_deref())
}

/// The next `closing` frame of an SSE stream within `limit`.
pub fn closing_sse(sse: &mut Sse, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    while let Some(m) = sse.next_json(deadline.saturating_duration_since(Instant::now())) {
        if m["type"] == "closing" {
            return m;
        }
    }
    panic!("no closing frame within {limit:?} (ended: {})", sse.ended)
}

/// Set one column of baas.settings as a DBA would.
pub fn set_setting(column: &str, value: &str) {
    admin().batch_execute(&format!("update baas.settings set {column} = {value}")).expect("update settings");
}
