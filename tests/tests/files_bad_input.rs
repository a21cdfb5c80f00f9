//! End-to-end: bad file input gets a clear 4xx JSON error and stores nothing: a declared
//! type the bytes contradict, a type the bucket refuses, oversize (declared or chunked),
//! over quota (also when two uploads finish at once), a truncated body, names that try
//! to leave their place, decompression bombs and thumbnails of what is no image, and
//! malformed heads on every file route.

mod common;
use common::files::*;
use common::*;
use serde_json::json;

fn id_of(f: &serde_json::Value) -> String {
    f["id"].as_str().unwrap().to_string()
}

#[test]
fn declared_type_vs_magic_415() {
    let b = bucket("magic", json!({}));
    let a = signup("magic");
    let t = Some(a.access.as_str());
    let mut jpeg = JPEG_HEAD.to_vec();
    jpeg.extend_from_slice(&bytes(1, 3000));
    let random = bytes(2, 4000);
    for (what, body, ct) in [
        ("PNG declared JPEG", PNG_1X1, "image/jpeg"),
        ("PNG declared text", PNG_1X1, "text/plain"),
        ("random declared PNG", &random[..], "image/png"),
        ("PDF declared PNG", PDF, "image/png"),
        ("JPEG declared PDF", &jpeg[..], "application/pdf"),
    ] {
        let r = upload(t, &b, "x", body, ct);
        assert_eq!((r.status, r.code()), (415, "content_type_mismatch"), "{what}: {}", r.body);
    }
    // Through the streaming path (more than one piece): checked at the finish.
    let big = bytes(3, 2 * MIB + 1);
    let r = upload(t, &b, "big.png", &big, "image/png");
    assert_eq!((r.status, r.code()), (415, "content_type_mismatch"), "{}", r.body);
    // Undeclared: the sniffed type is stored; aliases are normalised.
    let png = upload_ok(t, &b, "p", PNG_1X1, "application/octet-stream");
    assert_eq!(png["content_type"], "image/png");
    let jpg = upload_ok(t, &b, "j", &jpeg, "image/jpg");
    assert_eq!(jpg["content_type"], "image/jpeg");
    let d = download(t, &file_path(&id_of(&png)), &[]);
    assert_eq!(d.header("content-type"), Some("image/png"));
    assert_nothing_stored(&b, &[&id_of(&png), &id_of(&jpg)]);
}

#[test]
fn bucket_type_allowlist_415() {
    let b = bucket("allow", json!({"file_types": ["image/*", "application/pdf"]}));
    let a = signup("allow");
    let t = Some(a.access.as_str());
    for (what, body, ct) in [
        ("text", &b"hello"[..], "text/plain"),
        ("octets", &bytes(5, 100)[..], "application/octet-stream"),
        ("HTML", &b"<!DOCTYPE html><html></html>"[..], "text/html"),
    ] {
        let r = upload(t, &b, "x", body, ct);
        assert_eq!((r.status, r.code()), (415, "unsupported_file_type"), "{what}: {}", r.body);
    }
    let png = upload_ok(t, &b, "p.png", PNG_1X1, "application/octet-stream");
    let pdf = upload_ok(t, &b, "d.pdf", PDF, "application/pdf");
    // tus: refused when the session is created, before any byte.
    let r = tus_create_at(&base(), t, 100, &[("bucket", &b), ("filename", "t.txt"), ("filetype", "text/plain")]);
    assert_eq!((r.status, r.code()), (415, "unsupported_file_type"), "{}", r.body);
    // Options are checked.
    let s = service_token();
    for options in [
        json!({"bucket": true, "file_types": "image/png"}),
        json!({"bucket": true, "file_types": ["not a type"]}),
        json!({"bucket": true, "max_file_size": -1}),
        json!({"bucket": true, "file_refs": "maybe"}),
        json!({"bucket": "yes"}),
    ] {
        let r = post("/v1/collections", Some(&s), json!({"name": format!("badopt_{}", std::process::id()), "options": options}));
        assert_eq!((r.status, r.code()), (400, "invalid_options"), "{options}: {}", r.body);
    }
    assert_nothing_stored(&b, &[&id_of(&png), &id_of(&pdf)]);
}

