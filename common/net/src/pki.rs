//! The cluster's certificate authority and the certificates it issues.
//!
//! Two ways to run, told apart by what a process's directory (`--tls_dir`) holds:
//! - **Certificates** (what `unikv-node certs` makes, and `run_unified.sh` on first start):
//!   the directory holds the CA *certificate* (`ca.pem`), the process's own certificate and key
//!   (`cert.pem`, `key.pem`) and the gossip key. The CA's private key (`ca.key`) stays in the
//!   CA directory, which no process is given: a stolen node directory cannot mint more.
//! - **Local development**: the directory holds `ca.pem` with the CA's key inside, created by
//!   the first process; each process issues itself a fresh certificate for the role it runs as.
//!   Anyone who can read the directory can join in any role, so it is only allowed on loopback.
//!
//! rcgen (without its x509 parser) cannot read a certificate back into parameters, so the CA's
//! subject and key usages are fixed constants here: the issuer used to sign leaves is rebuilt
//! from [`ca_params`] plus the stored key.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::secrets::{self, GOSSIP_KEY_FILE};
pub use crate::secrets::{CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE};

const CA_COMMON_NAME: &str = "unikv cluster CA";
/// How long a CA is valid (CockroachDB's default too).
const CA_DAYS: i64 = 10 * 365;
/// How long a node's or router's certificate is valid.
const LEAF_DAYS: i64 = 5 * 365;
const ORGANIZATION: &str = "unikv";

/// A certificate [`Ca::issue`] signed, with its key.
pub(crate) struct Leaf {
    pub(crate) der: CertificateDer<'static>,
    pub(crate) pem: String,
    pub(crate) key: KeyPair,
}

/// A CA that can sign: its certificate and private key.
pub(crate) struct Ca {
    pub(crate) cert: CertificateDer<'static>,
    key: KeyPair,
}

impl Ca {
    /// Signs a fresh ECDSA P-256 certificate for `identity`, valid as server and client.
    pub(crate) fn issue(&self, identity: &Identity) -> Result<Leaf> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(tls)?;
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = leaf_params(identity)?
            .signed_by(&key, &issuer)
            .map_err(tls)?;
        Ok(Leaf {
            pem: cert.pem(),
            der: cert.der().clone(),
            key,
        })
    }

    /// The CA key's DER (local development derives its stateless-reset secret from it).
    pub(crate) fn key_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }

    fn generate() -> Result<(Ca, String)> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(tls)?;
        let cert = ca_params().self_signed(&key).map_err(tls)?;
        let pem = cert.pem();
        Ok((
            Ca {
                cert: cert.der().clone(),
                key,
            },
            pem,
        ))
    }

    /// Local development: the CA of `dir/ca.pem` (certificate and key in one file), created by
    /// the first process that needs it (race-safe: exactly one creator wins).
    pub(crate) fn development(dir: &Path) -> Result<Ca> {
        fs::create_dir_all(dir)?;
        let path = dir.join(CA_FILE);
        match fs::read(&path) {
            Ok(pem) => return parse_ca(&pem, &pem, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let (ca, cert_pem) = Ca::generate()?;
        let pem = format!("{cert_pem}{}", ca.key.serialize_pem());
        if secrets::create_once(dir, CA_FILE, pem.as_bytes())? {
            tracing::info!(path = %path.display(), "created a local development CA (loopback only; use `unikv-node certs` for anything else)");
            Ok(ca)
        } else {
            tracing::debug!(path = %path.display(), "development CA created concurrently; loading it");
            let pem = fs::read(&path)?;
            parse_ca(&pem, &pem, &path)
        }
    }

    /// The CA of a CA directory (`ca.pem` + `ca.key`), created on first use together with the
    /// cluster's gossip key. A directory made here is owner-only (0700); the key files are
    /// 0600 wherever they are.
    fn load_or_create(ca_dir: &Path) -> Result<(Ca, Vec<u8>)> {
        if !ca_dir.exists() {
            fs::create_dir_all(ca_dir)?;
            secrets::make_private_dir(ca_dir)?;
        }
        let cert_path = ca_dir.join(CA_FILE);
        let key_path = ca_dir.join(CA_KEY_FILE);
        if !key_path.exists() {
            if cert_path.exists() {
                return Err(Error::Tls(format!(
                    "{} has {CA_FILE} but no {CA_KEY_FILE}: issue certificates where the cluster's CA key is kept",
                    ca_dir.display()
                )));
            }
            let (ca, cert_pem) = Ca::generate()?;
            if secrets::create_once(ca_dir, CA_KEY_FILE, ca.key.serialize_pem().as_bytes())? {
                secrets::create_once(ca_dir, CA_FILE, cert_pem.as_bytes())?;
                tracing::info!(dir = %ca_dir.display(), "created the cluster CA");
            }
        }
        secrets::load_or_create_gossip_key(ca_dir)?;
        let key = fs::read(&key_path)?;
        // A concurrent creator writes the key first, then the certificate.
        let cert = read_soon(&cert_path)?;
        if has_private_key(&cert) {
            return Err(Error::Tls(format!(
                "{} holds a private key: in a CA directory the key belongs in {CA_KEY_FILE}",
                cert_path.display()
            )));
        }
        Ok((parse_ca(&cert, &key, &key_path)?, cert))
    }
}

/// What [`issue_certificates`] wrote.
#[derive(Debug)]
pub struct Issued {
    pub identity: Identity,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

impl fmt::Display for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "issued a certificate for {} in {}",
            self.identity,
            self.dir.display()
        )
    }
}

