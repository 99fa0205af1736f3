//! Cluster PKI: one CA per cluster directory, one fresh leaf certificate per process.
//!
//! Peers are addressed by IP and port, which change as nodes move, so identity is not a host
//! name: a peer is trusted because its certificate is signed by the cluster CA. Every leaf
//! therefore carries the same fixed subject alt name ([`SERVER_NAME`]) and is valid both as a
//! server and as a client certificate, and both sides of every connection verify each other
//! (mutual TLS) against the CA as their only root.
//!
//! The CA lives in `dir/ca.pem` (certificate and private key in one file) so any process with
//! access to the directory can join the cluster. Leaves are never written to disk.
//!
//! rcgen (without its x509 parser) cannot read a certificate back into parameters, so the CA's
//! subject and key usages are fixed constants here: the issuer used to sign leaves is rebuilt
//! from [`ca_params`] plus the stored key. [`ClusterTls::load_or_create`] verifies the fresh
//! leaf against the stored CA certificate, so a CA made by anything else fails loudly at start
//! rather than at the first handshake.

use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::error::{Error, Result};

/// The name every leaf certificate carries and every client asks for.
pub const SERVER_NAME: &str = "unikv.cluster";

/// The ALPN protocol spoken on every connection.
pub const ALPN: &[u8] = b"unikv/1";

/// File name of the CA (certificate + key) inside the cluster directory.
pub const CA_FILE: &str = "ca.pem";

const CA_COMMON_NAME: &str = "unikv cluster CA";
const ORGANIZATION: &str = "unikv";

/// Cluster TLS material: the CA certificate plus this process's leaf certificate and key.
/// Cheap to clone.
#[derive(Clone)]
pub struct ClusterTls {
    pub(crate) inner: Arc<Material>,
}

pub(crate) struct Material {
    pub(crate) ca_cert: CertificateDer<'static>,
    pub(crate) leaf_cert: CertificateDer<'static>,
    /// PKCS#8 DER of the leaf key (kept as bytes because key types are deliberately not `Clone`).
    pub(crate) leaf_key: Vec<u8>,
    pub(crate) common_name: String,
    /// Secret derived from the CA key; seeds stateless-reset keys that survive restarts.
    pub(crate) reset_seed: [u8; 32],
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("ClusterTls")
            .field("common_name", &self.inner.common_name)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Loads the cluster CA from `dir/ca.pem`, creating `dir` and the CA if absent, then issues
    /// this process a fresh in-memory ECDSA P-256 leaf signed by the CA, with subject alt name
    /// [`SERVER_NAME`] and `common_name` as its CN, usable as server and client certificate.
    ///
    /// Creation is race-safe across processes: the CA is written to a unique temporary file
    /// and hard-linked into place, so `ca.pem` is either absent or complete, and exactly one
    /// creator wins.
    pub fn load_or_create(dir: &Path, common_name: &str) -> Result<ClusterTls> {
        let (ca_cert, ca_key) = load_or_create_ca(dir)?;
        let mut reset_seed = [0u8; 32];
        reset_seed.copy_from_slice(
            ring::digest::digest(&ring::digest::SHA256, &ca_key.serialize_der()).as_ref(),
        );
        let issuer = Issuer::new(ca_params(), ca_key);

        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(tls)?;
        let leaf = leaf_params(common_name)?
            .signed_by(&leaf_key, &issuer)
            .map_err(tls)?;

        let material = Material {
            ca_cert,
            leaf_cert: leaf.der().clone(),
            leaf_key: leaf_key.serialize_der(),
            common_name: common_name.to_owned(),
            reset_seed,
        };
        material.self_check()?;
        Ok(ClusterTls {
            inner: Arc::new(material),
        })
    }

    /// DER of the cluster CA certificate (the only trusted root).
    pub fn ca_cert_der(&self) -> &[u8] {
        self.inner.ca_cert.as_ref()
    }

