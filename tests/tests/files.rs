//! End-to-end: files (issue 15) over real HTTP through the real proxy. Round trips at
//! the piece boundaries and at 200 MB (streamed both ways), ranges and conditional
//! requests, the headers that keep active content from running on the API's origin,
//! multipart uploads from a browser form, an overwrite that ends a download in flight,
//! and `Expect: 100-continue`.

mod common;
use common::files::*;
use common::*;
use serde_json::json;

fn assert_file_json(f: &serde_json::Value, bucket: &str, name: &str, size: usize, sha: &str) {
    for k in ["id", "collection", "name", "size", "content_type", "sha256", "owner", "acl", "version", "created_at", "updated_at", "data"] {
        assert!(f.get(k).is_some(), "field {k} missing: {f}");
    }
    assert_eq!(f["collection"], bucket, "{f}");
    assert_eq!(f["name"], name, "{f}");
    assert_eq!(f["size"].as_u64(), Some(size as u64), "{f}");
    assert_eq!(f["sha256"], sha, "{f}");
}

#[test]
fn round_trips_with_sha256() {
    let b = bucket("rt", json!({}));
    let a = signup("rt");
    let t = Some(a.access.as_str());
    for (i, n) in [0, 1, MIB - 1, MIB, MIB + 1, 3 * MIB].into_iter().enumerate() {
        let data = bytes(i as u64 + 1, n);
        let sha = sha256_hex(&data);
        let name = format!("f{n}.bin");
        let r = upload(t, &b, &name, &data, "application/octet-stream");
        assert_eq!(r.status, 201, "{n} bytes: {}", r.body);
        assert_file_json(&r.body, &b, &name, n, &sha);
        assert_eq!(r.body["owner"], a.id.as_str());
        assert_eq!(r.body["version"], 1);
        assert_eq!(r.body["content_type"], "application/octet-stream");
        assert_eq!(r.header("etag"), Some("\"1\""), "the upload answer's ETag is the version");
        let id = r.body["id"].as_str().unwrap().to_string();
        assert_eq!(r.header("location"), Some(file_path(&id).as_str()));

        let d = download(t, &file_path(&id), &[]);
        assert_eq!(d.status, 200, "{n}");
        assert_eq!(d.body.len(), n, "{n} bytes back");
        assert!(d.body == data, "{n} bytes: the download differs from the upload");
        assert_eq!(d.header("content-length"), Some(n.to_string().as_str()));
        assert_eq!(d.header("etag"), Some(format!("\"{sha}\"").as_str()), "strong ETag = sha256");
        assert_eq!(d.header("accept-ranges"), Some("bytes"));
        assert!(d.header("last-modified").is_some());

        // The SQL door and the stored chunks agree: ≤ 1 MiB rows, in order, the same sha.
        assert_eq!(files_row(&id), Some((n as i64, sha.clone(), "application/octet-stream".to_string())));
        let (chunks, max, total, stored_sha) = stored_chunks(&id);
        assert_eq!((total, stored_sha.as_str()), (n as i64, sha.as_str()), "{n}");
        assert!(max as usize <= MIB, "a chunk of {max} bytes");
        assert_eq!(chunks as usize, n.div_ceil(MIB), "{n} bytes in {chunks} chunks");

        let m = call("GET", &format!("{}/meta", file_path(&id)), t, None);
        assert_eq!(m.status, 200, "{}", m.body);
        assert_eq!(m.body, r.body, "meta = the upload answer");
        assert_eq!(m.header("etag"), Some("\"1\""));
        // A file is a document of its bucket: GET through the documents route shows it.
        let doc = call("GET", &doc_path(&b, &id), t, None);
        assert_eq!(doc.status, 200, "{}", doc.body);
        assert_eq!(doc.body["file"]["sha256"], sha.as_str(), "{}", doc.body);
        assert_eq!(doc.body["file"]["size"].as_u64(), Some(n as u64));
    }
}

