//! Parse Files (issue 21, docs/parse.md) on pgbaas's files: `POST /files/{name}` stores
//! the bytes as a file of the bucket `parse_files_bucket` (`baas.upload_file`, as the
//! caller: the bucket's `create` rule, types and sizes decide), named
//! `<file id>_<name>`; its URL, `<mount>/files/<application id>/<that name>`, is
//! served by the files module's download (ranges, ETags, conditional requests) as the
//! caller, so the file's ACL decides who reads it — which Parse Server's files never had.
//! `DELETE /files/{name}` deletes it as the caller (its owner, a writer, the master key).

use super::convert::{self, ParseError};
use super::{Call, Door};
use crate::errors::ApiError;
use crate::files::{download, params, Ctx};
use crate::server::{App, Reply};
use base64::Engine;
use http::StatusCode;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Parse's INVALID_FILE_NAME and FILE_SAVE_ERROR.
pub const INVALID_FILE_NAME: i64 = 122;
pub const FILE_SAVE_ERROR: i64 = 130;

/// Parse's rule for a file name: letters, digits, `@ . ~ _ -` and spaces, not starting
/// with a space or a dot, at most 128 characters.
pub fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"@.~_- ".contains(&b))
}

/// `<file id>_<name>`: the file's id, or None for a name no upload of the door made.
pub fn file_id(stored: &str) -> Option<String> {
    let (id, rest) = stored.split_at_checked(36)?;
    rest.starts_with('_').then_some(())?;
    convert::object_id(id).ok()
}

/// The URL a file's stored name is served at, under `base` (the server URL: the
/// configured public one, else this request's scheme and Host and the mount).
pub fn url(base: &str, app_id: &str, stored: &str) -> String {
    // RFC 3986's unreserved characters stay as they are.
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string();
    format!("{base}/files/{}/{}", enc(app_id), enc(stored))
}

/// The server URL as clients reach it: `parse_public_url`, else the proxy's
/// `public_url` and the mount, else the request's scheme (TLS here) and Host and the
/// mount. (The last is the client's to say: the door logs at start-up that a production
/// setup names its URL, since a File's URL on an object is followed by every reader.)
pub fn base_url(app: &App, door: &Door, s: &ServerSession) -> String {
    if let Some(u) = app.cfg.parse_public_url.as_deref() {
        return u.trim_end_matches('/').to_string();
    }
    if let Some(u) = app.cfg.public_url.as_deref() {
        return format!("{}{}", u.trim_end_matches('/'), door.mount);
    }
    let tls = s.digest().is_some_and(|d| d.ssl_digest.is_some());
    // HTTP/2 has `:authority` in place of Host.
    let h = s.req_header();
    let host = h.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).or_else(|| h.uri.authority().map(|a| a.as_str())).unwrap_or("localhost");
    format!("{}://{host}{}", if tls { "https" } else { "http" }, door.mount)
}

/// The bytes of an upload: the request's body as it came (the REST style, its
/// Content-Type the file's), or the JavaScript SDK's JSON with `base64` and
/// `_ContentType`.
pub struct Upload {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// The JavaScript SDK's upload: `{"base64", "_ContentType", "fileData", "_ApplicationId",
/// …}`; fields not named here are skipped unread.
#[derive(serde::Deserialize)]
pub struct JsonUpload {
    base64: Option<String>,
    #[serde(rename = "_ContentType")]
    content_type: Option<String>,
    #[serde(rename = "_ApplicationId")]
    pub app_id: Option<String>,
    #[serde(rename = "_MasterKey")]
    pub master_key: Option<String>,
    #[serde(rename = "_SessionToken")]
    pub session_token: Option<String>,
    #[serde(rename = "_InstallationId")]
    pub installation_id: Option<String>,
}

impl JsonUpload {
    pub fn upload(self) -> Result<Upload, ParseError> {
        let b64 = self.base64.ok_or_else(|| ParseError::bad(FILE_SAVE_ERROR, "a file upload needs its bytes (base64)"))?;
        // A data URL's header (`data:image/png;base64,`) carries the type.
        let (declared, data) = match b64.strip_prefix("data:").and_then(|r| r.split_once(',')) {
            Some((head, data)) => (head.strip_suffix(";base64").map(str::to_string), data),
            None => (None, b64.as_str()),
        };
        // As Node's Buffer.from(…, 'base64') (Parse Server) takes it: line breaks and
        // spaces are not data, and the padding may be left out.
        let clean: Vec<u8> = data.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        );
        let bytes = lenient.decode(clean).map_err(|_| ParseError::bad(FILE_SAVE_ERROR, "the file's base64 is not valid"))?;
        Ok(Upload { bytes, content_type: self.content_type.or(declared) })
    }
}

