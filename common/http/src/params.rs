//! Request parameters from the query string and, for POST/PUT/DELETE, from a form or JSON body
//! (body fields win). Bodies over the size limit and malformed bodies are 4xx JSON errors.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use serde_json::Value;
use unikv_types::ClientSeq;

use crate::error::ApiError;

pub struct Params(HashMap<String, String>);

impl Params {
    /// Reads parameters from the request; `max_body` bounds the body size.
    pub async fn from_request(req: Request, max_body: usize) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let mut map: HashMap<String, String> = match parts.uri.query() {
            Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .map_err(|e| {
                    ApiError::bad_request("bad_request", format!("malformed query string: {e}"))
                })?
                .into_iter()
                .collect(),
            None => HashMap::new(),
        };
        let bytes = read_body(body, max_body).await?;
        if !bytes.is_empty() {
            let ctype = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            // `curl -d '{...}'` labels a JSON body as a form: an object is never a useful form
            // body, so it is read as the JSON it is.
            let looks_json = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            let is_json = ctype.starts_with("application/json")
                || (looks_json
                    && (ctype.is_empty()
                        || ctype.starts_with("application/x-www-form-urlencoded")));
            if is_json {
                map.extend(json_fields(&bytes)?);
            } else {
                let fields = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
                    .map_err(|e| {
                        ApiError::bad_request("bad_request", format!("malformed form body: {e}"))
                    })?;
                map.extend(fields);
            }
        }
        Ok(Self(map))
    }

    /// Every parameter, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn optional(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.optional(name).ok_or_else(|| {
            ApiError::bad_request("missing_param", format!("missing parameter {name:?}"))
        })
    }

    /// The first present of several names (e.g. `val` or `value`).
    pub fn required_any(&self, names: &[&str]) -> Result<&str, ApiError> {
        names.iter().find_map(|n| self.optional(n)).ok_or_else(|| {
            ApiError::bad_request("missing_param", format!("missing parameter {:?}", names[0]))
        })
    }

    pub fn u64(&self, name: &str) -> Result<u64, ApiError> {
        let v = self.required(name)?;
        v.trim().parse().map_err(|_| {
            ApiError::bad_request(
                "bad_request",
                format!("parameter {name:?} must be a non-negative integer, got {v:?}"),
            )
        })
    }

    /// A yes/no parameter: absent, `false` or `0` → false; `true`, `1` or empty → true;
    /// anything else → 400 `bad_<name>`.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.optional(name) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(other) => Err(ApiError::bad_request(
                &format!("bad_{name}"),
                format!("{name} must be true or false, got {other:?}"),
            )),
        }
    }

    /// A shard id parameter: a number, at least 1.
    pub fn shard_id(&self, name: &str) -> Result<unikv_types::ShardId, ApiError> {
        let v = self.u64(name)?;
        if v == 0 {
            return Err(ApiError::bad_request(
                "bad_request",
                format!("{name} must be at least 1"),
            ));
        }
        Ok(unikv_types::ShardId(v))
    }

    /// `client_id` and `seq`: both or neither; `ts` (ms since the Unix epoch when the request
    /// was first sent, the same on every retry) optional with them.
    pub fn client_seq(&self) -> Result<Option<ClientSeq>, ApiError> {
        match (self.optional("client_id"), self.optional("seq")) {
            (None, None) => Ok(None),
            (Some(id), Some(_)) => {
                if id.is_empty() || id.len() > 128 {
                    return Err(ApiError::bad_request(
                        "bad_request",
                        "client_id must be 1 to 128 bytes",
                    ));
                }
                let ts = match self.optional("ts") {
                    Some(_) => Some(self.u64("ts")?),
                    None => None,
                };
                Ok(Some(ClientSeq {
                    client_id: id.to_string(),
                    seq: self.u64("seq")?,
                    ts,
                }))
            }
            (None, Some(_)) | (Some(_), None) => Err(ApiError::bad_request(
                "bad_request",
                "client_id and seq must be given together",
            )),
        }
    }
}

async fn read_body(body: Body, max: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, max).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is over {max} bytes (or could not be read)"),
        )
    })
}

/// Flattens a JSON object's scalar fields into strings.
fn json_fields(bytes: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("bad_request", format!("malformed JSON body: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(ApiError::bad_request(
            "bad_request",
            "JSON body must be an object",
        ));
    };
    let mut out = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        let s = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            _ => {
                return Err(ApiError::bad_request(
                    "bad_request",
                    format!("JSON field {k:?} must be a string, number or boolean"),
                ))
            }
        };
        out.push((k, s));
    }
    Ok(out)
}