#[test]
fn round_trip_200_mb_streamed() {
    const N: u64 = 200_000_000;
    let b = bucket("big", json!({}));
    let a = signup("big");
    let t = Some(a.access.as_str());
    let mut g = Gen::new(200, N);
    let path = format!("{}?name=big.bin", files_path(&b));
    let r = send_reader_at(&base(), "POST", &path, t, &[("Content-Type", "application/octet-stream")], N, &mut g);
    assert_eq!(r.status, 201, "{}", r.body);
    let sha = g.hex();
    assert_eq!(r.body["sha256"], sha.as_str());
    assert_eq!(r.body["size"].as_u64(), Some(N));
    let id = r.body["id"].as_str().unwrap().to_string();
    let (status, headers, len, got) = download_hashed_at(&base(), t, &file_path(&id));
    assert_eq!(status, 200);
    assert_eq!((len, got.as_str()), (N, sha.as_str()), "200 MB back byte for byte");
    let etag = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("etag")).map(|(_, v)| v.clone());
    assert_eq!(etag, Some(format!("\"{sha}\"")));
    assert_eq!(files_row(&id).map(|r| (r.0, r.1)), Some((N as i64, sha)));
    let row = admin()
        .query_one(
            "select count(*), max(length(c.data)), sum(length(c.data))::bigint
               from baas.documents d join baas._file_chunks c on c.blob_id = d.blob_id where d.id = $1::text::uuid",
            &[&id],
        )
        .unwrap();
    let (chunks, max, total): (i64, i32, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(total, N as i64);
    assert!(max as usize <= MIB && chunks as u64 >= N / MIB as u64, "{chunks} chunks, largest {max}");
}

/// Chunks that do not sit at MiB boundaries (as tus PATCHes stored them before 0.8.0):
/// a piece ends where its chunk ends, and the next read starts there (a reader that
/// assumed aligned pieces, e.g. one reading ahead at MiB boundaries, would skip bytes).
/// The same bytes come back, whole and ranged.
#[test]
fn unaligned_chunks_come_back_whole_and_ranged() {
    let b = bucket("unaligned", json!({}));
    let a = signup("unaligned");
    let t = Some(a.access.as_str());
    let n = 5 * MIB + 12345;
    let data = bytes(31, n);
    let id = upload_ok(t, &b, "u.bin", &data, "application/octet-stream")["id"].as_str().unwrap().to_string();
    let mut db = admin();
    let mut tx = db.transaction().unwrap();
    let blob: String = tx.query_one("select blob_id::text from baas.documents where id = $1::text::uuid", &[&id]).unwrap().get(0);
    tx.execute("delete from baas._file_chunks where blob_id = $1::text::uuid", &[&blob]).unwrap();
    // 700,000-byte chunks: none after the first starts at a MiB boundary.
    for (k, piece) in data.chunks(700_000).enumerate() {
        let off = (k * 700_000) as i64;
        tx.execute("insert into baas._file_chunks (blob_id, off, data) values ($1::text::uuid, $2, $3)", &[&blob, &off, &piece]).unwrap();
    }
    tx.commit().unwrap();
    let d = download(t, &file_path(&id), &[]);
    assert_eq!(d.status, 200);
    assert_eq!(d.body.len(), n);
    assert!(d.body == data, "the bytes of unaligned chunks come back in order");
    for from in [1, 699_999, 700_000, MIB, 3 * MIB + 7] {
        let d = get_range(t, &id, &[("Range", &format!("bytes={from}-"))]);
        assert_eq!(d.status, 206, "from {from}");
        assert!(d.body == data[from..], "from {from}: wrong bytes");
    }
    // Ranges that end inside the file, across chunk and MiB boundaries.
    for (from, to) in [(1, 1_500_000), (699_999, 2_100_000), (MIB - 1, 2 * MIB), (3 * MIB + 7, 4 * MIB + 699_999)] {
        let d = get_range(t, &id, &[("Range", &format!("bytes={from}-{to}"))]);
        assert_eq!(d.status, 206, "{from}-{to}");
        assert!(d.body == data[from..=to], "{from}-{to}: wrong bytes");
    }
}

