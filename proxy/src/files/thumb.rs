//! Thumbnails: `GET /v1/files/{id}?thumb=WxH&fit=contain|cover` (docs/files.md).
//!
//! `make` is pure: bytes of a stored image in, bytes of a thumbnail out. It runs on a
//! blocking thread through `ThumbPool::run`, which bounds how many run at once and how
//! many wait; past that a request gets 503 `thumbnails_busy` instead of piling up CPU work.
//!
//! Decompression bombs are refused in three layers, each a 422 `image_too_large`:
//! the input is at most `max_input_bytes` (the caller reads the file piece by piece up to
//! that size: the one whole-file buffer of the proxy, bounded); the header's width × height
//! is checked against `max_pixels` before any pixel is decoded; and the decoder itself runs
//! under `image::Limits::max_alloc`.
//!
//! Sizes: `contain` fits the image inside W×H keeping its aspect ratio; `cover` fills W×H
//! and crops the centre. Neither ever enlarges the source: a thumbnail is never bigger than
//! its image in either dimension (an upscaled thumbnail costs bytes and shows nothing the
//! client could not scale itself). So `contain` of a 100×50 image at 256×256 is 100×50, and
//! `cover` of a 3×1000 strip at 256×256 is its 3×256 centre. The EXIF orientation of a JPEG
//! or WebP (phone photos) is applied, so thumbnails stand the way the photo is shown.
//!
//! Output: JPEG in → JPEG (quality 80) out; PNG, GIF (first frame) and WebP in → PNG out.

use crate::errors::ApiError;
use http::StatusCode;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::imageops::FilterType;
use image::{ColorType, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use std::future::Future;
use std::io::Cursor;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Largest thumbnail side.
pub const MAX_SIDE: u32 = 1024;
/// JPEG quality of JPEG thumbnails.
pub const JPEG_QUALITY: u8 = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fit {
    /// Fit inside W×H, keeping the aspect ratio (the default).
    Contain,
    /// Fill W×H, keeping the aspect ratio, cropping the centre.
    Cover,
}

impl Fit {
    /// The name in the query string, in `baas._thumbnails.fit` and in the ETag.
    pub fn as_str(self) -> &'static str {
        match self {
            Fit::Contain => "contain",
            Fit::Cover => "cover",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Spec {
    pub width: u32,
    pub height: u32,
    pub fit: Fit,
}

impl Spec {
    /// The thumbnail's strong ETag: `"<sha256 hex>-WxH-fit"` (a thumbnail is a function of
    /// the file's bytes and the spec).
    pub fn etag(&self, sha256_hex: &str) -> String {
        format!("\"{}-{}x{}-{}\"", sha256_hex, self.width, self.height, self.fit.as_str())
    }
}

/// Parse `thumb=WxH` and `fit=contain|cover` (absent: contain).
pub fn parse_spec(thumb: &str, fit: Option<&str>) -> Result<Spec, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_request",
            format!("thumb must be WxH with W and H whole numbers from 1 to {MAX_SIDE}, e.g. thumb=256x256"),
        )
    };
    let (w, h) = thumb.split_once(['x', 'X']).ok_or_else(bad)?;
    let side = |s: &str| -> Option<u32> {
        // Digits only: u32::from_str would also take a leading '+'.
        if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u32>().ok().filter(|v| (1..=MAX_SIDE).contains(v))
    };
    let (width, height) = (side(w).ok_or_else(bad)?, side(h).ok_or_else(bad)?);
    let fit = match fit {
        None | Some("contain") => Fit::Contain,
        Some("cover") => Fit::Cover,
        Some(_) => return Err(ApiError::bad_request("invalid_request", "fit must be contain or cover")),
    };
    Ok(Spec { width, height, fit })
}