/// Every Parse.File in a write's fields (at any depth: in arrays, in operations) as its
/// name and the URL this server serves it at.
pub fn canonical_urls(body: &mut Map<String, Value>, base: &str, app_id: &str) {
    fn walk(v: &mut Value, base: &str, app_id: &str) {
        match v {
            Value::Object(m) => {
                if m.get("__type").and_then(Value::as_str) == Some("File") {
                    match m.get("name").and_then(Value::as_str).map(str::to_string) {
                        Some(name) => {
                            m.insert("url".into(), Value::String(url(base, app_id, &name)));
                        }
                        // No name: no URL of ours to give it, and none of the client's.
                        None => {
                            m.remove("url");
                        }
                    }
                    return;
                }
                m.values_mut().for_each(|x| walk(x, base, app_id));
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, base, app_id)),
            _ => {}
        }
    }
    body.values_mut().for_each(|v| walk(v, base, app_id));
}

/// `POST /files/{name}`: `201 {"name", "url"}`.
pub(super) async fn upload(c: &Call<'_>, base: &str, app_id: &str, name: &str, up: Upload) -> Result<(StatusCode, Value), ParseError> {
    if !name_ok(name) {
        return Err(ParseError::bad(INVALID_FILE_NAME, "Filename contains invalid characters."));
    }
    let bucket = &c.app.cfg.parse_files_bucket;
    let content_type = up.content_type.filter(|t| !t.is_empty());
    let file = c
        .run("select baas.upload_file($1, $2, $3, $4::bytea)::text", &[bucket, &name, &content_type, &up.bytes])
        .await
        .map_err(|e| match e.from.as_str() {
            "collection_not_found" => ParseError::bad(FILE_SAVE_ERROR, format!("files are not set up: create the bucket {bucket:?} (docs/parse.md)")),
            // The bucket's `create` rule (Parse Server: fileUpload's enableFor…).
            _ if e.code == convert::OPERATION_FORBIDDEN => ParseError::new(StatusCode::FORBIDDEN, FILE_SAVE_ERROR, format!("File upload is not allowed for this caller: {}", e.message)),
            _ => e,
        })?;
    let id = file.get("id").and_then(Value::as_str).ok_or_else(|| ParseError::from_api(&ApiError::internal()))?;
    let stored = format!("{id}_{name}");
    Ok((StatusCode::CREATED, json!({"name": stored, "url": url(base, app_id, &stored)})))
}

/// `DELETE /files/{name}`: as the caller (the file's ACL decides), `{}`.
pub(super) async fn delete(c: &Call<'_>, stored: &str) -> Result<(StatusCode, Value), ParseError> {
    let id = file_id(stored).ok_or_else(|| ParseError::new(StatusCode::NOT_FOUND, convert::OBJECT_NOT_FOUND, "File not found."))?;
    c.run("select baas.delete_file($1::text::uuid)::text", &[&id]).await.map_err(|e| {
        if e.code == convert::OBJECT_NOT_FOUND || e.from.contains("not_found") {
            ParseError::new(StatusCode::NOT_FOUND, convert::OBJECT_NOT_FOUND, "File not found.")
        } else {
            e
        }
    })?;
    Ok((StatusCode::OK, json!({})))
}

/// A GET or HEAD of a file URL (`files/<application id>/<id>_<name>` under the mount):
/// the file's id. Other application ids and names that no upload made are not files.
pub fn download_target(door: &Door, req: &RequestHeader, rest: &str) -> Option<String> {
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        return None;
    }
    let mut segs = rest.split('/').filter(|s| !s.is_empty());
    let (Some("files"), Some(app), Some(stored), None) = (segs.next(), segs.next(), segs.next(), segs.next()) else {
        return None;
    };
    let app = percent_encoding::percent_decode_str(app).decode_utf8().ok()?;
    let stored = percent_encoding::percent_decode_str(stored).decode_utf8().ok()?;
    if !door.app_id_is(&app) {
        return None;
    }
    file_id(&stored)
}