    /// The stateless-reset key of an endpoint bound at `local`: the same after a restart at the
    /// same address, and secret (derived from the CA key). A restarted node can therefore reset
    /// the connections peers still hold to its previous process, and they redial at once
    /// instead of waiting for the idle timeout.
    pub fn reset_key(&self, local: std::net::SocketAddr) -> ring::hmac::Key {
        let seed = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.inner.reset_seed);
        let tag = ring::hmac::sign(&seed, format!("unikv stateless reset {local}").as_bytes());
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, tag.as_ref())
    }

    /// The CN this process's leaf certificate was issued with.
    pub fn common_name(&self) -> &str {
        &self.inner.common_name
    }

    /// quinn server config: presents the leaf and requires a client certificate chaining to
    /// the CA. ALPN [`ALPN`].
    pub fn server_config(&self) -> Result<quinn::ServerConfig> {
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.inner.roots()?, provider.clone())
                .build()
                .map_err(tls)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.inner.leaf_cert.clone()], self.inner.key())
            .map_err(tls)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicServerConfig::try_from(config).map_err(tls)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(transport_config());
        Ok(server)
    }

    /// quinn client config: trusts only the CA and presents the leaf as client certificate.
    /// ALPN [`ALPN`].
    pub fn client_config(&self) -> Result<quinn::ClientConfig> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_root_certificates(self.inner.roots()?)
            .with_client_auth_cert(vec![self.inner.leaf_cert.clone()], self.inner.key())
            .map_err(tls)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(config).map_err(tls)?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(transport_config());
        Ok(client)
    }
}

impl Material {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.clone()))
    }

    fn roots(&self) -> Result<Arc<RootCertStore>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_cert.clone()).map_err(tls)?;
        Ok(Arc::new(roots))
    }

    /// Verifies the leaf against the CA exactly as peers will (as client and as server), so a
    /// mismatched or foreign `ca.pem` is reported here instead of as handshake failures.
    fn self_check(&self) -> Result<()> {
        let provider = provider();
        let now = UnixTime::now();
        WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(tls)?
            .verify_client_cert(&self.leaf_cert, &[], now)
            .map_err(|e| Error::Tls(format!("leaf does not verify against {CA_FILE}: {e}")))?;
        let name = ServerName::try_from(SERVER_NAME).map_err(tls)?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(self.roots()?, provider)
            .build()
            .map_err(tls)?
            .verify_server_cert(&self.leaf_cert, &[], &name, &[], now)
            .map_err(|e| Error::Tls(format!("leaf does not verify against {CA_FILE}: {e}")))?;
        Ok(())
    }
}

/// The ring provider, passed explicitly so no process-wide default provider is needed.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Transport parameters shared by both sides: many concurrent request streams per connection,
/// keep-alives well inside the idle timeout so idle cached connections survive, and windows
/// large enough for snapshot chunks.
/// A peer silent for this long is considered gone and its connection closed (keep-alives every
/// second keep healthy idle connections open).
const IDLE_TIMEOUT_MS: u32 = 5_000;

fn transport_config() -> Arc<TransportConfig> {
    const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
    const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(4096))
        .keep_alive_interval(Some(Duration::from_secs(1)))
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(IDLE_TIMEOUT_MS))))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW));
    Arc::new(t)
}

/// Parameters of the cluster CA. Also used to rebuild the issuer when loading an existing CA,
/// so they must stay stable: leaves name the CA by this subject.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
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

fn leaf_params(common_name: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned()]).map_err(tls)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
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

/// Returns the CA certificate and key from `dir/ca.pem`, creating them if the file is absent.
fn load_or_create_ca(dir: &Path) -> Result<(CertificateDer<'static>, KeyPair)> {
    fs::create_dir_all(dir)?;
    let path = dir.join(CA_FILE);
    match fs::read(&path) {
        Ok(pem) => return parse_ca(&pem, &path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(tls)?;
    let cert = ca_params().self_signed(&key).map_err(tls)?;
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());

    if crate::secrets::create_once(dir, CA_FILE, pem.as_bytes())? {
        tracing::info!(path = %path.display(), "created cluster CA");
        Ok((cert.der().clone(), key))
    } else {
        tracing::debug!(path = %path.display(), "cluster CA created concurrently; loading it");
        parse_ca(&fs::read(&path)?, &path)
    }
}

fn parse_ca(pem: &[u8], path: &Path) -> Result<(CertificateDer<'static>, KeyPair)> {
    let cert = CertificateDer::from_pem_slice(pem)
        .map_err(|e| Error::Tls(format!("{}: no CA certificate: {e}", path.display())))?;
    let key = PrivatePkcs8KeyDer::from_pem_slice(pem)
        .map_err(|e| Error::Tls(format!("{}: no PKCS#8 CA key: {e}", path.display())))?;
    let key = KeyPair::try_from(&key)
        .map_err(|e| Error::Tls(format!("{}: bad CA key: {e}", path.display())))?;
    Ok((cert, key))
}

fn tls(e: impl fmt::Display) -> Error {
    Error::Tls(e.to_string())
}
