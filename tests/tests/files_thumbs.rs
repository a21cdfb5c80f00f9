//! End-to-end: thumbnails (`GET /v1/files/{id}?thumb=WxH&fit=contain|cover`) through the
//! real proxy and cluster: sizes for each format, the cache in `baas._thumbnails`, the
//! same permissions as the file, and the clear 4xx of bad specs, non-images and bombs.

mod common;
use common::*;
use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, GenericImageView, Rgb, RgbImage, Rgba, RgbaImage};
use serde_json::{json, Value};
use std::io::Read;

/// A 400×200 picture in `format` (its content type, its bytes).
fn picture(format: &str) -> (&'static str, Vec<u8>) {
    let (w, h) = (400, 200);
    let rgb = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]));
    let mut out = Vec::new();
    let ct = match format {
        "jpeg" => {
            DynamicImage::ImageRgb8(rgb).write_with_encoder(JpegEncoder::new_with_quality(&mut out, 90)).unwrap();
            "image/jpeg"
        }
        "png" => {
            DynamicImage::ImageRgb8(rgb).write_with_encoder(PngEncoder::new(&mut out)).unwrap();
            "image/png"
        }
        "webp" => {
            DynamicImage::ImageRgb8(rgb).write_with_encoder(WebPEncoder::new_lossless(&mut out)).unwrap();
            "image/webp"
        }
        "gif" => {
            let rgba = RgbaImage::from_fn(w, h, |x, y| Rgba([(x % 256) as u8, (y % 256) as u8, 9, 255]));
            DynamicImage::ImageRgba8(rgba).write_with_encoder(GifEncoder::new(&mut out)).unwrap();
            "image/gif"
        }
        _ => unreachable!(),
    };
    (ct, out)
}

fn bucket(tag: &str) -> String {
    collection(tag, json!({"bucket": true}))
}

/// Upload `bytes` as `token`; the file's JSON.
fn upload(bucket: &str, token: &str, name: &str, content_type: &str, bytes: &[u8]) -> Value {
    let url = format!("{}/v1/collections/{bucket}/files?name={name}", base());
    let r = match ureq::post(&url).set("Authorization", &format!("Bearer {token}")).set("Content-Type", content_type).send_bytes(bytes) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("upload: {e}"),
    };
    let status = r.status();
    let body: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn code(&self) -> String {
        serde_json::from_slice::<Value>(&self.body).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_string)).unwrap_or_default()
    }
}