/// A download reads pieces ahead of its client (proxy/src/files/download.rs), each
/// read a transaction of its own that ends whether or not the client keeps reading:
/// clients that stop reading hold no pooled connection. Two such downloads through a
/// proxy with a pool of two, and an ordinary request still answers at once (a read
/// left waiting on its client would hold a connection, and the request would wait the
/// pool's 5 s and get 503).
#[test]
fn stalled_downloads_hold_no_connection() {
    let url = env().cluster.authenticator_url().unwrap();
    let proxy = pgbaas_testkit::Proxy::start(&url, &["--pool-size", "2"]).unwrap();
    let base = proxy.base();
    let b = bucket("stalled", json!({}));
    let a = signup("stalled");
    let t = Some(a.access.as_str());
    let n = 16 * MIB;
    let data = bytes(41, n);
    let id = upload_ok(t, &b, "s.bin", &data, "application/octet-stream")["id"].as_str().unwrap().to_string();
    let mut stalled: Vec<RawConn> = (0..2)
        .map(|_| {
            let mut c = RawConn::open_small_window_port(proxy.port);
            c.send(raw_head("GET", &file_path(&id), t, &[]).as_bytes()).unwrap();
            let h = c.head();
            assert_eq!(h.status, 200);
            assert!(c.body(MIB as u64 / 4) == data[..MIB / 4], "the first bytes");
            c
        })
        .collect();
    // The reads ahead have had time to end (or to stall, holding their connections).
    std::thread::sleep(std::time::Duration::from_secs(1));
    for _ in 0..3 {
        let t0 = std::time::Instant::now();
        let d = download_at(&base, "HEAD", &file_path(&id), t, &[]);
        let took = t0.elapsed();
        assert_eq!(d.status, 200, "a request beside two stalled downloads");
        assert!(took < std::time::Duration::from_secs(2), "a request beside two stalled downloads waited {took:?} for a connection");
    }
    // The stalled downloads still finish once their clients read again.
    for c in stalled.iter_mut() {
        let rest = c.body((n - MIB / 4) as u64);
        assert!(rest == data[MIB / 4..], "the rest of a stalled download");
    }
}

fn get_range(t: Option<&str>, id: &str, headers: &[(&str, &str)]) -> Download {
    download(t, &file_path(id), headers)
}

#[test]
fn ranges() {
    let b = bucket("ranges", json!({}));
    let a = signup("ranges");
    let t = Some(a.access.as_str());
    let n = 3 * MIB;
    let data = bytes(7, n);
    let sha = sha256_hex(&data);
    let id = upload_ok(t, &b, "r.bin", &data, "application/octet-stream")["id"].as_str().unwrap().to_string();
    let etag = format!("\"{sha}\"");

    for (range, from, to) in [
        ("bytes=0-0".to_string(), 0, 0),
        (format!("bytes={}-{}", n - 1, n - 1), n - 1, n - 1),
        ("bytes=1048575-1048576".to_string(), 1048575, 1048576),
        ("bytes=-10".to_string(), n - 10, n - 1),
        ("bytes=5-".to_string(), 5, n - 1),
        (format!("bytes=2000000-{}", n + 500), 2000000, n - 1),
    ] {
        let d = get_range(t, &id, &[("Range", &range)]);
        assert_eq!(d.status, 206, "{range}");
        assert_eq!(d.header("content-range"), Some(format!("bytes {from}-{to}/{n}").as_str()), "{range}");
        assert_eq!(d.header("content-length"), Some((to - from + 1).to_string().as_str()), "{range}");
        assert!(d.body == data[from..=to], "{range}: wrong bytes");
        assert_eq!(d.header("etag"), Some(etag.as_str()));
    }
    for range in ["bytes=-0".to_string(), format!("bytes={n}-"), format!("bytes={}-{}", n + 10, n + 20)] {
        let d = get_range(t, &id, &[("Range", &range)]);
        assert_eq!(d.status, 416, "{range}");
        assert_eq!(d.code(), "range_not_satisfiable", "{range}");
        assert_eq!(d.header("content-range"), Some(format!("bytes */{n}").as_str()), "{range}");
    }
    // Several ranges: the whole file (RFC 9110 lets a server ignore Range); a range it
    // cannot parse is ignored too.
    for range in ["bytes=0-1,5-9", "bytes=abc", "pages=1-2"] {
        let d = get_range(t, &id, &[("Range", range)]);
        assert_eq!(d.status, 200, "{range}");
        assert_eq!(d.header("accept-ranges"), Some("bytes"));
        assert!(d.body == data, "{range}: whole file");
    }
    // If-Range: only the current (strong) ETag honours Range. A date, even the current
    // Last-Modified, is the whole file: whole seconds cannot tell two versions written in
    // one second apart, and a resume must never splice them.
    let last_modified = get_range(t, &id, &[]).header("last-modified").unwrap().to_string();
    for (if_range, want) in [(etag.as_str(), 206), (last_modified.as_str(), 200), ("\"0000\"", 200), ("W/\"x\"", 200)] {
        let d = get_range(t, &id, &[("Range", "bytes=10-19"), ("If-Range", if_range)]);
        assert_eq!(d.status, want, "If-Range {if_range}");
        if want == 206 {
            assert!(d.body == data[10..20]);
        } else {
            assert_eq!(d.body.len(), n);
        }
    }
    // If-None-Match: 304 with the ETag and no body (weak comparison; `*`).
    for inm in [etag.clone(), format!("W/{etag}"), format!("\"abc\", {etag}"), "*".to_string()] {
        let d = get_range(t, &id, &[("If-None-Match", &inm)]);
        assert_eq!(d.status, 304, "If-None-Match {inm}");
        assert_eq!(d.header("etag"), Some(etag.as_str()));
        assert!(d.body.is_empty());
    }
    assert_eq!(get_range(t, &id, &[("If-None-Match", "\"other\"")]).status, 200);
    // HEAD: the headers of GET, no body.
    let h = download_at(&base(), "HEAD", &file_path(&id), t, &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some(n.to_string().as_str()));
    assert_eq!(h.header("etag"), Some(etag.as_str()));
    assert_eq!(h.header("accept-ranges"), Some("bytes"));
    assert!(h.body.is_empty());
    // The ranges of a file the caller may not read are a 404 like the file.
    let other = signup("ranges-b");
    let d = get_range(Some(&other.access), &id, &[("Range", "bytes=0-0")]);
    assert_eq!((d.status, d.code().as_str()), (404, "file_not_found"));
}