/// Write the file to the client as the caller: a Parse session token
/// (`X-Parse-Session-Token`, resolved by Postgres) or no one. Image views and the SDKs'
/// `getData` fetch the URL with no header: a file is then read as an anonymous caller,
/// so a bucket whose files should load that way gives `read` to `public`.
pub async fn download(app: &Arc<App>, s: &mut ServerSession, id: String) -> Result<(), Reply> {
    let mut ctx: Ctx = crate::files::checked(app, s, None).await.map_err(Reply::error)?;
    let token = s.req_header().headers.get("x-parse-session-token").and_then(|v| v.to_str().ok()).filter(|t| !t.is_empty()).map(str::to_string);
    if let Some(t) = token {
        let claims = super::session_claims(app, &ctx.client_ip, &t).await.map_err(|e| {
            // As every request of the door answers an unknown session: 209, Parse's shape.
            let p = ParseError::from_api(&e);
            Reply::json(p.status, p.body())
        })?;
        ctx.set_claims(Some(claims));
    }
    download::send(app, s, ctx, id, None, params::FileQuery::default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        assert!(name_ok("hello.txt") && name_ok("my photo@2x.png") && name_ok("_a"));
        assert!(!name_ok("../etc") && !name_ok(".hidden") && !name_ok("a/b") && !name_ok("") && !name_ok(&"a".repeat(129)));
        let id = "0190f4d2-8a1b-7c3d-9e4f-000000000001";
        assert_eq!(file_id(&format!("{id}_hello.txt")).as_deref(), Some(id));
        assert_eq!(file_id(&format!("{}_x", id.to_uppercase())).as_deref(), Some(id));
        assert_eq!(file_id("tfss-abc_hello.txt"), None);
        assert_eq!(file_id(id), None);
        assert_eq!(url("http://h/parse", "app id", &format!("{id}_a b.txt")), format!("http://h/parse/files/app%20id/{id}_a%20b.txt"));
    }

    #[test]
    fn json_uploads_take_base64_and_data_urls() {
        let up = |v: Value| serde_json::from_value::<JsonUpload>(v).unwrap().upload();
        let u = up(json!({"base64": "aGVsbG8=", "_ContentType": "text/plain", "fileData": {"metadata": {}}, "_ApplicationId": "a"})).unwrap();
        assert_eq!((u.bytes.as_slice(), u.content_type.as_deref()), (&b"hello"[..], Some("text/plain")));
        let u = up(json!({"base64": "data:image/png;base64,aGk="})).unwrap();
        assert_eq!((u.bytes.as_slice(), u.content_type.as_deref()), (&b"hi"[..], Some("image/png")));
        let u = up(json!({"base64": "aGVs\nbG8"})).unwrap();
        assert_eq!(u.bytes.as_slice(), &b"hello"[..], "line breaks and no padding, as Parse Server takes them");
        assert_eq!(up(json!({"base64": "***"})).err().map(|e| e.code), Some(FILE_SAVE_ERROR));
        assert_eq!(up(json!({})).err().map(|e| e.code), Some(FILE_SAVE_ERROR));
    }

    #[test]
    fn a_written_file_s_url_is_this_server_s() {
        let mut body = json!({"photo": {"__type": "File", "name": "x_a.png", "url": "https://evil.example/steal"},
                              "list": {"__op": "Add", "objects": [{"__type": "File", "name": "b.png"}]}, "n": 1});
        canonical_urls(body.as_object_mut().unwrap(), "http://h/parse", "app");
        assert_eq!(body["photo"], json!({"__type": "File", "name": "x_a.png", "url": "http://h/parse/files/app/x_a.png"}));
        assert_eq!(body["list"]["objects"][0]["url"], "http://h/parse/files/app/b.png");
        assert_eq!(body["n"], 1);
        let mut nameless = json!({"f": {"__type": "File", "url": "https://evil.example/x"}, "g": {"__type": "File", "name": 3, "url": "https://evil.example/y"}});
        canonical_urls(nameless.as_object_mut().unwrap(), "http://h/parse", "app");
        assert_eq!(nameless, json!({"f": {"__type": "File"}, "g": {"__type": "File", "name": 3}}), "a File without a name keeps no URL");
    }
}
