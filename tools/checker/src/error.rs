//! The one error type of the crate. Only reading a history can fail: the checks themselves always
//! produce a [`Report`](crate::Report), with "could not decide" as one of its outcomes.

use std::path::PathBuf;

/// Why a history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid operation. `origin` is the file name (or `<input>` for a string),
    /// `line` counts from 1.
    #[error("{origin}:{line}: {message}")]
    Malformed {
        origin: String,
        line: usize,
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