fn get(path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Got {
    let mut req = ureq::get(&format!("{}{path}", base()));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let r = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let status = r.status();
    let headers = r.headers_names().into_iter().map(|n| (n.clone(), r.header(&n).unwrap_or("").to_string())).collect();
    let mut body = Vec::new();
    r.into_reader().read_to_end(&mut body).unwrap();
    assert!(status < 500, "GET {path} gave {status}: {}", String::from_utf8_lossy(&body));
    Got { status, headers, body }
}

fn thumbnails_of(file_id: &str) -> i64 {
    admin()
        .query_one(
            "select count(*) from baas._thumbnails t join baas.documents d on d.blob_id = t.source_blob where d.id = $1::text::uuid",
            &[&file_id],
        )
        .unwrap()
        .get(0)
}

#[test]
fn thumb_contain_and_cover_dimensions() {
    let b = bucket("thumbs");
    let a = signup("thumbs");
    for format in ["jpeg", "png", "webp", "gif"] {
        let (ct, bytes) = picture(format);
        let f = upload(&b, &a.access, &format!("p.{format}"), ct, &bytes);
        let id = f["id"].as_str().unwrap();
        let sha = f["sha256"].as_str().unwrap();
        let out_type = if format == "jpeg" { "image/jpeg" } else { "image/png" };
        // 400×200 into 100×100: contain keeps the ratio (100×50), cover fills and crops.
        // Never enlarged: contain at 1000×1000 is the picture's own size.
        for (q, fit, want) in [
            ("thumb=100x100", "contain", (100, 50)),
            ("thumb=100x100&fit=contain", "contain", (100, 50)),
            ("thumb=100x100&fit=cover", "cover", (100, 100)),
            ("thumb=50x80&fit=cover", "cover", (50, 80)),
            ("thumb=1000x1000", "contain", (400, 200)),
        ] {
            let g = get(&format!("/v1/files/{id}?{q}"), Some(&a.access), &[]);
            assert_eq!(g.status, 200, "{format} {q}: {}", String::from_utf8_lossy(&g.body));
            assert_eq!(g.header("content-type"), Some(out_type), "{format} {q}");
            assert_eq!(g.header("content-length"), Some(g.body.len().to_string().as_str()));
            assert_eq!(g.header("x-content-type-options"), Some("nosniff"));
            assert!(g.header("cache-control").unwrap_or("").contains("private"), "{:?}", g.header("cache-control"));
            let (w, h) = q.trim_start_matches("thumb=").split('&').next().unwrap().split_once('x').unwrap();
            assert_eq!(g.header("etag").map(str::to_string), Some(format!("\"{sha}-{w}x{h}-{fit}\"")));
            let img = image::load_from_memory(&g.body).unwrap_or_else(|e| panic!("{format} {q}: {e}"));
            assert_eq!(img.dimensions(), want, "{format} {q}");
        }
    }
}

#[test]
fn second_request_is_cached() {
    let b = bucket("thumbcache");
    let a = signup("thumbcache");
    let (ct, bytes) = picture("png");
    let f = upload(&b, &a.access, "c.png", ct, &bytes);
    let id = f["id"].as_str().unwrap();
    let path = format!("/v1/files/{id}?thumb=64x64&fit=cover");
    assert_eq!(thumbnails_of(id), 0);
    let first = get(&path, Some(&a.access), &[]);
    assert_eq!(first.status, 200);
    assert_eq!(thumbnails_of(id), 1, "the thumbnail is stored in baas._thumbnails");
    // Mark the stored copy: the next answer is the row, not a thumbnail made again.
    admin()
        .execute(
            "update baas._thumbnails t set data = t.data || '\\x00'::bytea from baas.documents d where d.blob_id = t.source_blob and d.id = $1::text::uuid",
            &[&id],
        )
        .unwrap();
    let second = get(&path, Some(&a.access), &[]);
    assert_eq!(second.status, 200);
    assert_eq!(second.body.len(), first.body.len() + 1, "served from the cache");
    assert_eq!(second.header("etag"), first.header("etag"));
    assert_eq!(second.header("content-type"), Some("image/png"));
    // If-None-Match: 304, no body.
    let etag = first.header("etag").unwrap().to_string();
    let nm = get(&path, Some(&a.access), &[("If-None-Match", &etag)]);
    assert_eq!(nm.status, 304);
    assert!(nm.body.is_empty());
    // Another size is another row.
    assert_eq!(get(&format!("/v1/files/{id}?thumb=32x32"), Some(&a.access), &[]).status, 200);
    assert_eq!(thumbnails_of(id), 2);
    let blob: String = admin().query_one("select blob_id::text from baas.documents where id = $1::text::uuid", &[&id]).unwrap().get(0);

    // Deleting the file removes its thumbnails (with its bytes, once swept: the delete
    // moved its blob to baas._blob_trash; the proxy's cleanup service runs baas.cleanup_blobs).
    let del = call("DELETE", &format!("/v1/files/{id}"), Some(&a.access), None);
    assert_eq!(del.status, 204, "{}", del.body);
    let _swept: i32 = admin().query_one("select baas.cleanup_blobs(100000)", &[]).unwrap().get(0);
    let left: i64 = admin().query_one("select count(*) from baas._thumbnails where source_blob = $1::text::uuid", &[&blob]).unwrap().get(0);
    assert_eq!(left, 0);
    assert_eq!(get(&path, Some(&a.access), &[]).status, 404);
}

#[test]
fn reader_without_access_gets_404() {
    let b = bucket("thumbacl");
    let a = signup("thumbacl");
    let other = signup("thumbacl");
    let (ct, bytes) = picture("jpeg");
    let f = upload(&b, &a.access, "private.jpg", ct, &bytes);
    let id = f["id"].as_str().unwrap();
    // Cached by the owner first: the cache must not leak it either.
    assert_eq!(get(&format!("/v1/files/{id}?thumb=64x64"), Some(&a.access), &[]).status, 200);
    for token in [Some(other.access.as_str()), None] {
        let g = get(&format!("/v1/files/{id}?thumb=64x64"), token, &[]);
        assert_eq!((g.status, g.code().as_str()), (404, "file_not_found"));
        let g = get(&format!("/v1/files/{id}?thumb=65x65"), token, &[]);
        assert_eq!(g.status, 404);
    }
    assert_eq!(thumbnails_of(id), 1, "nothing cached for a caller who cannot read the file");
}

#[test]
fn thumbnail_of_pdf_415() {
    let b = bucket("thumbpdf");
    let a = signup("thumbpdf");
    let pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
    let f = upload(&b, &a.access, "doc.pdf", "application/pdf", pdf);
    let g = get(&format!("/v1/files/{}?thumb=64x64", f["id"].as_str().unwrap()), Some(&a.access), &[]);
    assert_eq!((g.status, g.code().as_str()), (415, "thumbnail_unsupported"), "{}", String::from_utf8_lossy(&g.body));
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

#[test]
fn decompression_bomb_422() {
    let b = bucket("thumbbomb");
    let a = signup("thumbbomb");
    // A PNG whose header says 30000×30000 (900 megapixels) with almost no data.
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&30000u32.to_be_bytes());
    ihdr.extend_from_slice(&30000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    let f = upload(&b, &a.access, "bomb.png", "image/png", &png);
    let g = get(&format!("/v1/files/{}?thumb=64x64", f["id"].as_str().unwrap()), Some(&a.access), &[]);
    assert_eq!((g.status, g.code().as_str()), (422, "image_too_large"), "{}", String::from_utf8_lossy(&g.body));
}

#[test]
fn bad_thumb_spec_400() {
    let b = bucket("thumbspec");
    let a = signup("thumbspec");
    let (ct, bytes) = picture("png");
    let f = upload(&b, &a.access, "s.png", ct, &bytes);
    let id = f["id"].as_str().unwrap();
    for q in ["thumb=0x10", "thumb=10x0", "thumb=1025x10", "thumb=abc", "thumb=10", "thumb=+5x5", "thumb=10x10&fit=stretch", "thumb="] {
        let g = get(&format!("/v1/files/{id}?{q}"), Some(&a.access), &[]);
        assert_eq!((g.status, g.code().as_str()), (400, "invalid_request"), "{q}: {}", String::from_utf8_lossy(&g.body));
    }
    assert_eq!(thumbnails_of(id), 0);
}
