//! Secret files of the cluster's directories (a process's `--tls_dir`, the CA directory):
//! written once (or replaced whole), race-safe, readable by the owner only. The CA, the
//! certificates' keys (`pki`) and the gossip key live here.
//!
//! A secret is written to a temp file, synced, and hard-linked into place: the link fails if
//! the file exists, so the first creator wins atomically and nobody ever sees a partial file.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// File name of the gossip key inside the cluster directory.
pub const GOSSIP_KEY_FILE: &str = "gossip.key";
/// The CA certificate(s): in a process's directory the trusted roots (several while a CA is
/// being rotated); in local development the certificate and the CA key in one file.
pub const CA_FILE: &str = "ca.pem";
/// The CA's private key, only ever in the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// A process's own certificate.
pub const CERT_FILE: &str = "cert.pem";
/// A process's own private key.
pub const KEY_FILE: &str = "key.pem";

/// Writes `bytes` to `dir/name` unless the file exists. `Ok(true)`: this call created it.
pub(crate) fn create_once(dir: &Path, name: &str, bytes: &[u8]) -> Result<bool> {
    fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(temp_name(name));
    if let Err(e) = write_private(&tmp, bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The cluster's gossip key from `dir/gossip.key` (64 hex digits), created by the first
/// process that needs it. Every node and router of a cluster must share it (copy it with
/// `ca.pem` to each machine).
///
/// A directory with certificates issued by `unikv-node certs` gets the key with them: there
/// it is never created (a new key would cut the process off from its cluster).
pub fn load_or_create_gossip_key(dir: &Path) -> Result<[u8; 32]> {
    let path = dir.join(GOSSIP_KEY_FILE);
    if !path.exists() && dir.join(CERT_FILE).exists() {
        return Err(Error::Tls(format!(
            "{} is missing: copy it from the CA directory (`unikv-node certs` writes it beside cert.pem)",
            path.display()
        )));
    }
    if !path.exists() {
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| Error::Tls("the system's random source failed".into()))?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        if create_once(dir, GOSSIP_KEY_FILE, format!("{hex}\n").as_bytes())? {
            tracing::info!(path = %path.display(), "created the cluster's gossip key");
        }
    }
    let text = fs::read_to_string(&path)?;
    parse_key(text.trim()).ok_or_else(|| {
        Error::Tls(format!(
            "{}: not a gossip key (64 hex digits); copy it from another member of the cluster or remove it to make a new cluster",
            path.display()
        ))
    })
}

/// Writes `bytes` to `dir/name`, replacing any earlier file whole (temp file, fsync, rename).
pub(crate) fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(temp_name(name));
    if let Err(e) = write_private(&tmp, bytes).and_then(|()| fs::rename(&tmp, dir.join(name))) {
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    sync_dir(dir);
    Ok(())
}

/// Makes `dir` reachable by its owner only (0700).
pub(crate) fn make_private_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn parse_key(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// A name no other thread or process will pick: pid + time + per-process counter.
fn temp_name(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".{name}.{}.{nanos}.{n}.tmp", std::process::id())
}

/// Writes a new file readable only by the owner and syncs it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Best effort: make the new directory entry durable.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "fsync of the cluster directory failed");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gossip_key_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_gossip_key(dir.path()).unwrap();
        let b = load_or_create_gossip_key(dir.path()).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(GOSSIP_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(dir.path().join(GOSSIP_KEY_FILE), "not hex").unwrap();
        let e = load_or_create_gossip_key(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a gossip key"), "{e}");
    }
}
