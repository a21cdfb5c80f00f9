//! multipart/form-data uploads (browser forms), parsed by multer 3 as the body
//! streams: fields `acl` (JSON), `data` (JSON object), `id` (uuid, uploads only), then
//! exactly one `file`, streamed into Postgres piece by piece like a raw body. Fields
//! must come before `file` (a form lists them first); anything after it is refused
//! (400) before the upload is finished, so nothing is stored. Field values are at most
//! MAX_FIELD bytes.

use super::body::BodyReader;
use super::upload::{self, HasSession, Pieces, Target};
use super::Ctx;
use crate::errors::ApiError;
use crate::server::App;
use bytes::{Bytes, BytesMut};
use multer::{Constraints, Multipart, SizeLimit};
use pingora::protocols::http::ServerSession;
use serde_json::Value;
use super::PIECE;
use futures_util::Stream;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const MAX_FIELD: usize = 64 << 10;

/// The most bytes of a multipart body that are not the file's data: the preamble,
/// boundaries, part headers and field values. multer buffers everything while it
/// looks for a boundary or the end of a part's headers, so without this budget a body
/// that never sends `--boundary` would be held whole in memory.
pub const OVERHEAD: u64 = 4 * MAX_FIELD as u64 + (16 << 10);

fn overhead_exceeded() -> ApiError {
    ApiError::coded(
        "payload_too_large",
        format!("a multipart body may carry at most {OVERHEAD} bytes besides the file's data (boundaries, part headers, fields)"),
    )
}

/// What the consumer of multer has taken out: file data (exempt from the budget) and
/// any progress at all (fields, chunks), to tell a multer that waits from one stuck.
#[derive(Default)]
pub struct Taken {
    file: AtomicU64,
    progress: AtomicU64,
}

impl Taken {
    fn file(&self, n: usize) {
        self.file.fetch_add(n as u64, Ordering::Relaxed);
        self.progress();
    }
    fn progress(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }
}

/// The body as multer reads it, on a budget: bytes handed to multer minus the file
/// data taken out of it may not pass OVERHEAD. multer reads every ready chunk into
/// its buffer, so past the budget this stream says Pending (backpressure) while the
/// consumer drains the buffer; if the consumer took nothing since the last Pending
/// (multer found no boundary or header end in its whole buffer), the body is refused
/// (413). So multer never holds more than OVERHEAD plus one chunk.
struct Budgeted<S> {
    inner: S,
    handed: u64,
    taken: Arc<Taken>,
    waiting_at: Option<u64>,
    failed: bool,
}

fn budgeted<S>(inner: S, taken: Arc<Taken>) -> Budgeted<S> {
    Budgeted { inner, handed: 0, taken, waiting_at: None, failed: false }
}

impl<S: Stream<Item = Result<Bytes, BodyError>> + Unpin> Stream for Budgeted<S> {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        if this.handed.saturating_sub(this.taken.file.load(Ordering::Relaxed)) > OVERHEAD {
            let progress = this.taken.progress.load(Ordering::Relaxed);
            if this.waiting_at == Some(progress) {
                this.failed = true;
                return Poll::Ready(Some(Err(BodyError(overhead_exceeded()))));
            }
            this.waiting_at = Some(progress);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.waiting_at = None;
        let item = std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_next(cx));
        if let Some(Ok(b)) = &item {
            this.handed += b.len() as u64;
        }
        Poll::Ready(item)
    }
}

/// A field's value as text, counted as progress (Budgeted); multer caps its size.
async fn field_text(mut field: multer::Field<'_>, taken: &Taken) -> Result<String, ApiError> {
    let mut out = Vec::new();
    while let Some(c) = field.chunk().await.map_err(mp_error)? {
        taken.progress();
        out.extend_from_slice(&c);
    }
    String::from_utf8(out).map_err(|_| bad("a multipart field is not UTF-8 text"))
}

/// A body read error carried through multer's stream.
#[derive(Debug)]
struct BodyError(ApiError);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for BodyError {}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", m)
}

