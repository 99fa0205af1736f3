//! Payload encoding and length-prefixed frames.
//!
//! Every payload is msgpack with named fields (`rmp_serde::to_vec_named`), so messages stay
//! readable across versions that add or reorder fields. A plain request/response uses the
//! whole stream as its one message; streaming uses (snapshots) send several frames on one
//! stream, each a big-endian `u32` length followed by that many bytes of msgpack.

use quinn::{RecvStream, SendStream};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Largest message (request, response or frame body) accepted or sent.
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Body bytes are read in pieces of at most this size so a peer announcing a large frame
/// cannot make us allocate more than it actually sends.
const READ_STEP: usize = 1024 * 1024;

/// Encodes `v` as msgpack with named fields, enforcing [`MAX_MESSAGE`].
pub(crate) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    let bytes = rmp_serde::to_vec_named(v).map_err(|e| Error::Codec(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE {
        return Err(Error::TooLarge { limit: MAX_MESSAGE });
    }
    Ok(bytes)
}

/// Decodes msgpack produced by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Codec(e.to_string()))
}

/// Writes one frame: `u32` big-endian length, then the msgpack of `v`.
pub async fn write_frame<T: Serialize>(send: &mut SendStream, v: &T) -> Result<()> {
    let body = encode(v)?;
    // encode() bounds the length by MAX_MESSAGE, which fits in a u32.
    let len = u32::try_from(body.len()).map_err(|_| Error::TooLarge { limit: MAX_MESSAGE })?;
    send.write_all(&len.to_be_bytes())
        .await
        .map_err(|e| Error::write(None, e))?;
    send.write_all(&body)
        .await
        .map_err(|e| Error::write(None, e))
}

/// Reads one frame written by [`write_frame`] and decodes it. A length above [`MAX_MESSAGE`]
/// is rejected with [`Error::TooLarge`] before anything is allocated; a stream that ends at a
/// frame boundary yields [`Error::Stream`] (senders that need an explicit end should send a
/// terminating frame, e.g. `Option::None`).
pub async fn read_frame<T: DeserializeOwned>(recv: &mut RecvStream) -> Result<T> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header)
        .await
        .map_err(|e| Error::read_exact(None, e))?;
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_MESSAGE {
        return Err(Error::TooLarge { limit: MAX_MESSAGE });
    }
    let mut body = Vec::with_capacity(len.min(READ_STEP));
    while body.len() < len {
        let start = body.len();
        body.resize(start + (len - start).min(READ_STEP), 0);
        recv.read_exact(&mut body[start..])
            .await
            .map_err(|e| Error::read_exact(None, e))?;
    }
    decode(&body)
}