/// Percent-decode an RFC 5987 value.
fn pct_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn active_content_is_attachment() {
    let b = bucket("active", json!({}));
    let a = signup("active");
    let t = Some(a.access.as_str());
    let cases: Vec<(&str, &str, &[u8], bool)> = vec![
        ("page.html", "text/html", b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>", false),
        ("pic.svg", "image/svg+xml", b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>", false),
        ("app.js", "application/javascript", b"fetch('/v1/auth/user').then(r => r.text()).then(alert)", false),
        ("dot.png", "image/png", PNG_1X1, true),
        ("notes.txt", "text/plain", b"plain words\n", true),
    ];
    for (name, ct, body, inline) in cases {
        let f = upload_ok(t, &b, name, body, ct);
        assert_eq!(f["content_type"], ct, "{name}: {f}");
        let d = download(t, &file_path(f["id"].as_str().unwrap()), &[]);
        assert_eq!(d.status, 200, "{name}");
        assert!(d.body == body, "{name}");
        let cd = d.header("content-disposition").unwrap_or_else(|| panic!("{name}: no Content-Disposition"));
        let want = if inline { "inline" } else { "attachment" };
        assert!(cd.starts_with(want), "{name}: Content-Disposition {cd}");
        assert!(cd.contains(&format!("filename=\"{name}\"")), "{name}: {cd}");
        assert_eq!(d.header("x-content-type-options"), Some("nosniff"), "{name}");
        let csp = d.header("content-security-policy").unwrap_or_else(|| panic!("{name}: no CSP"));
        assert!(csp.contains("sandbox") && csp.contains("default-src 'none'"), "{name}: CSP {csp}");
        if ct == "text/plain" {
            assert_eq!(d.header("content-type"), Some("text/plain; charset=utf-8"));
        } else {
            assert_eq!(d.header("content-type"), Some(ct), "{name}");
        }
        assert_eq!(d.header("cache-control"), Some("private, no-cache"), "{name}: a private file");
        // ?download=1 asks for an attachment whatever the type.
        let d = download(t, &format!("{}?download=1", file_path(f["id"].as_str().unwrap())), &[]);
        assert!(d.header("content-disposition").unwrap().starts_with("attachment"), "{name} ?download=1");
    }
    // A UTF-8 name with quotes: an ASCII fallback with the quotes escaped, and filename*.
    let name = "résumé \"x\".pdf";
    let f = upload_ok(t, &b, name, PDF, "application/pdf");
    assert_eq!(f["name"], name);
    let id = f["id"].as_str().unwrap().to_string();
    let d = download(t, &file_path(&id), &[]);
    let cd = d.header("content-disposition").unwrap().to_string();
    assert!(cd.starts_with("inline"), "PDF is shown inline: {cd}");
    let ascii = cd.split("filename=\"").nth(1).unwrap_or_else(|| panic!("{cd}"));
    assert!(ascii.is_ascii() && ascii.contains("\\\"x\\\".pdf\""), "ASCII fallback with escaped quotes: {cd}");
    let star = cd.split("filename*=UTF-8''").nth(1).unwrap_or_else(|| panic!("no filename*: {cd}"));
    let star = star.split(';').next().unwrap().trim();
    assert!(!star.contains('"') && !star.contains(' '), "filename* is percent-encoded: {star}");
    assert_eq!(String::from_utf8(pct_decode(star)).unwrap(), name, "filename* decodes to the name: {cd}");
    // Chrome's PDF viewer refuses sandboxed documents: PDF gets a CSP without sandbox.
    let csp = d.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && !csp.contains("sandbox"), "PDF CSP {csp}");
    // Cache-Control: public once the ACL lets anyone read, still revalidated.
    let r = call("PUT", &format!("{}/acl", file_path(&id)), t, Some(r#"{"read": ["public"]}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    let d = download(None, &file_path(&id), &[]);
    assert_eq!(d.status, 200, "public file, anonymous reader");
    assert_eq!(d.header("cache-control"), Some("public, no-cache"));
}

#[test]
fn multipart_form_upload() {
    let b = bucket("form", json!({}));
    let a = signup("form");
    let boundary = "----pgbaasFormBoundary7MA4YWxk";
    let mut body = Vec::new();
    for (field, value) in [("acl", r#"{"read": ["public"]}"#), ("data", r#"{"title": "holiday"}"#)] {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n").as_bytes());
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"beach.png\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(PNG_1X1);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = send_at(&base(), "POST", &files_path(&b), Some(&a.access), &[("Content-Type", &ct)], &body);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_file_json(&r.body, &b, "beach.png", PNG_1X1.len(), &sha256_hex(PNG_1X1));
    assert_eq!(r.body["content_type"], "image/png");
    assert_eq!(r.body["data"], json!({"title": "holiday"}));
    assert!(r.body["acl"]["read"].as_array().unwrap().contains(&json!("public")), "{}", r.body);
    let d = download(None, &file_path(r.body["id"].as_str().unwrap()), &[]);
    assert_eq!(d.status, 200);
    assert!(d.body == PNG_1X1);
    // A form field after the file is refused (fields come first), and nothing is stored.
    let mut late = Vec::new();
    late.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\nContent-Type: application/octet-stream\r\n\r\nxyz\r\n").as_bytes());
    late.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"acl\"\r\n\r\n{{}}\r\n--{boundary}--\r\n").as_bytes());
    let r = send_at(&base(), "POST", &files_path(&b), Some(&a.access), &[("Content-Type", &ct)], &late);
    assert_eq!(r.status, 400, "{}", r.body);
    // Two files in one form: refused.
    let mut two = Vec::new();
    for n in ["a.bin", "b.bin"] {
        two.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{n}\"\r\n\r\nxyz\r\n").as_bytes());
    }
    two.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let r = send_at(&base(), "POST", &files_path(&b), Some(&a.access), &[("Content-Type", &ct)], &two);
    assert_eq!(r.status, 400, "{}", r.body);
    let kept = r_id(&b, &a);
    assert_nothing_stored(&b, &[kept.as_str()]);
}

fn r_id(b: &str, a: &User) -> String {
    let ids = listed_ids(b, Some(&a.access));
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0].clone()
}

