//! The API error type: every failure a node or router answers over HTTP, rendered as
//! `{"error", "code", ...details}` JSON with a 4xx/5xx status. Its own module so that
//! parameter parsing, replies and the KV endpoints can all name it without going through the
//! crate root.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};
use unikv_types::KvError;

/// An error answered as `{"error": message, "code": code, ...details}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            details: Map::new(),
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        self.details.insert(
            key.to_string(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.details;
        body.insert("error".into(), Value::String(self.message));
        body.insert("code".into(), Value::String(self.code));
        (self.status, Json(Value::Object(body))).into_response()
    }
}

impl From<unikv_types::catalog::CatalogError> for ApiError {
    fn from(e: unikv_types::catalog::CatalogError) -> Self {
        KvError::from(e).into()
    }
}

impl From<KvError> for ApiError {
    fn from(e: KvError) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let err = ApiError::new(status, e.code(), e.to_string());
        match e {
            KvError::NotLeader { shard, leader } => err.with("shard", shard).with("leader", leader),
            KvError::WrongShard {
                slot,
                shard,
                owner,
                epoch,
            } => err
                .with("slot", slot)
                .with("shard", shard)
                .with("owner", owner)
                .with("epoch", epoch),
            KvError::Unavailable { shard, .. } => err.with("shard", shard),
            KvError::InsufficientStorage { shard, node, .. } => {
                err.with("shard", shard).with("node", node)
            }
            _ => err,
        }
    }
}