/// Bounds on one thumbnail's work (config: thumb_max_pixels, thumb_max_alloc,
/// thumb_max_input_bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbLimits {
    /// Largest source width × height decoded.
    pub max_pixels: u64,
    /// Most bytes a decoder may allocate (`image::Limits::max_alloc`).
    pub max_alloc: u64,
    /// Largest source file read into memory.
    pub max_input_bytes: u64,
}

impl Default for ThumbLimits {
    fn default() -> Self {
        ThumbLimits { max_pixels: 50_000_000, max_alloc: 512 << 20, max_input_bytes: 32 << 20 }
    }
}

/// The format of a stored content type, if thumbnails are made of it.
pub fn source_format(content_type: &str) -> Option<ImageFormat> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    match essence.to_ascii_lowercase().as_str() {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => Some(ImageFormat::Jpeg),
        "image/png" => Some(ImageFormat::Png),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

fn unsupported(content_type: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "thumbnail_unsupported",
        format!("thumbnails are made of image/jpeg, image/png, image/gif and image/webp files, not {content_type}"),
    )
}

fn too_large(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "image_too_large", message)
}

fn invalid_image() -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_image", "the file's image data cannot be decoded")
}

fn image_error(e: ImageError, limits: &ThumbLimits) -> ApiError {
    match e {
        ImageError::Limits(_) => too_large(format!(
            "decoding this image needs more than the {} MiB allowed for a thumbnail",
            limits.max_alloc >> 20
        )),
        _ => invalid_image(),
    }
}

/// Before reading a file for a thumbnail: its stored type must be one thumbnails are made
/// of (else 415 thumbnail_unsupported) and its size at most `max_input_bytes` (else 422
/// image_too_large), so nothing is read for a file that would be refused anyway.
pub fn check_source(content_type: &str, size: u64, limits: &ThumbLimits) -> Result<(), ApiError> {
    source_format(content_type).ok_or_else(|| unsupported(content_type))?;
    if size > limits.max_input_bytes {
        return Err(too_large(format!(
            "thumbnails are made of images up to {} MiB; this file is larger",
            limits.max_input_bytes >> 20
        )));
    }
    Ok(())
}

/// Make the thumbnail of `input` (a whole stored file of type `content_type`).
/// Returns the thumbnail's content type and bytes. Pure and CPU-bound: run it through
/// `ThumbPool::run`.
pub fn make(input: &[u8], content_type: &str, spec: Spec, limits: &ThumbLimits) -> Result<(&'static str, Vec<u8>), ApiError> {
    let format = source_format(content_type).ok_or_else(|| unsupported(content_type))?;
    if input.len() as u64 > limits.max_input_bytes {
        return Err(too_large(format!(
            "thumbnails are made of images up to {} MiB; this file is larger",
            limits.max_input_bytes >> 20
        )));
    }
    let mut decode_limits = Limits::default();
    decode_limits.max_alloc = Some(limits.max_alloc);
    let reader = |limits: Limits| {
        let mut r = ImageReader::with_format(Cursor::new(input), format);
        r.limits(limits);
        r
    };

    // The header only: refuse a bomb before a single pixel is allocated.
    let (sw, sh) = reader(decode_limits.clone()).into_dimensions().map_err(|e| image_error(e, limits))?;
    let pixels = u64::from(sw) * u64::from(sh);
    if pixels > limits.max_pixels {
        return Err(too_large(format!(
            "this image is {sw}x{sh} ({} megapixels); thumbnails are made of images up to {} megapixels",
            pixels / 1_000_000,
            limits.max_pixels / 1_000_000
        )));
    }
    if sw == 0 || sh == 0 {
        return Err(invalid_image());
    }

    let mut decoder = reader(decode_limits.clone()).into_decoder().map_err(|e| image_error(e, limits))?;
    // `into_decoder` does not count the output buffer against the limit (`decode` does).
    decode_limits.reserve(decoder.total_bytes()).map_err(|e| image_error(e, limits))?;
    // A malformed EXIF block is no reason to refuse the picture: show it as stored.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| image_error(e, limits))?;
    img.apply_orientation(orientation);

    let img = scale(img, spec);
    let mut out = Vec::new();
    let out_type = if format == ImageFormat::Jpeg {
        // JPEG holds gray or RGB; the decoder gives 8-bit gray or RGB (CMYK converted).
        let img = match img.color() {
            ColorType::L8 | ColorType::Rgb8 => img,
            _ => DynamicImage::ImageRgb8(img.to_rgb8()),
        };
        img.write_with_encoder(JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)).map_err(|_| invalid_image())?;
        "image/jpeg"
    } else {
        // 8 bits a channel are enough for a thumbnail; keep alpha where the source has it.
        let img = match img.color() {
            ColorType::L8 | ColorType::La8 | ColorType::Rgb8 | ColorType::Rgba8 => img,
            ColorType::L16 => DynamicImage::ImageLuma8(img.to_luma8()),
            ColorType::La16 => DynamicImage::ImageLumaA8(img.to_luma_alpha8()),
            ColorType::Rgb16 | ColorType::Rgb32F => DynamicImage::ImageRgb8(img.to_rgb8()),
            _ => DynamicImage::ImageRgba8(img.to_rgba8()),
        };
        img.write_with_encoder(PngEncoder::new(&mut out)).map_err(|_| invalid_image())?;
        "image/png"
    };
    Ok((out_type, out))
}