#[test]
fn overwrite_mid_download_ends_it() {
    let b = bucket("midway", json!({}));
    let a = signup("midway");
    let t = Some(a.access.as_str());
    let n = 16 * MIB;
    let old = bytes(11, n);
    let old_sha = sha256_hex(&old);
    let id = upload_ok(t, &b, "v1.bin", &old, "application/octet-stream")["id"].as_str().unwrap().to_string();
    let mut c = RawConn::open_small_window();
    c.send(raw_head("GET", &file_path(&id), t, &[]).as_bytes()).unwrap();
    let h = c.head();
    assert_eq!((h.status, h.content_length()), (200, Some(n as u64)));
    let first = c.body(MIB as u64);
    assert_eq!(first.len(), MIB);
    // A new version while the old one is being read.
    let new = bytes(12, 5000);
    let r = replace(t, &id, &new, "application/octet-stream", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 2);
    let rest = c.body(n as u64 - MIB as u64);
    let got = MIB + rest.len();
    assert!(got < n, "the download of the replaced version was not cut: all {n} bytes arrived");
    assert!(first == old[..MIB] && rest == old[MIB..got], "the bytes that arrived are the old version's, unmixed");
    // The client's resume with If-Range gets the whole new version.
    let range = format!("bytes={got}-");
    let d = download(t, &file_path(&id), &[("Range", &range), ("If-Range", &format!("\"{old_sha}\""))]);
    assert_eq!(d.status, 200);
    assert!(d.body == new);
    assert_eq!(d.header("etag"), Some(format!("\"{}\"", sha256_hex(&new)).as_str()));
    // The old version's bytes are gone from the database once swept (the replace moved
    // its blob to baas._blob_trash; the proxy's cleanup service runs baas.cleanup_blobs).
    let _swept: i32 = admin().query_one("select baas.cleanup_blobs(100000)", &[]).unwrap().get(0);
    let n_old: i64 = admin()
        .query_one("select count(*) from baas._blobs where sha256 = decode($1, 'hex')", &[&old_sha])
        .unwrap()
        .get(0);
    assert_eq!(n_old, 0, "the replaced version's blob is deleted");
    assert_no_orphan_blobs();
}

