//! A stand-in for the hub until it is merged: every subscription is refused with 503
//! `realtime_unavailable`, so the transports can be built and tested on their own.

use super::{Conn, Feeds, Subscribe};
use crate::errors::ApiError;
use async_trait::async_trait;
use http::StatusCode;
use std::sync::Arc;

pub struct Unavailable;

#[async_trait]
impl Feeds for Unavailable {
    async fn subscribe(&self, _conn: &Arc<Conn>, _req: Subscribe) -> Result<(), ApiError> {
        Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "realtime_unavailable", "live change feeds are not available on this server"))
    }
    fn unsubscribe(&self, _conn: &Arc<Conn>, _sub: &str) -> bool {
        false
    }
    fn disconnect(&self, _conn: &Arc<Conn>) {}
}
