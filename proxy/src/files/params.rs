//! The query parameters of the file routes (`Query::File`): unknown or repeated ones
//! are refused (400 invalid_query), like every route's.

use crate::errors::ApiError;
use crate::routes::input;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileQuery {
    pub thumb: Option<String>,
    pub fit: Option<String>,
    /// `download=1`: always an attachment.
    pub download: bool,
    pub sig: Option<String>,
    /// The name of a raw upload.
    pub name: Option<String>,
}

pub fn download(query: Option<&str>) -> Result<FileQuery, ApiError> {
    parse(query, &["thumb", "fit", "download", "sig"])
}

pub fn upload(query: Option<&str>) -> Result<FileQuery, ApiError> {
    parse(query, &["name"])
}

fn parse(query: Option<&str>, known: &[&str]) -> Result<FileQuery, ApiError> {
    let mut q = FileQuery::default();
    for (k, v) in input::pairs(query, known)? {
        match k.as_ref() {
            "thumb" => q.thumb = Some(v.into_owned()),
            "fit" => q.fit = Some(v.into_owned()),
            "download" => {
                q.download = match v.as_ref() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    other => return Err(ApiError::bad_request("invalid_query", format!("download must be 1 or 0, got {other:?}"))),
                }
            }
            "sig" => q.sig = Some(v.into_owned()),
            "name" => q.name = Some(v.into_owned()),
            _ => {}
        }
    }
    if q.fit.is_some() && q.thumb.is_none() {
        return Err(ApiError::bad_request("invalid_query", "fit is only for thumbnails: send thumb=WxH too"));
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_parameters() {
        let q = download(Some("thumb=64x64&fit=cover&download=1&sig=abc")).unwrap();
        assert_eq!((q.thumb.as_deref(), q.fit.as_deref(), q.download, q.sig.as_deref()), (Some("64x64"), Some("cover"), true, Some("abc")));
        assert_eq!(download(None).unwrap(), FileQuery::default());
        for bad in ["name=x", "download=yes", "sig=a&sig=b", "fit=cover", "x=1"] {
            assert_eq!(download(Some(bad)).unwrap_err().status.as_u16(), 400, "{bad}");
        }
        assert_eq!(upload(Some("name=r%C3%A9sum%C3%A9+1.pdf")).unwrap().name.as_deref(), Some("résumé 1.pdf"));
        assert!(upload(Some("thumb=1x1")).is_err());
    }
}
