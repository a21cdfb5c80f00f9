//! End-to-end: resumable uploads with tus 1.0 (core, creation, termination, checksum)
//! at /v1/uploads, as the iOS/Android/JS tus clients speak it: cut mid-chunk and
//! resumed, continued through another proxy, chunk sizes from 256 KiB to 64 MiB, a
//! checksum mismatch refused without moving the offset, one writer at a time,
//! termination, expiry and clean-up, and a failed finish that leaves nothing.

mod common;
use common::files::*;
use common::*;
use serde_json::json;
use std::io::Read;
use std::time::{Duration, Instant};

fn options(path: &str, headers: &[(&str, &str)]) -> Resp {
    send_at(&base(), "OPTIONS", path, None, headers, b"")
}

#[test]
fn tus_options_and_create() {
    let r = options("/v1/uploads", &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    let ext = r.header("tus-extension").unwrap_or("");
    for e in ["creation", "termination", "checksum"] {
        assert!(ext.split(',').any(|x| x.trim() == e), "Tus-Extension {ext} lacks {e}");
    }
    assert_eq!(r.header("tus-max-size"), Some("5368709120"), "the default file_max_bytes, 5 GiB");
    let algs = r.header("tus-checksum-algorithm").unwrap_or("");
    for a in ["sha1", "sha256"] {
        assert!(algs.split(',').any(|x| x.trim() == a), "Tus-Checksum-Algorithm {algs} lacks {a}");
    }

    let b = bucket("tusc", json!({}));
    let a = signup("tusc");
    let t = Some(a.access.as_str());
    let meta = tus_metadata(&[("bucket", &b), ("filename", "x.bin")]);
    // No Tus-Resumable: 412 with the version the server speaks.
    let r = send_at(&base(), "POST", "/v1/uploads", t, &[("Upload-Length", "10"), ("Upload-Metadata", &meta)], b"");
    assert_eq!((r.status, r.code()), (412, "tus_version"), "{}", r.body);
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    let r = send_at(&base(), "POST", "/v1/uploads", t, &[("Tus-Resumable", "0.2.2"), ("Upload-Length", "10"), ("Upload-Metadata", &meta)], b"");
    assert_eq!(r.status, 412, "{}", r.body);
    // Deferred length is not offered.
    let r = send_at(&base(), "POST", "/v1/uploads", t, &[TUS, ("Upload-Defer-Length", "1"), ("Upload-Metadata", &meta)], b"");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"), "every tus answer says Tus-Resumable");
    // Over Tus-Max-Size.
    let r = tus_create_at(&base(), t, 5368709121, &[("bucket", &b), ("filename", "huge.bin")]);
    assert_eq!((r.status, r.code()), (413, "file_too_large"), "{}", r.body);
    // Metadata: bucket and filename are required; the bucket must exist and be a bucket.
    let r = tus_create_at(&base(), t, 10, &[("filename", "x.bin")]);
    assert_eq!(r.status, 400, "no bucket: {}", r.body);
    let r = tus_create_at(&base(), t, 10, &[("bucket", &b)]);
    assert_eq!(r.status, 400, "no filename: {}", r.body);
    let r = tus_create_at(&base(), t, 10, &[("bucket", "no_such_bucket_at_all"), ("filename", "x.bin")]);
    assert_eq!((r.status, r.code()), (404, "collection_not_found"), "{}", r.body);
    let plain = collection("tusplain", json!({}));
    let r = tus_create_at(&base(), t, 10, &[("bucket", &plain), ("filename", "x.bin")]);
    assert_eq!((r.status, r.code()), (400, "not_a_bucket"), "{}", r.body);
    let r = send_at(&base(), "POST", "/v1/uploads", t, &[TUS, ("Upload-Length", "10"), ("Upload-Metadata", "bucket !!!notbase64")], b"");
    assert_eq!(r.status, 400, "malformed metadata: {}", r.body);
    // Metadata is bounded (64 KiB, 32 pairs): more is a clear 400, answered at once.
    let big = format!("{meta},note {}", b64std(&vec![b'x'; 70 << 10]));
    let r = send_at(&base(), "POST", "/v1/uploads", None, &[TUS, ("Upload-Length", "1"), ("Upload-Metadata", &big)], b"");
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);
    let many = (0..2000).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let r = send_at(&base(), "POST", "/v1/uploads", None, &[TUS, ("Upload-Length", "1"), ("Upload-Metadata", &many)], b"");
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);

    // A good creation.
    let r = tus_create_at(&base(), t, 10, &[("bucket", &b), ("filename", "x.bin"), ("filetype", "application/octet-stream")]);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
    assert!(r.header("upload-expires").is_some(), "{:?}", r.headers);
    let file_id = r.header("pgbaas-file-id").unwrap_or_else(|| panic!("no Pgbaas-File-Id: {:?}", r.headers)).to_string();
    let upload = location_path(&r);
    assert!(upload.starts_with("/v1/uploads/") && upload.len() == "/v1/uploads/".len() + 36, "{upload}");
    let h = tus_head_at(&base(), t, &upload);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("upload-offset"), Some("0"));
    assert_eq!(h.header("upload-length"), Some("10"));
    assert_eq!(h.header("cache-control"), Some("no-store"));
    assert_eq!(h.header("tus-resumable"), Some("1.0.0"));
    // HEAD without Tus-Resumable: 412; someone else's session: 404.
    let r = send_at(&base(), "HEAD", &upload, t, &[], b"");
    assert_eq!(r.status, 412);
    let other = signup("tusc-b");
    assert_eq!(tus_head_at(&base(), Some(&other.access), &upload).status, 404, "another user's session is not found");
    assert_eq!(tus_head_at(&base(), None, &upload).status, 404, "nor is it the anonymous caller's");
    // Finish it: the file has the announced id.
    let r = tus_patch(t, &upload, 0, b"0123456789", &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.header("upload-offset"), Some("10"));
    assert_eq!(r.header("pgbaas-file-id"), Some(file_id.as_str()));
    assert_eq!(r.header("pgbaas-file-version"), Some("1"));
    let d = download(t, &file_path(&file_id), &[]);
    assert_eq!((d.status, d.body.as_slice()), (200, &b"0123456789"[..]));
    // The client whose answer to that PATCH was lost asks HEAD: done, and which file.
    let h = tus_head_at(&base(), t, &upload);
    assert_eq!(h.status, 200, "a finished session is remembered");
    assert_eq!((h.header("upload-offset"), h.header("upload-length")), (Some("10"), Some("10")), "{:?}", h.headers);
    assert_eq!(h.header("pgbaas-file-id"), Some(file_id.as_str()));
    assert_eq!(h.header("upload-expires"), None, "nothing left to expire");
    assert_eq!(tus_head_at(&base(), Some(&other.access), &upload).status, 404, "not another user's to see");
    assert_eq!(tus_head_at(&base(), None, &upload).status, 404, "nor the anonymous caller's");
    assert_eq!(tus_patch(t, &upload, 10, b"", &[]).status, 404, "nothing more can be written to it");
    assert_eq!(files_row(&file_id).map(|r| r.0), Some(10), "one file, as before");
    // After a day it is forgotten (the clean-up removes the record).
    let session = upload.trim_start_matches("/v1/uploads/").to_string();
    admin()
        .execute("update baas._uploads_finished set finished_at = now() - interval '25 hours' where id = $1::text::uuid", &[&session])
        .unwrap();
    assert_eq!(tus_head_at(&base(), t, &upload).status, 404, "a day later the session is gone");
    admin().query_one("select baas.cleanup_uploads(1000)", &[]).unwrap();
    let kept: i64 = admin().query_one("select count(*) from baas._uploads_finished where id = $1::text::uuid", &[&session]).unwrap().get(0);
    assert_eq!(kept, 0, "the clean-up forgot it");
}