/// The `certs` command: creates the CA in `ca_dir` if it has none (with the gossip key), then
/// fills `out` with what the process `identity` needs and nothing more: the CA certificate(s),
/// its own certificate and key, and the gossip key. Re-running replaces the certificate and
/// key (rotation); the CA and gossip key are never replaced.
pub fn issue_certificates(ca_dir: &Path, out: &Path, identity: &Identity) -> Result<Issued> {
    let (ca, ca_pem) = Ca::load_or_create(ca_dir)?;
    let created = !out.exists();
    fs::create_dir_all(out)?;
    let same = fs::canonicalize(out)? == fs::canonicalize(ca_dir)?;
    if same || out.join(CA_KEY_FILE).exists() {
        return Err(Error::Tls(format!(
            "{}: a process's directory must not hold the CA key: give --out another directory than --ca_dir",
            out.display()
        )));
    }
    if created {
        secrets::make_private_dir(out)?;
    }
    let gossip_key = fs::read(ca_dir.join(GOSSIP_KEY_FILE))?;
    let leaf = ca.issue(identity)?;
    let key_pem = leaf.key.serialize_pem();
    let files = [
        (CA_FILE, ca_pem.as_slice()),
        (CERT_FILE, leaf.pem.as_bytes()),
        (KEY_FILE, key_pem.as_bytes()),
        (GOSSIP_KEY_FILE, gossip_key.as_slice()),
    ];
    let mut written = Vec::new();
    for (name, bytes) in files {
        secrets::replace(out, name, bytes)?;
        written.push(out.join(name));
    }
    Ok(Issued {
        identity: identity.clone(),
        dir: out.to_owned(),
        files: written,
    })
}

/// Every certificate in `pem` (the trusted roots).
pub(crate) fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

/// Whether a PEM file holds a private key of any kind.
pub(crate) fn has_private_key(pem: &[u8]) -> bool {
    pem.windows(11).any(|w| w == b"PRIVATE KEY")
}

/// Reads `path`, waiting up to 5 s for a concurrent creator to write it.
fn read_soon(path: &Path) -> Result<Vec<u8>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match fs::read(path) {
            Ok(bytes) => return Ok(bytes),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Parameters of the cluster CA. Also used to rebuild the issuer when loading an existing CA,
/// so they must stay stable: leaves name the CA by this subject.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    set_validity(&mut params, CA_DAYS);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn leaf_params(identity: &Identity) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(identity.alt_names()).map_err(tls)?;
    set_validity(&mut params, LEAF_DAYS);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::OrganizationalUnitName, identity.role().as_str());
    dn.push(DnType::CommonName, identity.common_name());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Valid from an hour ago (clocks of other machines may lag) for `days`.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// The CA from its certificate PEM and its key PEM (the same text in local development).
fn parse_ca(cert_pem: &[u8], key_pem: &[u8], path: &Path) -> Result<Ca> {
    let cert = CertificateDer::from_pem_slice(cert_pem)
        .map_err(|e| Error::Tls(format!("{}: no CA certificate: {e}", path.display())))?;
    let key = PrivatePkcs8KeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::Tls(format!("{}: no PKCS#8 CA key: {e}", path.display())))?;
    let key = KeyPair::try_from(&key)
        .map_err(|e| Error::Tls(format!("{}: bad CA key: {e}", path.display())))?;
    Ok(Ca { cert, key })
}

pub(crate) fn tls(e: impl fmt::Display) -> Error {
    Error::Tls(e.to_string())
}