/// The thumbnail's size for a `sw`×`sh` source (already oriented), before a `cover` crop:
/// (scaled width, scaled height, output width, output height). Never larger than the source.
pub fn dimensions(sw: u32, sh: u32, spec: Spec) -> (u32, u32, u32, u32) {
    let (w, h) = (u64::from(spec.width), u64::from(spec.height));
    let (sw64, sh64) = (u64::from(sw), u64::from(sh));
    // round(a * b / c) in integers, at least 1.
    let mul_div = |a: u64, b: u64, c: u64| ((a * b + c / 2) / c).max(1) as u32;
    match spec.fit {
        Fit::Contain => {
            if sw64 <= w && sh64 <= h {
                (sw, sh, sw, sh)
            } else if w * sh64 <= h * sw64 {
                // Width is the tighter bound.
                let nh = mul_div(sh64, w, sw64);
                (spec.width, nh, spec.width, nh)
            } else {
                let nw = mul_div(sw64, h, sh64);
                (nw, spec.height, nw, spec.height)
            }
        }
        Fit::Cover => {
            // Scale so that both sides reach the box, unless that means enlarging.
            let (nw, nh) = if w * sh64 >= h * sw64 {
                // Width needs the larger factor w / sw.
                if w >= sw64 { (sw, sh) } else { (spec.width, mul_div(sh64, w, sw64).max(spec.height)) }
            } else if h >= sh64 {
                (sw, sh)
            } else {
                (mul_div(sw64, h, sh64).max(spec.width), spec.height)
            };
            (nw, nh, nw.min(spec.width), nh.min(spec.height))
        }
    }
}

fn scale(img: DynamicImage, spec: Spec) -> DynamicImage {
    let (nw, nh, ow, oh) = dimensions(img.width(), img.height(), spec);
    let img = if (nw, nh) == (img.width(), img.height()) { img } else { img.resize_exact(nw, nh, FilterType::Triangle) };
    if (ow, oh) == (nw, nh) {
        img
    } else {
        img.crop_imm((nw - ow) / 2, (nh - oh) / 2, ow, oh)
    }
}

/// Bounded thumbnail work: at most `workers` thumbnails are made at once (each on a
/// blocking thread), at most `queue` more wait for a worker; beyond that a request is
/// answered 503 `thumbnails_busy` with `Retry-After: 1`. A request whose client goes away
/// keeps its worker until its thumbnail is done, so the CPU bound holds.
pub struct ThumbPool {
    /// Permits to be in the pool at all: workers + queue.
    admit: Arc<Semaphore>,
    /// Permits to run.
    work: Arc<Semaphore>,
}