/// PATCH until the lease of a writer that went away is released (a client resuming
/// right after its connection dropped).
fn patch_retrying_locked(t: Option<&str>, upload: &str, offset: u64, data: &[u8]) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = tus_patch(t, upload, offset, data, &[]);
        if r.status != 423 || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A raw connection that has sent the head of a PATCH of `n` bytes at offset 0 (the
/// body is the caller's to send, or to cut).
fn patch_from_start(t: Option<&str>, upload: &str, n: usize) -> RawConn {
    let len = n.to_string();
    let mut c = RawConn::open();
    c.send(raw_head("PATCH", upload, t, &[TUS, ("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", "0"), ("Content-Length", &len)]).as_bytes())
        .unwrap();
    c
}

#[test]
fn tus_resume_after_cut_mid_chunk() {
    let b = bucket("tuscut", json!({}));
    let a = signup("tuscut");
    let t = Some(a.access.as_str());
    let n = 5 * MIB;
    let data = bytes(31, n);
    let upload = tus_new(t, &b, "cut.bin", n as u64);
    let mut c = patch_from_start(t, &upload, n);
    c.send(&data[..5 * MIB / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(c); // the network goes away mid-chunk
    // The whole pieces received before the cut are kept: 2 MiB.
    let mut off = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        off = tus_offset(t, &upload);
        if off == 2 * MIB as u64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(off, 2 * MIB as u64, "HEAD after a cut at 2.5 MiB");
    let r = patch_retrying_locked(t, &upload, off, &data[off as usize..]);
    assert_eq!(r.status, 204, "resume: {}", r.body);
    let id = r.header("pgbaas-file-id").unwrap().to_string();
    let d = download(t, &file_path(&id), &[]);
    assert_eq!(d.status, 200);
    assert_eq!(sha256_hex(&d.body), sha256_hex(&data), "resumed upload = the original bytes");
    assert_eq!(files_row(&id).unwrap().1, sha256_hex(&data));
}

#[test]
fn tus_resume_after_proxy_restart() {
    let b = bucket("tusrestart", json!({}));
    let a = signup("tusrestart");
    let t = Some(a.access.as_str());
    let url = env().cluster.authenticator_url().unwrap();
    let n = 3 * MIB + 77;
    let data = bytes(41, n);
    let first = pgbaas_testkit::Proxy::start(&url, &[]).expect("proxy 1");
    let r = tus_create_at(&first.base(), t, n as u64, &[("bucket", &b), ("filename", "restart.bin")]);
    assert_eq!(r.status, 201, "{}", r.body);
    let file_id = r.header("pgbaas-file-id").unwrap().to_string();
    let upload = location_path(&r);
    let cut = 3 * MIB / 2;
    let r = tus_patch_at(&first.base(), t, &upload, 0, &data[..cut], &[]);
    assert_eq!((r.status, r.header("upload-offset")), (204, Some(cut.to_string().as_str())), "{}", r.body);
    drop(first); // killed
    let second = pgbaas_testkit::Proxy::start(&url, &[]).expect("proxy 2");
    assert_eq!(tus_offset_at(&second.base(), t, &upload), cut as u64, "another proxy knows the offset");
    let r = tus_patch_at(&second.base(), t, &upload, cut as u64, &data[cut..], &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.header("pgbaas-file-id"), Some(file_id.as_str()));
    let (status, _, len, sha) = download_hashed_at(&second.base(), t, &file_path(&file_id));
    assert_eq!((status, len, sha), (200, n as u64, sha256_hex(&data)));
}

#[test]
fn tus_chunk_sizes() {
    const N: u64 = 100_000_000;
    let b = bucket("tussizes", json!({}));
    let a = signup("tussizes");
    let t = Some(a.access.as_str());
    let upload = tus_new(t, &b, "hundred.bin", N);
    let mut g = Gen::new(51, N);
    let mut off = 0u64;
    let mut last = None;
    for len in [256 * 1024, 256 * 1024, 256 * 1024, 256 * 1024, 64 * MIB as u64, N - MIB as u64 - 64 * MIB as u64] {
        let o = off.to_string();
        let headers = [TUS, ("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", o.as_str())];
        let r = send_reader_at(&base(), "PATCH", &upload, t, &headers, len, (&mut g).take(len));
        assert_eq!(r.status, 204, "PATCH of {len} at {off}: {}", r.body);
        off += len;
        assert_eq!(r.header("upload-offset"), Some(off.to_string().as_str()));
        if off < N {
            assert_eq!(tus_offset(t, &upload), off);
        }
        last = Some(r);
    }
    let id = last.unwrap().header("pgbaas-file-id").unwrap().to_string();
    let (status, _, len, sha) = download_hashed_at(&base(), t, &file_path(&id));
    assert_eq!((status, len, sha.as_str()), (200, N, g.hex().as_str()), "100 MB through tus, byte for byte");
    let row = files_row(&id).unwrap();
    assert_eq!((row.0, row.1), (N as i64, g.hex()));
}

#[test]
fn tus_checksum_mismatch_460() {
    let b = bucket("tussum", json!({}));
    let a = signup("tussum");
    let t = Some(a.access.as_str());
    let n = 3 * MIB + 500_000;
    let data = bytes(61, n);
    let upload = tus_new(t, &b, "sum.bin", n as u64);
    let p1 = 300 * 1024;
    let wrong = tus_checksum(b"something else");
    let r = tus_patch(t, &upload, 0, &data[..p1], &[("Upload-Checksum", &wrong)]);
    assert_eq!((r.status, r.code()), (460, "checksum_mismatch"), "{}", r.body);
    assert_eq!(tus_offset(t, &upload), 0, "a refused PATCH keeps nothing");
    let r = tus_patch(t, &upload, 0, &data[..p1], &[("Upload-Checksum", &tus_checksum(&data[..p1]))]);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(tus_offset(t, &upload), p1 as u64);
    // A mismatch over several stored pieces rewinds all of them.
    let p2 = p1 + 5 * MIB / 2;
    let r = tus_patch(t, &upload, p1 as u64, &data[p1..p2], &[("Upload-Checksum", &wrong)]);
    assert_eq!(r.status, 460, "{}", r.body);
    assert_eq!(tus_offset(t, &upload), p1 as u64, "rewound to where the PATCH began");
    // An algorithm the server does not offer: 400.
    let r = tus_patch(t, &upload, p1 as u64, &data[p1..p2], &[("Upload-Checksum", "md5 AAAAAAAAAAAAAAAAAAAAAA==")]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(tus_offset(t, &upload), p1 as u64);
    let r = tus_patch(t, &upload, p1 as u64, &data[p1..p2], &[("Upload-Checksum", &tus_checksum(&data[p1..p2]))]);
    assert_eq!(r.status, 204, "{}", r.body);
    let r = tus_patch(t, &upload, p2 as u64, &data[p2..], &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    let id = r.header("pgbaas-file-id").unwrap().to_string();
    assert_eq!(files_row(&id).unwrap().1, sha256_hex(&data), "the stored file is exactly the accepted bytes");
    let (_, _, total, sha) = stored_chunks(&id);
    assert_eq!((total, sha), (n as i64, sha256_hex(&data)));
}

#[test]
fn tus_offset_mismatch_409() {
    let b = bucket("tusoff", json!({}));
    let a = signup("tusoff");
    let t = Some(a.access.as_str());
    // Each refusal on a fresh session, each followed at once by the right PATCH: a
    // refused PATCH must not leave the session locked (the client retries right away).
    let refusals: Vec<(&str, Box<dyn Fn(&str) -> Resp + '_>, u16, &str)> = vec![
        ("wrong Upload-Offset", Box::new(move |u: &str| tus_patch(t, u, 5, &[1u8; 10], &[])), 409, "offset_mismatch"),
        (
            "wrong Content-Type",
            Box::new(move |u: &str| send_at(&base(), "PATCH", u, t, &[TUS, ("Content-Type", "application/octet-stream"), ("Upload-Offset", "0")], &[1u8; 10])),
            415,
            "upload_body_required",
        ),
        (
            "no Tus-Resumable",
            Box::new(move |u: &str| send_at(&base(), "PATCH", u, t, &[("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", "0")], &[1u8; 10])),
            412,
            "tus_version",
        ),
    ];
    for (what, refuse, status, code) in refusals {
        let upload = tus_new(t, &b, "off.bin", 1000);
        let r = refuse(&upload);
        assert_eq!((r.status, r.code()), (status, code), "{what}: {}", r.body);
        assert_eq!(tus_offset(t, &upload), 0, "{what}");
        let r = tus_patch(t, &upload, 0, &[b'~'; 600], &[]);
        assert_eq!(r.status, 204, "the right PATCH right after a refused one ({what}): {}", r.body);
        // A retry of the same PATCH (its answer was lost): the offset says where to go on.
        let r = tus_patch(t, &upload, 0, &[b'~'; 600], &[]);
        assert_eq!((r.status, r.code()), (409, "offset_mismatch"), "{what}: {}", r.body);
        assert_eq!(tus_offset(t, &upload), 600);
        let r = tus_patch(t, &upload, 600, &[b'~'; 400], &[]);
        assert_eq!(r.status, 204, "the right PATCH right after a 409 ({what}): {}", r.body);
        assert!(r.header("pgbaas-file-id").is_some(), "{what}: finished");
    }
    // Past Upload-Length: 413, and nothing of it is kept; the session stays where it
    // was (the PATCH was at fault, not the session) and can be finished or ended.
    let upload = tus_new(t, &b, "over.bin", 1000);
    assert_eq!(tus_patch(t, &upload, 0, &[b'~'; 600], &[]).status, 204);
    let r = tus_patch(t, &upload, 600, &[b'~'; 401], &[]);
    assert_eq!((r.status, r.code()), (413, "file_too_large"), "{}", r.body);
    let h = tus_head_at(&base(), t, &upload);
    assert_eq!((h.status, h.header("upload-offset")), (200, Some("600")), "{:?}", h.headers);
    assert_eq!(send_at(&base(), "DELETE", &upload, t, &[TUS], b"").status, 204);
    let kept: Vec<String> = listed_ids(&b, t);
    assert_eq!(kept.len(), 3, "the three finished uploads");
    let keep: Vec<&str> = kept.iter().map(|s| s.as_str()).collect();
    assert_nothing_stored(&b, &keep);
}

#[test]
fn tus_concurrent_patch_423() {
    let b = bucket("tuslock", json!({}));
    let a = signup("tuslock");
    let t = Some(a.access.as_str());
    let n = 2 * MIB;
    let data = bytes(71, n);
    let upload = tus_new(t, &b, "lock.bin", n as u64);
    let mut c = patch_from_start(t, &upload, n);
    c.send(&data[..MIB / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // A second writer while the first is sending: refused, one writer at a time.
    let r = tus_patch(t, &upload, 0, &data[..1024], &[]);
    assert_eq!((r.status, r.code()), (423, "upload_locked"), "{}", r.body);
    c.send(&data[MIB / 2..]).unwrap();
    let (h, body) = c.response();
    assert_eq!(h.status, 204, "{}", String::from_utf8_lossy(&body));
    let id = h.header("pgbaas-file-id").unwrap().to_string();
    assert_eq!(files_row(&id).unwrap().1, sha256_hex(&data));
}

#[test]
fn tus_terminate_204_then_404() {
    let b = bucket("tusdel", json!({}));
    let a = signup("tusdel");
    let t = Some(a.access.as_str());
    let n = 3 * MIB;
    let upload = tus_new(t, &b, "del.bin", n as u64);
    let r = tus_patch(t, &upload, 0, &bytes(81, 3 * MIB / 2), &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    let mut db = admin();
    let uid = upload.rsplit('/').next().unwrap().to_string();
    let blob: String = db.query_one("select blob_id::text from baas._uploads where id = $1::text::uuid", &[&uid]).unwrap().get(0);
    // Someone else cannot terminate it.
    let other = signup("tusdel-b");
    let r = send_at(&base(), "DELETE", &upload, Some(&other.access), &[TUS], b"");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(tus_offset(t, &upload), 3 * MIB as u64 / 2);
    let r = send_at(&base(), "DELETE", &upload, t, &[TUS], b"");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
    assert_eq!(tus_head_at(&base(), t, &upload).status, 404);
    assert_eq!(tus_patch(t, &upload, 3 * MIB as u64 / 2, &[1u8; 10], &[]).status, 404);
    assert_eq!(send_at(&base(), "DELETE", &upload, t, &[TUS], b"").status, 404);
    // The bytes went to baas._blob_trash with the session; the proxy's sweep deletes them.
    let _swept: i32 = db.query_one("select baas.cleanup_blobs(100000)", &[]).unwrap().get(0);
    let left: i64 = db
        .query_one(
            "select (select count(*) from baas._uploads where id = $1::text::uuid)
                  + (select count(*) from baas._blobs where id = $2::text::uuid)
                  + (select count(*) from baas._file_chunks where blob_id = $2::text::uuid)",
            &[&uid, &blob],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "termination removes the session, and the sweep its blob and its chunks");
    assert_nothing_stored(&b, &[]);
}

#[test]
fn expired_upload_removed() {
    let b = bucket("tusexp", json!({}));
    let a = signup("tusexp");
    let t = Some(a.access.as_str());
    let upload = tus_new(t, &b, "exp.bin", 4 * MIB as u64);
    assert_eq!(tus_patch(t, &upload, 0, &bytes(91, MIB + 1), &[]).status, 204);
    let uid = upload.rsplit('/').next().unwrap().to_string();
    let mut db = admin();
    let blob: String = db.query_one("select blob_id::text from baas._uploads where id = $1::text::uuid", &[&uid]).unwrap().get(0);
    db.execute("update baas._uploads set expires_at = now() - interval '1 second' where id = $1::text::uuid", &[&uid]).unwrap();
    // Expired: 410 upload_expired. Not deterministic: every running proxy's clean-up
    // (every ~60 s, jittered) may remove the session between the update above and a
    // request; then 404 is right, and only then: the session must be gone.
    let gone = |db: &mut postgres::Client| -> bool {
        db.query_one("select count(*) = 0 from baas._uploads where id = $1::text::uuid", &[&uid]).unwrap().get(0)
    };
    let h = tus_head_at(&base(), t, &upload);
    if !(h.status == 404 && gone(&mut db)) {
        assert_eq!(h.status, 410, "HEAD of an expired upload: {:?}", h.headers);
    }
    let r = tus_patch(t, &upload, (MIB + 1) as u64, &[1u8; 10], &[]);
    if !(r.status == 404 && gone(&mut db)) {
        assert_eq!((r.status, r.code()), (410, "upload_expired"), "PATCH of an expired upload: {}", r.body);
    }
    let _removed: i32 = db.query_one("select baas.cleanup_uploads()", &[]).unwrap().get(0);
    assert_eq!(tus_head_at(&base(), t, &upload).status, 404);
    let _swept: i32 = db.query_one("select baas.cleanup_blobs(100000)", &[]).unwrap().get(0);
    let left: i64 = db
        .query_one(
            "select (select count(*) from baas._uploads where id = $1::text::uuid)
                  + (select count(*) from baas._blobs where id = $2::text::uuid)
                  + (select count(*) from baas._file_chunks where blob_id = $2::text::uuid)",
            &[&uid, &blob],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "clean-up removes the session, and the sweep its blob and its chunks");
    // A live session is left alone by the clean-up.
    let live = tus_new(t, &b, "live.bin", 10);
    let _: i32 = db.query_one("select baas.cleanup_uploads()", &[]).unwrap().get(0);
    assert_eq!(tus_offset(t, &live), 0);
}

#[test]
fn finish_errors_leave_nothing() {
    let b = bucket("tusfail", json!({}));
    let a = signup("tusfail");
    let t = Some(a.access.as_str());
    let n = 3 * MIB / 2;
    let data = bytes(101, n);
    // A declared sha256 the bytes do not have: refused at the last byte, session gone.
    let other_sha = sha256_hex(b"other bytes");
    let r = tus_create_at(&base(), t, n as u64, &[("bucket", &b), ("filename", "d.bin"), ("sha256", &other_sha)]);
    assert_eq!(r.status, 201, "{}", r.body);
    let upload = location_path(&r);
    let r = tus_patch(t, &upload, 0, &data, &[]);
    assert_eq!((r.status, r.code()), (400, "digest_mismatch"), "{}", r.body);
    // The proxy aborts the session right after answering (not awaited by the client).
    wait_until("the refused session is aborted", || tus_head_at(&base(), t, &upload).status == 404);
    // Declared PNG, bytes that are not.
    let r = tus_create_at(&base(), t, n as u64, &[("bucket", &b), ("filename", "p.png"), ("filetype", "image/png")]);
    assert_eq!(r.status, 201, "{}", r.body);
    let upload = location_path(&r);
    let r = tus_patch(t, &upload, 0, &data, &[]);
    assert_eq!((r.status, r.code()), (415, "content_type_mismatch"), "{}", r.body);
    wait_until("the refused session is aborted", || tus_head_at(&base(), t, &upload).status == 404);
    // The matching sha256 passes.
    let r = tus_create_at(&base(), t, n as u64, &[("bucket", &b), ("filename", "ok.bin"), ("sha256", &sha256_hex(&data))]);
    let upload = location_path(&r);
    let r = tus_patch(t, &upload, 0, &data, &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    let ok = r.header("pgbaas-file-id").unwrap().to_string();
    // Replacing with a stale version: refused when the session is created.
    let r = tus_create_at(&base(), t, 10, &[("bucket", &b), ("filename", "ok.bin"), ("id", &ok), ("version", "7")]);
    assert_eq!((r.status, r.code()), (412, "version_conflict"), "{}", r.body);
    // Replacing with the right version works and keeps the id.
    let r = tus_create_at(&base(), t, 4, &[("bucket", &b), ("filename", "ok.bin"), ("id", &ok), ("version", "1")]);
    assert_eq!(r.status, 201, "{}", r.body);
    let upload = location_path(&r);
    let r = tus_patch(t, &upload, 0, b"~new", &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!((r.header("pgbaas-file-id"), r.header("pgbaas-file-version")), (Some(ok.as_str()), Some("2")));
    assert_eq!(download(t, &file_path(&ok), &[]).body, b"~new");
    assert_nothing_stored(&b, &[ok.as_str()]);
}

/// Append `bytes` at `at` to session `upload` through the SQL door, as `user` (what the
/// proxy's last append does before a failure that leaves the session unfinished).
fn append_as(user: &User, upload: &str, at: i64, bytes: &[u8]) {
    let uid = upload.rsplit('/').next().unwrap().to_string();
    let mut db = admin();
    let mut tx = db.transaction().unwrap();
    tx.execute("select set_config('baas.claims', $1, true)", &[&json!({"sub": user.id, "role": "baas_user"}).to_string()]).unwrap();
    tx.batch_execute("set local role baas_user").unwrap();
    let off: i64 = tx.query_one("select baas._upload_append($1::text::uuid, null, $2, $3)", &[&uid, &at, &bytes]).unwrap().get(0);
    assert_eq!(off, at + bytes.len() as i64);
    tx.commit().unwrap();
}

/// Finding 4 of the issue-15 review: a session can hold all its bytes without being
/// finished (the last append committed, then its PATCH failed). HEAD answered
/// Upload-Offset = Upload-Length, which tus clients take as done, and no file ever
/// appeared. Now that HEAD finishes it and says the file's id and version.
#[test]
fn tus_head_finishes_a_complete_session() {
    let b = bucket("tusend", json!({}));
    let a = signup("tusend");
    let t = Some(a.access.as_str());
    let data = bytes(111, 1000);
    let upload = tus_new(t, &b, "end.bin", 1000);
    assert_eq!(tus_patch(t, &upload, 0, &data[..600], &[]).status, 204);
    append_as(&a, &upload, 600, &data[600..]);
    let h = tus_head_at(&base(), t, &upload);
    assert_eq!(h.status, 200, "{:?}", h.headers);
    assert_eq!((h.header("upload-offset"), h.header("upload-length")), (Some("1000"), Some("1000")));
    let id = h.header("pgbaas-file-id").unwrap_or_else(|| panic!("HEAD finished no file: {:?}", h.headers)).to_string();
    assert_eq!(h.header("pgbaas-file-version"), Some("1"));
    assert_eq!(download(t, &file_path(&id), &[]).body, data, "the file exists with the uploaded bytes");
    // Asked again, it is finished: the same file, nothing finished twice.
    let again = tus_head_at(&base(), t, &upload);
    assert_eq!((again.status, again.header("upload-offset"), again.header("pgbaas-file-id")), (200, Some("1000"), Some(id.as_str())));
    assert_nothing_stored(&b, &[id.as_str()]);
}

/// Finding 4 too: a transient error at the finish (here 503 query_timeout, the owner's
/// quota lock held elsewhere past the statement timeout) aborted the whole upload. Now
/// the session is kept, and the client's retry (its HEAD) finishes it.
#[test]
fn tus_finish_timeout_keeps_the_session() {
    let b = bucket("tusretry", json!({}));
    let a = signup("tusretry");
    let t = Some(a.access.as_str());
    let n = 3 * MIB / 2;
    let data = bytes(121, n);
    let upload = tus_new(t, &b, "retry.bin", n as u64);
    assert_eq!(tus_patch(t, &upload, 0, &data[..MIB], &[]).status, 204);
    // The finish takes the payer's quota lock (_upload_seal); the last append of a
    // session of known length does not.
    let mut blocker = admin();
    blocker.execute("select pg_advisory_lock(hashtext('baas.quota'), hashtext($1))", &[&a.id]).unwrap();
    let r = tus_patch_at(&base(), t, &upload, MIB as u64, &data[MIB..], &[]);
    assert_eq!((r.status, r.code()), (503, "query_timeout"), "{}", r.body);
    blocker.execute("select pg_advisory_unlock(hashtext('baas.quota'), hashtext($1))", &[&a.id]).unwrap();
    let h = tus_head_at(&base(), t, &upload);
    assert_eq!((h.status, h.header("upload-offset")), (200, Some(n.to_string().as_str())), "{:?}", h.headers);
    let id = h.header("pgbaas-file-id").unwrap_or_else(|| panic!("HEAD finished no file: {:?}", h.headers)).to_string();
    assert_eq!(files_row(&id).unwrap().1, sha256_hex(&data));
    assert_nothing_stored(&b, &[id.as_str()]);
}
