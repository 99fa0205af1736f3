//! Storage errors. The openraft traits want `std::io::Error`; `From` converts.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("corrupt snapshot {path}: {reason}")]
    CorruptSnapshot { path: String, reason: String },
    #[error("the data dir has layout format {found}, newer than this binary's {supported}: run the unikv version that wrote it (or newer)")]
    Format { found: u32, supported: u32 },
    #[error("blocking task failed: {0}")]
    Join(String),
    #[error("{unit}: the copy's record of writes is lost ({reason}); the copy starts over")]
    CopyLost { unit: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the error says stored bytes are damaged: a RocksDB checksum or consistency
    /// failure (block checksums are verified on every read, `paranoid_checks` at open and in
    /// compactions), or a stored record that no longer decodes.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Rocks(e) => e.kind() == rocksdb::ErrorKind::Corruption,
            Error::Decode { .. } => true,
            _ => false,
        }
    }

    /// Whether the error says the disk is full: RocksDB's `NoSpace` (ENOSPC on a WAL, SST or
    /// MANIFEST write; the DB then refuses writes until it recovers by itself once space is
    /// back) or an ENOSPC from our own files (snapshots). Such an error is held and retried,
    /// never handed to openraft (which would stop Raft for good); see `docs/ARCHITECTURE.md`
    /// "Disk full".
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Rocks(e) => {
                e.kind() == rocksdb::ErrorKind::IOError && {
                    let m = e.as_ref();
                    m.contains("No space left on device") || m.contains("Space limit reached")
                }
            }
            Error::Io(e) => {
                e.raw_os_error() == Some(ENOSPC) || e.kind() == std::io::ErrorKind::StorageFull
            }
            _ => false,
        }
    }
}

/// ENOSPC on Linux.
const ENOSPC: i32 = 28;

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(io) => io,
            other => std::io::Error::other(other.to_string()),
        }
    }
}

/// msgpack-encodes `v` (named fields, so openraft's types round-trip).
pub fn encode<T: serde::Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(v).map_err(|e| Error::Encode {
        what,
        reason: e.to_string(),
    })
}

/// msgpack-decodes `bytes`.
pub fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Decode {
        what,
        reason: e.to_string(),
    })
}

/// Runs blocking storage work off the async workers.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Join(e.to_string()))?
}
