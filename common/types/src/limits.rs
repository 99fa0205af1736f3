//! Size limits on keys and values, checked at every entry point before anything is proposed.

use serde::{Deserialize, Serialize};

/// Request size limits. Defaults: keys up to 1 KiB, values up to 1 MiB.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
        }
    }
}

impl Limits {
    /// Checks a key (and value, if any) against the limits.
    pub fn check(&self, key: &str, value: Option<&str>) -> Result<(), crate::KvError> {
        if key.is_empty() {
            return Err(crate::KvError::BadRequest {
                code: "empty_key".into(),
                message: "key must not be empty".into(),
            });
        }
        if key.len() > self.max_key_bytes {
            return Err(crate::KvError::BadRequest {
                code: "key_too_long".into(),
                message: format!(
                    "key is {} bytes; the limit is {} bytes",
                    key.len(),
                    self.max_key_bytes
                ),
            });
        }
        if let Some(v) = value {
            if v.len() > self.max_value_bytes {
                return Err(crate::KvError::BadRequest {
                    code: "value_too_long".into(),
                    message: format!(
                        "value is {} bytes; the limit is {} bytes",
                        v.len(),
                        self.max_value_bytes
                    ),
                });
            }
        }
        Ok(())
    }
}