#[test]
fn expect_100_continue() {
    let b = bucket("expect", json!({}));
    let a = signup("expect");
    let data = bytes(21, 2 * MIB + 5);
    let path = format!("{}?name=e.bin", files_path(&b));
    let len = data.len().to_string();
    let headers = [("Content-Type", "application/octet-stream"), ("Content-Length", len.as_str()), ("Expect", "100-continue")];
    let mut c = RawConn::open();
    c.send(raw_head("POST", &path, Some(&a.access), &headers).as_bytes()).unwrap();
    let h = c.head();
    assert_eq!(h.status, 100, "100 Continue before the body");
    c.send(&data).unwrap();
    let (h, body) = c.response();
    assert_eq!(h.status, 201, "{}", String::from_utf8_lossy(&body));
    let f: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(f["sha256"], sha256_hex(&data).as_str());
    assert_eq!(f["size"].as_u64(), Some(data.len() as u64));
    // A bad token is refused before the client sends a byte of the body.
    let mut c = RawConn::open();
    c.send(raw_head("POST", &path, Some("not.a.token"), &headers).as_bytes()).unwrap();
    let (h, body) = c.response();
    assert_eq!(h.status, 401, "{}", String::from_utf8_lossy(&body));
    // And a bucket that does not exist: 404 before the body.
    let mut c = RawConn::open();
    let nowhere = format!("{}?name=e.bin", files_path("no_such_bucket_here"));
    c.send(raw_head("POST", &nowhere, Some(&a.access), &headers).as_bytes()).unwrap();
    let (h, body) = c.response();
    assert_eq!(h.status, 404, "{}", String::from_utf8_lossy(&body));
    assert_nothing_stored(&b, &[f["id"].as_str().unwrap()]);
}

