//! The statements of the file routes (prepared once per connection, pgwire.rs).
//! Uuids are bound as text and cast: no uuid ToSql needed. Results are read in
//! binary (db::call_binary): jsonb as its version byte and text, bytea raw.

pub const FILE_GET: &str = "select meta, blob_id, data from baas.file_get($1::text::uuid, $2::bigint, $3::bigint, $4::integer)";
pub const FILE_READ: &str = "select data from baas.file_read($1::text::uuid, $2::bigint, $3::integer)";
pub const UPLOAD_FILE: &str = "select baas.upload_file($1::text, $2::text, $3::text, $4::bytea, coalesce($5::text::jsonb, '{}'), $6::text::jsonb, \
     $7::text::uuid, $8::bigint, $9::boolean)";
pub const UPLOAD_CREATE: &str = "select baas.upload_create($1::text, $2::text, $3::text, $4::bigint, coalesce($5::text::jsonb, '{}'), \
     $6::text::jsonb, $7::text::uuid, $8::bigint, $9::boolean, $10::bytea)";
/// An append renews the lease its writer holds (a session without a lease, a simple
/// upload's, needs none).
pub const UPLOAD_APPEND: &str = "select baas._upload_append($1::text::uuid, $2::text::uuid, $3::bigint, $4::bytea)";
pub const UPLOAD_LEASE: &str = "select baas._upload_lease($1::text::uuid, $2::text::uuid, $3::boolean)";
pub const UPLOAD_REWIND: &str = "select baas._upload_rewind($1::text::uuid, $2::text::uuid)";
/// After a PATCH that ended (well, or cut without a checksum): the next may start now.
pub const UPLOAD_RELEASE: &str = "select 1::integer from baas._upload_release($1::text::uuid, $2::text::uuid) x";
pub const UPLOAD_STATUS: &str = "select baas.upload_status($1::text::uuid)";
pub const UPLOAD_FINISH: &str = "select baas.upload_finish($1::text::uuid)";
pub const UPLOAD_ABORT: &str = "select 1::integer from baas.upload_abort($1::text::uuid) x";
/// Before a multipart body (whose fields carry the name, type, id, data and ACL), the
/// checks of upload_create that need none of them: the bucket, the right to create (or
/// to read and update the replaced file, and If-Match's version), the open-session cap
/// and a quota already used up. A session is opened and dropped in one transaction:
/// nothing stays. The name is a placeholder; the length is unknown (the appends check
/// the size and the quota as the file arrives).
pub const UPLOAD_PROBE: &str = "select 1::integer from baas.upload_abort((baas.upload_create($1::text, $2::text, null::text, null::bigint, \
     '{}'::jsonb, null::jsonb, $3::text::uuid, $4::bigint, $5::boolean, null::bytea) ->> 'upload_id')::uuid) x";
pub const CLEANUP: &str = "select baas.cleanup_uploads(100)";