/// Status of the answer on `c`, tolerating a server that closed while we still sent.
fn lenient_status(c: &mut RawConn) -> u16 {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    c.s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    raw_status(&String::from_utf8_lossy(&buf))
}

#[test]
fn oversize_413_before_body() {
    let b = bucket("oversize", json!({"max_file_size": MIB}));
    let free = bucket("oversize_free", json!({}));
    let a = signup("oversize");
    let t = Some(a.access.as_str());
    for (bucket, len) in [(&b, (2 * MIB).to_string()), (&b, (MIB + 1).to_string()), (&free, "6000000000".to_string())] {
        let mut c = RawConn::open();
        let path = format!("{}?name=big.bin", files_path(bucket));
        c.send(raw_head("POST", &path, t, &[("Content-Type", "application/octet-stream"), ("Content-Length", &len)]).as_bytes()).unwrap();
        // Not a byte of the body sent: the answer comes anyway.
        let (h, body) = c.response();
        assert_eq!(h.status, 413, "{len} bytes into {bucket}: {}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["error"]["code"], "file_too_large", "{}", String::from_utf8_lossy(&body));
    }
    // tus: the same limit at creation.
    let r = tus_create_at(&base(), t, MIB as u64 + 1, &[("bucket", &b), ("filename", "x")]);
    assert_eq!((r.status, r.code()), (413, "file_too_large"), "{}", r.body);
    let ok = upload_ok(t, &b, "exact.bin", &bytes(6, MIB), "application/octet-stream");
    assert_nothing_stored(&b, &[&id_of(&ok)]);
    assert_nothing_stored(&free, &[]);
}

#[test]
fn oversize_chunked_413() {
    let b = bucket("chunked", json!({"max_file_size": MIB}));
    let a = signup("chunked");
    let mut c = RawConn::open();
    let path = format!("{}?name=stream.bin", files_path(&b));
    let _ = c.send(
        raw_head("POST", &path, Some(&a.access), &[("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")]).as_bytes(),
    );
    let piece = bytes(7, 64 * 1024);
    for _ in 0..48 {
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(&piece);
        chunk.extend_from_slice(b"\r\n");
        if c.send(&chunk).is_err() {
            break;
        }
    }
    let _ = c.send(b"0\r\n\r\n");
    assert_eq!(lenient_status(&mut c), 413, "3 MiB without a length into a 1 MiB bucket");
    assert_nothing_stored(&b, &[]);
    // Chunked within the limit is fine.
    let mut c = RawConn::open();
    let _ = c.send(
        raw_head("POST", &path, Some(&a.access), &[("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")]).as_bytes(),
    );
    for _ in 0..4 {
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(&piece);
        chunk.extend_from_slice(b"\r\n");
        c.send(&chunk).unwrap();
    }
    c.send(b"0\r\n\r\n").unwrap();
    let (h, body) = c.response();
    assert_eq!(h.status, 201, "{}", String::from_utf8_lossy(&body));
    let f: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(f["size"].as_u64(), Some(4 * 64 * 1024));
    assert_nothing_stored(&b, &[&id_of(&f)]);
}

#[test]
fn quota_413() {
    let b = bucket("quota", json!({}));
    let a = signup("quota");
    let t = Some(a.access.as_str());
    let mut db = admin();
    db.execute("insert into baas.file_quotas (user_id, bytes) values ($1::text::uuid, $2)", &[&a.id, &(3 * MIB as i64)]).unwrap();
    let one = upload_ok(t, &b, "one.bin", &bytes(8, 2 * MIB), "application/octet-stream");
    let r = upload(t, &b, "two.bin", &bytes(9, 2 * MIB), "application/octet-stream");
    assert_eq!((r.status, r.code()), (413, "quota_exceeded"), "{}", r.body);
    let r = upload(t, &b, "small.bin", &bytes(10, MIB + 1), "application/octet-stream");
    assert_eq!((r.status, r.code()), (413, "quota_exceeded"), "{}", r.body);
    let fits = upload_ok(t, &b, "fits.bin", &bytes(11, MIB), "application/octet-stream");
    let r = tus_create_at(&base(), t, 10, &[("bucket", &b), ("filename", "t.bin")]);
    assert_eq!((r.status, r.code()), (413, "quota_exceeded"), "tus creation checks the quota: {}", r.body);
    let usage: Option<(i64, i64)> = db
        .query_opt("select files, bytes from baas.file_usage() where user_id = $1::text::uuid", &[&a.id])
        .unwrap()
        .map(|r| (r.get(0), r.get(1)));
    assert_eq!(usage, Some((2, 3 * MIB as i64)));
    assert_nothing_stored(&b, &[&id_of(&one), &id_of(&fits)]);

    // Three uploads finishing at once under a 5 MiB quota: exactly two fit.
    for round in 0..3 {
        let u = signup(&format!("quota-race{round}"));
        db.execute("insert into baas.file_quotas (user_id, bytes) values ($1::text::uuid, $2)", &[&u.id, &(5 * MIB as i64)]).unwrap();
        let threads: Vec<_> = (0..3)
            .map(|i| {
                let (tok, b) = (u.access.clone(), b.clone());
                std::thread::spawn(move || upload(Some(&tok), &b, &format!("r{i}.bin"), &bytes(100 + i as u64, 2 * MIB), "application/octet-stream"))
            })
            .collect();
        let mut statuses: Vec<(u16, String)> = threads.into_iter().map(|h| h.join().unwrap()).map(|r| (r.status, r.code().to_string())).collect();
        statuses.sort();
        assert_eq!(
            statuses,
            vec![(201, String::new()), (201, String::new()), (413, "quota_exceeded".to_string())],
            "round {round}"
        );
        let used: i64 = db
            .query_one("select coalesce(sum(size), 0)::bigint from baas.files where owner = $1::text::uuid", &[&u.id])
            .unwrap()
            .get(0);
        assert_eq!(used, 4 * MIB as i64, "round {round}: the quota holds");
    }
    assert_no_orphan_blobs();
}

#[test]
fn truncated_body_stores_nothing() {
    let b = bucket("trunc", json!({}));
    let a = signup("trunc");
    for (len, sent) in [(3 * MIB, 3 * MIB / 2), (100_000, 50_000), (2 * MIB, MIB)] {
        let mut c = RawConn::open();
        let path = format!("{}?name=cut.bin", files_path(&b));
        let l = len.to_string();
        c.send(raw_head("POST", &path, Some(&a.access), &[("Content-Type", "application/octet-stream"), ("Content-Length", &l)]).as_bytes())
            .unwrap();
        c.send(&bytes(12, sent)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(c);
        assert_nothing_stored(&b, &[]);
    }
    // A multipart body cut inside the file part.
    let boundary = "cutcutcut";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n\r\n").into_bytes();
    body.extend_from_slice(&bytes(13, 2 * MIB));
    let l = (body.len() + 100).to_string();
    let ct = format!("multipart/form-data; boundary={boundary}");
    let mut c = RawConn::open();
    c.send(raw_head("POST", &files_path(&b), Some(&a.access), &[("Content-Type", &ct), ("Content-Length", &l)]).as_bytes()).unwrap();
    c.send(&body).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    drop(c);
    assert_nothing_stored(&b, &[]);
    // And a multipart body that ends without its closing boundary: 400.
    let r = send_at(&base(), "POST", &files_path(&b), Some(&a.access), &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_nothing_stored(&b, &[]);
}

#[test]
fn path_traversal_name_400() {
    let b = bucket("names", json!({}));
    let a = signup("names");
    let t = Some(a.access.as_str());
    let long = "é".repeat(150); // 300 bytes
    let bad = ["../x", "a/b", "a\\b", long.as_str(), "..", ".", "   ", "line\nbreak", "tab\there"];
    for name in bad {
        let r = upload(t, &b, name, b"~x", "application/octet-stream");
        assert_eq!((r.status, r.code()), (400, "invalid_file_name"), "{name:?}: {}", r.body);
    }
    // NUL cannot even reach Postgres as text: refused, by the proxy or the database.
    let r = upload(t, &b, "x\0y", b"~x", "application/octet-stream");
    assert_eq!(r.status, 400, "{}", r.body);
    // The name from Content-Disposition, from a form, from tus metadata.
    let r = send_at(&base(), "POST", &files_path(&b), t, &[("Content-Type", "application/octet-stream"), ("Content-Disposition", "attachment; filename=\"../evil\"")], b"~x");
    assert_eq!((r.status, r.code()), (400, "invalid_file_name"), "{}", r.body);
    let body = b"--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/passwd\"\r\n\r\n~x\r\n--zz--\r\n";
    let r = send_at(&base(), "POST", &files_path(&b), t, &[("Content-Type", "multipart/form-data; boundary=zz")], body);
    assert_eq!((r.status, r.code()), (400, "invalid_file_name"), "{}", r.body);
    let r = tus_create_at(&base(), t, 2, &[("bucket", &b), ("filename", "../x")]);
    assert_eq!((r.status, r.code()), (400, "invalid_file_name"), "{}", r.body);
    // 255 bytes is the longest name; a rename is checked the same way.
    let max = "n".repeat(255);
    let f = upload_ok(t, &b, &max, b"~x", "application/octet-stream");
    assert_eq!(f["name"], max.as_str());
    let id = id_of(&f);
    for name in ["a/b", "..", ""] {
        let r = call("PATCH", &format!("{}/meta", file_path(&id)), t, Some(&json!({"name": name}).to_string()));
        assert_eq!((r.status, r.code()), (400, "invalid_file_name"), "rename to {name:?}: {}", r.body);
    }
    let r = call("PATCH", &format!("{}/meta", file_path(&id)), t, Some(r#"{"name": "fine name.bin"}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["name"], "fine name.bin");
    assert_nothing_stored(&b, &[&id]);
}

// Thumbnail refusals (bomb 422, PDF 415, bad spec 400) are tested in files_thumbs.rs.

#[test]
fn no_500_anywhere() {
    let b = bucket("fuzzfiles", json!({}));
    let a = signup("fuzzfiles");
    let t = a.access.as_str();
    let id = id_of(&upload_ok(Some(t), &b, "f.bin", &bytes(15, 3000), "application/octet-stream"));
    let upload = tus_new(Some(t), &b, "u.bin", 100);
    let f = file_path(&id);
    let fb = files_path(&b);
    let auth = format!("Authorization: Bearer {t}\r\n");
    let tus = "Tus-Resumable: 1.0.0\r\n";
    let reqs: Vec<String> = vec![
        "GET /v1/files/not-a-uuid HTTP/1.1\r\n".into(),
        "GET /v1/files/00000000-0000-0000-0000-000000000000 HTTP/1.1\r\n".into(),
        format!("GET {f}?download=%FF HTTP/1.1\r\n{auth}"),
        format!("GET {f} HTTP/1.1\r\n{auth}Range: bytes=99999999999999999999999-\r\n"),
        format!("GET {f} HTTP/1.1\r\n{auth}Range: bytes=-99999999999999999999999\r\n"),
        format!("GET {f} HTTP/1.1\r\n{auth}Range: bytes=5-2\r\n"),
        format!("GET {f} HTTP/1.1\r\n{auth}Range: bytes=0-1\r\nIf-Range: garbage, \"x\r\n"),
        format!("GET {f} HTTP/1.1\r\n{auth}If-None-Match: \"unterminated\r\n"),
        format!("GET {f}?sig=a.b.c HTTP/1.1\r\n"),
        format!("GET {f}?sig= HTTP/1.1\r\n"),
        format!("POST {fb}?name=%FF%FE HTTP/1.1\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: 2\r\n\r\n~x"),
        format!("POST {fb}?name=a.bin HTTP/1.1\r\n{auth}Content-Length: 2\r\n\r\n~x"),
        format!("POST {fb} HTTP/1.1\r\n{auth}Content-Type: multipart/form-data\r\nContent-Length: 2\r\n\r\n~x"),
        format!("POST {fb} HTTP/1.1\r\n{auth}Content-Type: multipart/form-data; boundary=q\r\nContent-Length: 9\r\n\r\ngarbage!!"),
        format!("POST {fb} HTTP/1.1\r\n{auth}Content-Type: application/octet-stream\r\nContent-Disposition: ;;;=\"\r\nContent-Length: 2\r\n\r\n~x"),
        format!("POST {fb}?name=a.bin HTTP/1.1\r\n{auth}Content-Type: ;;;\r\nContent-Length: 2\r\n\r\n~x"),
        format!("POST /v1/collections/Bad%20Name/files?name=a HTTP/1.1\r\n{auth}Content-Length: 2\r\n\r\n~x"),
        format!("POST /v1/uploads HTTP/1.1\r\n{auth}{tus}Upload-Length: -1\r\n"),
        format!("POST /v1/uploads HTTP/1.1\r\n{auth}{tus}Upload-Length: abc\r\n"),
        format!("POST /v1/uploads HTTP/1.1\r\n{auth}{tus}Upload-Length: 99999999999999999999999\r\n"),
        format!("POST /v1/uploads HTTP/1.1\r\n{auth}{tus}Upload-Length: 10\r\nUpload-Metadata: bucket\r\n"),
        format!("POST /v1/uploads HTTP/1.1\r\n{auth}{tus}Upload-Length: 10\r\nUpload-Metadata: bucket YQ==,bucket YQ==\r\n"),
        format!("POST /v1/uploads HTTP/1.1\r\n{auth}{tus}Upload-Length: 10\r\nUpload-Metadata: bucket {},filename eA==,acl e30,data Wy\r\n", b64std(b.as_bytes())),
        format!("POST /v1/uploads HTTP/1.1\r\n{auth}{tus}Upload-Length: 10\r\nUpload-Metadata: bucket {},filename eA==,id bm9wZQ==,version eA==\r\n", b64std(b.as_bytes())),
        format!("PATCH {upload} HTTP/1.1\r\n{auth}{tus}Content-Type: application/offset+octet-stream\r\nUpload-Offset: -1\r\nContent-Length: 2\r\n\r\n~x"),
        format!("PATCH {upload} HTTP/1.1\r\n{auth}{tus}Content-Type: application/offset+octet-stream\r\nUpload-Offset: x\r\nContent-Length: 2\r\n\r\n~x"),
        format!("PATCH {upload} HTTP/1.1\r\n{auth}{tus}Content-Type: application/offset+octet-stream\r\nContent-Length: 2\r\n\r\n~x"),
        format!("PATCH {upload} HTTP/1.1\r\n{auth}{tus}Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nUpload-Checksum: sha256\r\nContent-Length: 2\r\n\r\n~x"),
        format!("PATCH {upload} HTTP/1.1\r\n{auth}{tus}Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nUpload-Checksum: sha256 !!!\r\nContent-Length: 2\r\n\r\n~x"),
        format!("PATCH /v1/uploads/not-a-uuid HTTP/1.1\r\n{auth}{tus}Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: 2\r\n\r\n~x"),
        format!("HEAD /v1/uploads/not-a-uuid HTTP/1.1\r\n{auth}{tus}"),
        format!("DELETE /v1/uploads/00000000-0000-0000-0000-000000000000 HTTP/1.1\r\n{auth}{tus}"),
        format!("PATCH {f}/meta HTTP/1.1\r\n{auth}Content-Type: application/json\r\nContent-Length: 11\r\n\r\n{{\"name\": 5}}"),
        format!("PATCH {f}/meta HTTP/1.1\r\n{auth}Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{{\"data\": []}}"),
        format!("POST {f}/link HTTP/1.1\r\n{auth}Content-Type: application/json\r\nContent-Length: 11\r\n\r\n{{\"ttl\": \"x\"}}"),
        format!("PUT {f}/acl HTTP/1.1\r\n{auth}Content-Type: application/json\r\nContent-Length: 18\r\n\r\n{{\"read\": \"public\"}}"),
        format!("DELETE {f} HTTP/1.1\r\n{auth}If-Match: banana\r\n"),
        format!("PUT {f} HTTP/1.1\r\n{auth}If-Match: \"99\"\r\nContent-Type: application/octet-stream\r\nContent-Length: 2\r\n\r\n~x"),
        format!("PUT /v1/files/not-a-uuid HTTP/1.1\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: 2\r\n\r\n~x"),
    ];
    for req in reqs {
        let mut full = req.replacen("HTTP/1.1\r\n", "HTTP/1.1\r\nHost: x\r\nConnection: close\r\n", 1);
        if let Some((head, body)) = full.clone().split_once("\r\n\r\n") {
            // Content-Length of the body as written (the cases above spell it by hand).
            let head: Vec<&str> = head.split("\r\n").filter(|l| !l.starts_with("Content-Length:")).collect();
            full = format!("{}\r\nContent-Length: {}\r\n\r\n{body}", head.join("\r\n"), body.len());
        } else {
            full.push_str("\r\n");
        }
        let resp = raw(full.as_bytes());
        let status = raw_status(&resp);
        let first = req.lines().next().unwrap_or("");
        assert!((200..500).contains(&status), "{first:?} gave {status}: {resp:.400}");
        if status >= 400 && !req.starts_with("HEAD") {
            let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
            let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
            assert!(v["error"]["code"].is_string(), "{first:?}: {status} without a JSON error: {resp:.400}");
        }
    }
    // After all that: the file is unchanged and the session where it was.
    assert_eq!(download(Some(t), &file_path(&id), &[]).body, bytes(15, 3000));
    assert_eq!(tus_offset(Some(t), &upload), 0);
    assert_eq!(call("GET", "/healthz", None, None).status, 200);
}

/// Review finding 2: the cap of 20 open upload sessions was shared by every anonymous
/// caller of a bucket, so 20 anonymous POST /v1/uploads blocked every anonymous upload
/// to it (even one-shot uploads) for the upload TTL. Now anonymous sessions are counted
/// per client address (the proxy's, here through a trusted X-Forwarded-For), and a
/// one-shot upload holds no session, so the cap never refuses it.
#[test]
fn anonymous_upload_cap_is_per_address() {
    let b = bucket("anoncap", json!({"create": ["public"]}));
    let url = env().cluster.authenticator_url().unwrap();
    let p = pgbaas_testkit::Proxy::start(&url, &["--trusted-proxies", "127.0.0.1,::1"]).expect("a proxy trusting localhost");
    let create = |ip: &str, name: &str| {
        let m = tus_metadata(&[("bucket", b.as_str()), ("filename", name)]);
        send_at(&p.base(), "POST", "/v1/uploads", None, &[TUS, ("Upload-Length", "10"), ("Upload-Metadata", &m), ("X-Forwarded-For", ip)], b"")
    };
    let mut sessions = Vec::new();
    for i in 0..20 {
        let r = create("203.0.113.7", &format!("s{i}"));
        assert_eq!(r.status, 201, "anonymous session {i}: {}", r.body);
        sessions.push(location_path(&r));
    }
    let r = create("203.0.113.7", "s20");
    assert_eq!((r.status, r.code()), (429, "too_many_uploads"), "the 21st from one address: {}", r.body);
    // A one-shot upload from that same address is not refused by the cap.
    let path = format!("{}?name=small.txt", files_path(&b));
    let r = send_at(&p.base(), "POST", &path, None, &[("Content-Type", "text/plain"), ("X-Forwarded-For", "203.0.113.7")], b"small");
    assert_eq!(r.status, 201, "a one-shot anonymous upload from a capped address: {}", r.body);
    let small = r.body["id"].as_str().unwrap().to_string();
    // Another anonymous client of the same bucket is not affected.
    let r = create("203.0.113.8", "other");
    assert_eq!(r.status, 201, "another address: {}", r.body);
    sessions.push(location_path(&r));
    for s in &sessions {
        assert_eq!(send_at(&p.base(), "DELETE", s, None, &[TUS], b"").status, 204);
    }
    admin().execute("delete from baas.documents where id = $1::text::uuid", &[&small]).unwrap();
    assert_nothing_stored(&b, &[]);
}