impl ThumbPool {
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        ThumbPool { admit: Arc::new(Semaphore::new(workers + queue)), work: Arc::new(Semaphore::new(workers)) }
    }

    fn busy() -> ApiError {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "thumbnails_busy",
            "too many thumbnails are being made; retry in 1 s",
        );
        e.retry_after = Some(1);
        e
    }

    /// A place in the pool (a worker's or the queue's), or 503 thumbnails_busy at once
    /// when the workers and the queue are all taken. Taken before the source is read:
    /// the sources in memory are bounded by workers + queue, not by the transfer caps.
    pub fn admit(&self) -> Result<Admitted, ApiError> {
        self.admit.clone().try_acquire_owned().map(|p| Admitted { _place: p }).map_err(|_| Self::busy())
    }

    /// Run `f` (e.g. `move || make(&bytes, &ct, spec, &limits)`) on a blocking thread once
    /// a worker is free; `place` (from `admit`) is held until `f` has returned.
    pub fn run<F, T>(&self, place: Admitted, f: F) -> impl Future<Output = Result<T, ApiError>> + Send + 'static
    where
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let work = self.work.clone();
        async move {
            let running = work.acquire_owned().await.map_err(|_| ApiError::internal())?;
            let job = tokio::task::spawn_blocking(move || {
                let result = f();
                drop((running, place));
                result
            });
            match job.await {
                Ok(result) => result,
                // A decoder panicked on this file (the permits went with the thread): the
                // file is what the decoder could not take, so it is the file's error.
                Err(e) if e.is_panic() => {
                    log::error!("thumbnail worker panicked: {e}");
                    Err(invalid_image())
                }
                // The runtime is shutting down.
                Err(_) => Err(Self::busy()),
            }
        }
    }
}