fn mp_error(e: multer::Error) -> ApiError {
    match e {
        multer::Error::StreamReadFailed(inner) => match inner.downcast::<BodyError>() {
            Ok(b) => b.0,
            Err(other) => bad(format!("the multipart body could not be read: {other}")),
        },
        multer::Error::FieldSizeExceeded { field_name, .. } => {
            bad(format!("multipart field {:?} is larger than {MAX_FIELD} bytes", field_name.unwrap_or_default()))
        }
        multer::Error::StreamSizeExceeded { limit } => ApiError::coded("payload_too_large", format!("the multipart body is larger than {limit} bytes")),
        multer::Error::UnknownField { field_name } => {
            bad(format!("unknown multipart field {:?}; send acl, data, id, then file", field_name.unwrap_or_default()))
        }
        other => bad(format!("malformed multipart body: {other}")),
    }
}

/// `length`: the body's Content-Length, if sent.
pub async fn store(app: &Arc<App>, s: &mut ServerSession, ctx: &Ctx, mut target: Target, boundary: String, length: Option<u64>) -> Result<Value, ApiError> {
    let mut reader = BodyReader::new(s, app.cfg.file_idle_timeout);
    let stream = futures_util::stream::unfold(&mut reader, |r| async move {
        match r.next_chunk().await {
            Ok(Some(b)) => Some((Ok::<Bytes, BodyError>(b), r)),
            Ok(None) => None,
            Err(e) => Some((Err(BodyError(e)), r)),
        }
    });
    let taken = Arc::new(Taken::default());
    let stream = budgeted(Box::pin(stream), taken.clone());
    let mut mp = Multipart::with_constraints(stream, boundary, constraints(app.cfg.file_max_bytes));
    while let Some(field) = mp.next_field().await.map_err(mp_error)? {
        taken.progress();
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "acl" | "data" => {
                let text = field_text(field, &taken).await?;
                let v: Value = serde_json::from_str(&text).map_err(|_| bad(format!("multipart field {name} is not JSON")))?;
                if name == "data" && !v.is_object() {
                    return Err(ApiError::bad_request("invalid_data", "data must be a JSON object"));
                }
                if name == "acl" {
                    target.acl = Some(text);
                } else {
                    target.data = Some(text);
                }
            }
            "id" => {
                let text = field_text(field, &taken).await?;
                if target.replace {
                    return Err(bad("the id of a replaced file is in the path; send no id field"));
                }
                let id = uuid::Uuid::parse_str(text.trim()).map_err(|_| bad("id must be a uuid"))?;
                target.file_id = Some(id.to_string());
            }
            _ => {
                // "file" (multer refuses any other name).
                if let Some(n) = field.file_name().filter(|n| !n.is_empty()) {
                    target.name = Some(n.to_string());
                }
                if target.name.is_none() {
                    return Err(bad("the file part needs a filename (Content-Disposition: form-data; name=\"file\"; filename=\"...\")"));
                }
                target.content_type = field.content_type().map(|m| m.essence_str().to_ascii_lowercase());
                // The session is opened before the file's data is read, so refusals
                // (403/404/413/415) come before the bulk of the body; a body small
                // enough to be one piece is stored by one call instead.
                let precreate = length.is_none_or(|n| n > PIECE as u64);
                let mut src = FieldPieces { mp: &mut mp, field: Some(field), pending: None, taken };
                return upload::store(app, ctx, &target, None, &mut src, precreate).await;
            }
        }
    }
    Err(bad("the multipart body has no file field"))
}

fn constraints(file_max_bytes: u64) -> Constraints {
    let limits = SizeLimit::new()
        .whole_stream(file_max_bytes.saturating_add(OVERHEAD))
        .for_field("acl", MAX_FIELD as u64)
        .for_field("data", MAX_FIELD as u64)
        .for_field("id", 128);
    Constraints::new().allowed_fields(vec!["acl", "data", "id", "file"]).size_limit(limits)
}

/// The `file` field as pieces; at its end the body must end too.
struct FieldPieces<'m, 'r> {
    mp: &'m mut Multipart<'r>,
    field: Option<multer::Field<'r>>,
    pending: Option<Bytes>,
    /// File bytes taken out of multer (Budgeted's allowance).
    taken: Arc<Taken>,
}

impl HasSession for FieldPieces<'_, '_> {
    fn session(&mut self) -> Option<&mut ServerSession> {
        None // 100 Continue was answered before the fields were read
    }
}