/// Finding 9 of the issue-15 review: PUT copied the file's `data` when it began and
/// wrote that copy back at its finish, so a PATCH /meta made while a long upload ran
/// was silently undone. Now a PUT sends no data and the new version keeps the data
/// the file has when the upload finishes.
#[test]
fn put_keeps_data_patched_during_the_upload() {
    let b = bucket("putdata", json!({}));
    let a = signup("putdata");
    let t = Some(a.access.as_str());
    let id = upload_ok(t, &b, "d.bin", &bytes(31, 10), "application/octet-stream")["id"].as_str().unwrap().to_string();
    let meta = format!("{}/meta", file_path(&id));
    let r = call("PATCH", &meta, t, Some(&json!({"data": {"step": "before"}}).to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    // A PUT of 3 MiB (a session, streamed), paused after its first MiB.
    let data = bytes(32, 3 * MIB);
    let len = data.len().to_string();
    let mut c = RawConn::open();
    c.send(raw_head("PUT", &file_path(&id), t, &[("Content-Type", "application/octet-stream"), ("Content-Length", &len)]).as_bytes()).unwrap();
    c.send(&data[..MIB]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = call("PATCH", &meta, t, Some(&json!({"data": {"step": "during"}}).to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    c.send(&data[MIB..]).unwrap();
    let (h, body) = c.response();
    assert_eq!(h.status, 200, "{}", String::from_utf8_lossy(&body));
    let f: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(f["sha256"], sha256_hex(&data).as_str());
    assert_eq!(f["data"], json!({"step": "during"}), "the data patched during the upload survives it");
    assert_eq!(call("GET", &meta, t, None).body["data"], json!({"step": "during"}));
    // A PUT that sends data (a multipart field) still replaces it.
    let boundary = "----pgbaasPutData";
    let mut form = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n{{\"step\": \"form\"}}\r\n").into_bytes();
    form.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.bin\"\r\n\r\nxyz\r\n--{boundary}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = send_at(&base(), "PUT", &file_path(&id), t, &[("Content-Type", &ct)], &form);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"], json!({"step": "form"}));
    assert_nothing_stored(&b, &[id.as_str()]);
}

/// A multipart body of `file` (one part, no fields) and its Content-Type.
fn form_of(file: &[u8]) -> (Vec<u8>, String) {
    let boundary = "----pgbaasBefore100";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n\r\n").into_bytes();
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

/// Send a request head with `Expect: 100-continue`; the first answer's head and body.
fn first_answer(method: &str, path: &str, token: &str, ct: &str, len: usize, extra: &[(&str, &str)]) -> (RawConn, RawHead, Vec<u8>) {
    let len = len.to_string();
    let mut h = vec![("Content-Type", ct), ("Content-Length", len.as_str()), ("Expect", "100-continue")];
    h.extend_from_slice(extra);
    let mut c = RawConn::open();
    c.send(raw_head(method, path, Some(token), &h).as_bytes()).unwrap();
    let head = c.head();
    let body = if head.status == 100 { Vec::new() } else { c.body(head.content_length().unwrap_or(0)) };
    (c, head, body)
}

/// Finding 10 of the issue-15 review: a multipart upload got its `100 Continue` before
/// any of upload_create's checks (the fields come in the body), so a refused form cost
/// the client its whole body. Now what needs no field is checked first: the right to
/// create in the bucket, the right to update the replaced file, If-Match's version.
#[test]
fn multipart_refusals_come_before_the_100() {
    let (form, ct) = form_of(&bytes(41, 2 * MIB));
    let closed = bucket("mpclosed", json!({"create": []}));
    let a = signup("mp100");
    let (_, h, body) = first_answer("POST", &files_path(&closed), &a.access, &ct, form.len(), &[]);
    assert_eq!(h.status, 403, "no right to create: refused instead of 100: {}", String::from_utf8_lossy(&body));
    let open = bucket("mpopen", json!({}));
    let owner = signup("mp100-owner");
    let id = upload_ok(Some(&owner.access), &open, "r.bin", b"abc", "application/octet-stream")["id"].as_str().unwrap().to_string();
    let acl = json!({"read": [format!("user:{}", a.id)]}).to_string();
    assert_eq!(call("PUT", &format!("{}/acl", file_path(&id)), Some(&owner.access), Some(&acl)).status, 200);
    let (_, h, body) = first_answer("PUT", &file_path(&id), &a.access, &ct, form.len(), &[]);
    assert_eq!(h.status, 403, "a reader may not replace: refused instead of 100: {}", String::from_utf8_lossy(&body));
    let (_, h, body) = first_answer("PUT", &file_path(&id), &owner.access, &ct, form.len(), &[("If-Match", "\"7\"")]);
    assert_eq!(h.status, 412, "a stale If-Match: refused instead of 100: {}", String::from_utf8_lossy(&body));
    // The right request gets its 100, then stores the file.
    let v = call("GET", &format!("{}/meta", file_path(&id)), Some(&owner.access), None).body["version"].as_i64().unwrap();
    let if_match = format!("\"{v}\"");
    let (mut c, h, _) = first_answer("PUT", &file_path(&id), &owner.access, &ct, form.len(), &[("If-Match", &if_match)]);
    assert_eq!(h.status, 100);
    c.send(&form).unwrap();
    let (h, body) = c.response();
    assert_eq!(h.status, 200, "{}", String::from_utf8_lossy(&body));
    let f: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((f["version"].as_i64(), f["size"].as_u64()), (Some(v + 1), Some(2 * MIB as u64)));
    assert_nothing_stored(&closed, &[]);
    assert_nothing_stored(&open, &[id.as_str()]);
}