/// A place in the ThumbPool, held from before the source is read until its thumbnail
/// is made.
pub struct Admitted {
    _place: tokio::sync::OwnedSemaphorePermit,
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::gif::GifEncoder;
    use image::codecs::webp::WebPEncoder;
    use image::{GenericImageView, Rgb, RgbImage, Rgba, RgbaImage};
    use std::time::Instant;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8]))
    }

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(gradient(w, h)).write_with_encoder(JpegEncoder::new_with_quality(&mut out, 90)).unwrap();
        out
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let img = RgbaImage::from_fn(w, h, |x, y| Rgba([(x % 256) as u8, (y % 256) as u8, 7, if x < w / 2 { 255 } else { 100 }]));
        DynamicImage::ImageRgba8(img).write_with_encoder(PngEncoder::new(&mut out)).unwrap();
        out
    }

    fn webp(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(gradient(w, h)).write_with_encoder(WebPEncoder::new_lossless(&mut out)).unwrap();
        out
    }

    /// Two frames: a red one then a blue one; the thumbnail shows the first.
    fn gif(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = GifEncoder::new(&mut out);
            for colour in [[255, 0, 0, 255], [0, 0, 255, 255]] {
                let frame = image::Frame::new(RgbaImage::from_pixel(w, h, Rgba(colour)));
                enc.encode_frame(frame).unwrap();
            }
        }
        out
    }

    fn spec(w: u32, h: u32, fit: Fit) -> Spec {
        Spec { width: w, height: h, fit }
    }

    fn decoded(ct: &str, bytes: &[u8]) -> DynamicImage {
        image::load_from_memory_with_format(bytes, source_format(ct).unwrap()).unwrap()
    }

    fn thumb_dims(input: &[u8], ct: &str, s: Spec) -> (&'static str, (u32, u32)) {
        let (out_ct, out) = make(input, ct, s, &ThumbLimits::default()).unwrap();
        (out_ct, decoded(out_ct, &out).dimensions())
    }

    #[test]
    fn parse_spec_accepts_wxh_and_fit() {
        assert_eq!(parse_spec("256x128", None).unwrap(), spec(256, 128, Fit::Contain));
        assert_eq!(parse_spec("1X1024", Some("cover")).unwrap(), spec(1, 1024, Fit::Cover));
        assert_eq!(parse_spec("64x64", Some("contain")).unwrap(), spec(64, 64, Fit::Contain));
        assert_eq!(spec(64, 32, Fit::Cover).etag("ab"), "\"ab-64x32-cover\"");
    }

    #[test]
    fn parse_spec_refuses_bad_specs_with_400() {
        for bad in ["", "256", "x", "0x10", "10x0", "1025x10", "10x1025", "+5x5", "5x-5", " 5x5", "5x5x5", "5 x5", "99999999999x1", "ax1", "1.5x2"] {
            let e = parse_spec(bad, None).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "invalid_request"), "{bad:?}");
            assert!(e.message.contains("WxH"), "{}", e.message);
        }
        let e = parse_spec("10x10", Some("fill")).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "invalid_request"));
        assert!(e.message.contains("contain or cover"));
    }

    #[test]
    fn sizes_contain_and_cover_never_enlarge() {
        let d = |sw, sh, w, h, fit| {
            let (_, _, ow, oh) = dimensions(sw, sh, spec(w, h, fit));
            (ow, oh)
        };
        assert_eq!(d(4000, 3000, 256, 256, Fit::Contain), (256, 192));
        assert_eq!(d(4000, 3000, 256, 256, Fit::Cover), (256, 256));
        assert_eq!(d(3000, 4000, 100, 400, Fit::Contain), (100, 133));
        assert_eq!(d(3000, 4000, 100, 400, Fit::Cover), (100, 400));
        assert_eq!(d(3, 1000, 256, 256, Fit::Contain), (1, 256));
        assert_eq!(d(3, 1000, 256, 256, Fit::Cover), (3, 256));
        assert_eq!(d(100, 50, 256, 256, Fit::Contain), (100, 50));
        assert_eq!(d(100, 50, 256, 256, Fit::Cover), (100, 50));
        assert_eq!(d(1000, 3, 1, 1, Fit::Contain), (1, 1));
        assert_eq!(d(1000, 3, 1, 1, Fit::Cover), (1, 1));
        assert_eq!(d(1024, 1024, 1024, 1024, Fit::Cover), (1024, 1024));
    }

    #[test]
    fn jpeg_thumbnails_are_jpeg_of_the_right_size() {
        let big = jpeg(4000, 3000);
        assert_eq!(thumb_dims(&big, "image/jpeg", spec(256, 256, Fit::Contain)), ("image/jpeg", (256, 192)));
        assert_eq!(thumb_dims(&big, "image/jpeg", spec(256, 256, Fit::Cover)), ("image/jpeg", (256, 256)));
        assert_eq!(thumb_dims(&big, "image/jpeg", spec(1024, 100, Fit::Cover)), ("image/jpeg", (1024, 100)));
        let strip = jpeg(3, 1000);
        assert_eq!(thumb_dims(&strip, "image/jpeg", spec(256, 256, Fit::Contain)), ("image/jpeg", (1, 256)));
        assert_eq!(thumb_dims(&strip, "image/jpeg", spec(256, 256, Fit::Cover)), ("image/jpeg", (3, 256)));
    }

    #[test]
    fn png_webp_gif_thumbnails_are_png() {
        for (ct, bytes) in [("image/png", png(4000, 3000)), ("image/webp", webp(4000, 3000)), ("image/gif", gif(400, 300))] {
            assert_eq!(thumb_dims(&bytes, ct, spec(256, 256, Fit::Contain)), ("image/png", (256, 192)), "{ct}");
            assert_eq!(thumb_dims(&bytes, ct, spec(100, 200, Fit::Cover)), ("image/png", (100, 200)), "{ct}");
        }
        for (ct, bytes) in [("image/png", png(3, 1000)), ("image/webp", webp(3, 1000)), ("image/gif", gif(3, 1000))] {
            assert_eq!(thumb_dims(&bytes, ct, spec(256, 256, Fit::Contain)), ("image/png", (1, 256)), "{ct}");
            assert_eq!(thumb_dims(&bytes, ct, spec(256, 256, Fit::Cover)), ("image/png", (3, 256)), "{ct}");
        }
    }

    #[test]
    fn png_keeps_alpha_and_gif_shows_its_first_frame() {
        let (_, out) = make(&png(400, 300), "image/png", spec(40, 30, Fit::Contain), &ThumbLimits::default()).unwrap();
        let t = decoded("image/png", &out);
        assert!(t.color().has_alpha());
        assert_eq!(t.get_pixel(35, 15)[3], 100, "the half-transparent half stays half-transparent");
        let (_, out) = make(&gif(64, 64), "image/gif", spec(16, 16, Fit::Cover), &ThumbLimits::default()).unwrap();
        let p = decoded("image/png", &out).get_pixel(8, 8);
        assert!(p[0] > 200 && p[2] < 50, "first (red) frame, got {p:?}");
    }

    /// An EXIF block saying "rotate 90°" (orientation 6) right after the JPEG's SOI.
    fn with_exif_orientation_6(jpeg: &[u8]) -> Vec<u8> {
        let tiff: &[u8] = &[
            b'M', b'M', 0, 42, 0, 0, 0, 8, // big-endian TIFF header, IFD at 8
            0, 1, // one entry
            0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, // Orientation, SHORT, 1, value 6
            0, 0, 0, 0, // no next IFD
        ];
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn phone_photos_stand_upright() {
        let rotated = with_exif_orientation_6(&jpeg(400, 200));
        assert_eq!(thumb_dims(&rotated, "image/jpeg", spec(100, 100, Fit::Contain)), ("image/jpeg", (50, 100)));
    }

    /// A PNG whose header claims `w`×`h`, followed by a tiny (wrong) IDAT: a bomb's shape.
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut crc = crc32fast::Hasher::new();
            crc.update(kind);
            crc.update(data);
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            out.extend_from_slice(&crc.finalize().to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(&mut out, b"IEND", &[]);
        out
    }

    #[test]
    fn bomb_refused_by_its_header() {
        let bomb = png_claiming(30_000, 30_000);
        let e = make(&bomb, "image/png", spec(256, 256, Fit::Contain), &ThumbLimits::default()).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "image_too_large"));
        assert!(e.message.contains("30000x30000"), "{}", e.message);
        // With the pixel bound lifted, the allocation bound still refuses it (2.7 GB of RGB).
        let lax = ThumbLimits { max_pixels: u64::MAX, ..ThumbLimits::default() };
        let e = make(&bomb, "image/png", spec(256, 256, Fit::Contain), &lax).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "image_too_large"));
        assert!(e.message.contains("512 MiB"), "{}", e.message);
    }

    #[test]
    fn oversize_input_refused() {
        let small = ThumbLimits { max_input_bytes: 1000, ..ThumbLimits::default() };
        let e = make(&png(400, 400), "image/png", spec(16, 16, Fit::Contain), &small).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "image_too_large"));
    }

    #[test]
    fn corrupt_images_are_422() {
        let whole = jpeg(640, 480);
        for cut in [0, 2, 20, 150] {
            let e = make(&whole[..cut], "image/jpeg", spec(64, 64, Fit::Contain), &ThumbLimits::default()).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image"), "cut at {cut}");
        }
        // Cut inside the scan data: image's JPEG decoder (zune-jpeg, not strict) gives the
        // picture with a grey bottom, as a browser shows it (today: a thumbnail); a 422
        // would be fine too; never a panic or a 500.
        for cut in [whole.len() / 2, whole.len() - 3] {
            match make(&whole[..cut], "image/jpeg", spec(64, 64, Fit::Contain), &ThumbLimits::default()) {
                Ok((ct, _)) => assert_eq!(ct, "image/jpeg"),
                Err(e) => assert_eq!(e.code, "invalid_image"),
            }
        }
        let pngb = png(64, 64);
        for (ct, bytes) in [("image/png", &pngb[..40]), ("image/png", b"not a png".as_slice()), ("image/gif", b"GIF89a"), ("image/webp", b"RIFF\0\0\0\0WEBP")] {
            let e = make(bytes, ct, spec(64, 64, Fit::Contain), &ThumbLimits::default()).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image"), "{ct}");
        }
    }

    #[test]
    fn non_images_are_415() {
        for ct in ["application/pdf", "image/svg+xml", "text/plain", "application/octet-stream", "image/avif", ""] {
            let e = make(b"%PDF-1.7\n", ct, spec(64, 64, Fit::Contain), &ThumbLimits::default()).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "thumbnail_unsupported"), "{ct}");
        }
        assert_eq!(source_format("Image/JPEG; x=1"), Some(ImageFormat::Jpeg));
    }

    #[tokio::test]
    async fn pool_answers_503_when_full() {
        let pool = ThumbPool::new(1, 1);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, is_started) = std::sync::mpsc::channel::<()>();
        let first = tokio::spawn(pool.run(pool.admit().unwrap(), move || {
            started.send(()).unwrap();
            wait.recv().unwrap();
            Ok(1)
        }));
        tokio::task::spawn_blocking(move || is_started.recv().unwrap()).await.unwrap();
        // The worker is busy: this one queues.
        let second = tokio::spawn(pool.run(pool.admit().unwrap(), || Ok(2)));
        // Workers and queue are full.
        let e = pool.admit().err().unwrap();
        assert_eq!((e.status, e.code.as_str(), e.retry_after), (StatusCode::SERVICE_UNAVAILABLE, "thumbnails_busy", Some(1)));
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap().unwrap(), 2);
        // Room again.
        assert_eq!(pool.run(pool.admit().unwrap(), || Ok(4)).await.unwrap(), 4);
        // A job's error comes back as it is.
        let e = pool.run(pool.admit().unwrap(), || Err::<(), _>(invalid_image())).await.unwrap_err();
        assert_eq!(e.code, "invalid_image");
    }

    /// CPU seconds (user + system) this thread has used: on a shared machine the wall
    /// clock also counts other processes' turns.
    fn thread_cpu() -> f64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        let f: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0 // USER_HZ is 100 on Linux
    }

    /// A figure, not a check (speed figures come from the benchmark): how long one
    /// 256×256 thumbnail of a 12-megapixel JPEG takes here. Run with --nocapture.
    #[test]
    fn time_12_megapixel_jpeg() {
        let photo = jpeg(4000, 3000);
        // Where the time goes: decoding, then scaling (the encoding of 256x256 is small).
        let t = Instant::now();
        let img = image::load_from_memory_with_format(&photo, ImageFormat::Jpeg).unwrap();
        let decode = t.elapsed();
        let t = Instant::now();
        let _ = scale(img, spec(256, 256, Fit::Contain));
        println!("12 MP JPEG: decode {decode:?}, scale to 256x256 {:?}", t.elapsed());
        for fit in [Fit::Contain, Fit::Cover] {
            let (t, cpu) = (Instant::now(), thread_cpu());
            let (ct, out) = make(&photo, "image/jpeg", spec(256, 256, fit), &ThumbLimits::default()).unwrap();
            println!(
                "thumbnail 256x256 {} of a 4000x3000 JPEG ({} KiB): {:?} wall, {:.2} s CPU, {} bytes of {ct}",
                fit.as_str(),
                photo.len() >> 10,
                t.elapsed(),
                thread_cpu() - cpu,
                out.len()
            );
        }
    }
}