impl Pieces for FieldPieces<'_, '_> {
    fn fill<'s>(&'s mut self, buf: &'s mut BytesMut, max: usize) -> impl Future<Output = Result<bool, ApiError>> + Send + 's {
        async move {
            buf.clear();
            while buf.len() < max {
                let chunk = match self.pending.take() {
                    Some(p) => Some(p),
                    None => match self.field.as_mut() {
                        Some(f) => {
                            let c = f.chunk().await.map_err(mp_error)?;
                            if let Some(c) = &c {
                                self.taken.file(c.len());
                            }
                            c
                        }
                        None => None,
                    },
                };
                let Some(mut chunk) = chunk else {
                    // The file ended: nothing may follow it.
                    self.field = None;
                    if self.mp.next_field().await.map_err(mp_error)?.is_some() {
                        return Err(bad("fields must come before the file field, and only one file is sent"));
                    }
                    return Ok(false);
                };
                let room = max - buf.len();
                if chunk.len() > room {
                    self.pending = Some(chunk.split_off(room));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn body(chunks: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + Unpin {
        futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))))
    }

    /// Drive multer over `chunks` as store does; how many body bytes it pulled and
    /// the error it ended with (None: a file field was found and read to its end).
    async fn run(chunks: Vec<Vec<u8>>, file_max: u64) -> (u64, Option<ApiError>) {
        let pulled = Arc::new(AtomicU64::new(0));
        let p = pulled.clone();
        let counted = body(chunks).inspect(move |c| {
            if let Ok(b) = c {
                p.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
        });
        let taken = Arc::new(Taken::default());
        let mut mp = Multipart::with_constraints(budgeted(counted, taken.clone()), "X", constraints(file_max));
        let r: Result<(), ApiError> = async {
            while let Some(mut f) = mp.next_field().await.map_err(mp_error)? {
                taken.progress();
                if f.name() != Some("file") {
                    field_text(f, &taken).await?;
                    continue;
                }
                while let Some(c) = f.chunk().await.map_err(mp_error)? {
                    taken.file(c.len());
                }
            }
            Ok(())
        }
        .await;
        (pulled.load(Ordering::Relaxed), r.err())
    }

    #[tokio::test]
    async fn a_body_without_a_boundary_is_refused_after_the_budget() {
        // 64 MiB that never says --X: refused after OVERHEAD and one chunk, not held.
        let chunks = vec![vec![b'a'; 64 << 10]; 1024];
        let (pulled, err) = run(chunks, 5 << 30).await;
        let e = err.expect("refused");
        assert_eq!((e.status.as_u16(), e.code.as_str()), (413, "payload_too_large"), "{}", e.message);
        assert!(pulled <= OVERHEAD + (64 << 10), "multer was handed {pulled} bytes");
    }

    #[tokio::test]
    async fn endless_part_headers_are_refused_after_the_budget() {
        let mut first = b"--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n".to_vec();
        first.extend(std::iter::repeat_n(b'h', 1000));
        let mut chunks = vec![first];
        chunks.extend(vec![vec![b'h'; 16 << 10]; 4096]);
        let (pulled, err) = run(chunks, 5 << 30).await;
        assert_eq!(err.expect("refused").status.as_u16(), 413);
        assert!(pulled <= OVERHEAD + (16 << 10) + 2000, "multer was handed {pulled} bytes");
    }

    #[tokio::test]
    async fn file_data_does_not_use_the_budget() {
        // 8 MiB of file data (far over OVERHEAD) passes; the fields before it count.
        let mut chunks = vec![b"--X\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n{}\r\n--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n".to_vec()];
        chunks.extend(vec![vec![b'z'; 64 << 10]; 128]);
        chunks.push(b"\r\n--X--\r\n".to_vec());
        let (_, err) = run(chunks, 5 << 30).await;
        assert!(err.is_none(), "{:?}", err.map(|e| e.message));
    }

    #[tokio::test]
    async fn the_whole_stream_is_capped_past_file_max_bytes() {
        let mut chunks = vec![b"--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n".to_vec()];
        chunks.extend(vec![vec![b'z'; 64 << 10]; 64]); // 4 MiB of file
        chunks.push(b"\r\n--X--\r\n".to_vec());
        let (pulled, err) = run(chunks, 1 << 20).await;
        assert_eq!(err.expect("refused").status.as_u16(), 413);
        assert!(pulled <= (1 << 20) + OVERHEAD + (64 << 10), "multer was handed {pulled} bytes");
    }
}
