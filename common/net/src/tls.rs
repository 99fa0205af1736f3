//! The TLS configuration of a process: the trusted CA certificates, this process's own
//! certificate and key (see `pki` for where they come from), and the quinn client and server
//! configs built from them.
//!
//! Peers are addressed by IP and port, which change as nodes move, so identity is not a host
//! name: a peer is trusted because its certificate is signed by the cluster CA, and what it may
//! do follows from the role its certificate names (`identity`). Both sides of every connection
//! verify each other (mutual TLS) against the CA as their only root, and a client accepts
//! only a node's certificate from a server.

use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::error::{Error, Result};
use crate::identity::{self, Identity, NODE_NAME};
use crate::pki::{self, tls, Ca, CA_FILE, CERT_FILE, KEY_FILE};

/// The ALPN protocol spoken on every connection.
pub const ALPN: &[u8] = b"unikv/1";

/// TLS material of one process. Cheap to clone.
#[derive(Clone)]
pub struct ClusterTls {
    pub(crate) inner: Arc<Material>,
}

pub(crate) struct Material {
    /// The trusted CA certificates (more than one while a CA is being rotated).
    pub(crate) roots: Vec<CertificateDer<'static>>,
    pub(crate) leaf_cert: CertificateDer<'static>,
    /// PKCS#8 DER of the leaf key (kept as bytes because key types are deliberately not `Clone`).
    pub(crate) leaf_key: Vec<u8>,
    pub(crate) identity: Identity,
    /// Seeds stateless-reset keys that survive restarts: derived from the certificate's key
    /// (which persists), or in local development from the CA key.
    pub(crate) reset_seed: [u8; 32],
    /// Running on a local development CA rather than issued certificates.
    pub(crate) development: bool,
}

impl fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("ClusterTls")
            .field("identity", &self.inner.identity)
            .field("development", &self.inner.development)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// What a process does at start: the certificates `unikv-node certs` put in `dir` when
    /// `dir/cert.pem` exists ([`ClusterTls::certificates`]), otherwise the local development
    /// CA ([`ClusterTls::development`]).
    pub fn load(dir: &Path, identity: &Identity) -> Result<ClusterTls> {
        if dir.join(CERT_FILE).exists() {
            ClusterTls::certificates(dir, identity)
        } else {
            ClusterTls::development(dir, identity)
        }
    }

    /// Issued certificates: the CA certificate(s) from `dir/ca.pem`, this process's own from
    /// `dir/cert.pem` and `dir/key.pem`. Never reads a CA key: a `ca.pem` holding one is
    /// refused. A node's certificate must name this very node; a router's must be a router's.
    pub fn certificates(dir: &Path, identity: &Identity) -> Result<ClusterTls> {
        let ca_path = dir.join(CA_FILE);
        let ca_pem =
            fs::read(&ca_path).map_err(|e| Error::Tls(format!("{}: {e}", ca_path.display())))?;
        if pki::has_private_key(&ca_pem) {
            return Err(Error::Tls(format!(
                "{} holds the CA's private key: a process's directory must hold only the CA certificate, as `unikv-node certs` writes it; keep the CA key offline",
                ca_path.display()
            )));
        }
        let roots = pki::certificates(&ca_pem, &ca_path)?;
        let cert_path = dir.join(CERT_FILE);
        let leaf_cert = pki::certificates(&fs::read(&cert_path)?, &cert_path)?.remove(0);
        let key_path = dir.join(KEY_FILE);
        let key_pem =
            fs::read(&key_path).map_err(|e| Error::Tls(format!("{}: {e}", key_path.display())))?;
        let leaf_key = PrivatePkcs8KeyDer::from_pem_slice(&key_pem)
            .map_err(|e| Error::Tls(format!("{}: no PKCS#8 key: {e}", key_path.display())))?
            .secret_pkcs8_der()
            .to_vec();
        let issued_for = identity::role_of(&leaf_cert);
        let fits = match identity {
            Identity::Node { .. } => identity::names(&leaf_cert, &identity.own_name()),
            Identity::Router { .. } => issued_for == Some(identity.role()),
        };
        if !fits {
            let what = issued_for.map_or("no unikv role".to_owned(), |r| format!("a {r}'s"));
            return Err(Error::Tls(format!(
                "{} is not a certificate for {identity} (it is {what}): issue one with `unikv-node certs {}`",
                cert_path.display(),
                match identity {
                    Identity::Node { shard, node } =>
                        format!("node --shard_id {shard} --node_id {node} …"),
                    Identity::Router { .. } => "router …".to_owned(),
                }
            )));
        }
        let material = Material {
            reset_seed: digest(&leaf_key),
            roots,
            leaf_cert,
            leaf_key,
            identity: identity.clone(),
            development: false,
        };
        material.self_check(&cert_path)?;
        Ok(ClusterTls {
            inner: Arc::new(material),
        })
    }

    /// Local development: the CA of `dir/ca.pem` (certificate and key, created by the first
    /// process if absent), and a fresh in-memory certificate for `identity` signed by it.
    /// Whoever can read `dir` can join as any role; [`ClusterTls::check_exposure`] keeps it
    /// to loopback.
    pub fn development(dir: &Path, identity: &Identity) -> Result<ClusterTls> {
        let ca = Ca::development(dir)?;
        let leaf = ca.issue(identity)?;
        let material = Material {
            roots: vec![ca.cert.clone()],
            leaf_cert: leaf.der,
            leaf_key: leaf.key.serialize_der(),
            identity: identity.clone(),
            reset_seed: digest(&ca.key_der()),
            development: true,
        };
        material.self_check(&dir.join(CA_FILE))?;
        Ok(ClusterTls {
            inner: Arc::new(material),
        })
    }

    /// Whether this process runs on the local development CA.
    pub fn is_development(&self) -> bool {
        self.inner.development
    }

    /// Refuses the local development CA when any of `listening` is beyond loopback: there,
    /// anyone who obtained the directory could join as a node.
    pub fn check_exposure(&self, what: &str, listening: &[SocketAddr]) -> Result<()> {
        let exposed: Vec<String> = listening
            .iter()
            .filter(|a| !a.ip().is_loopback())
            .map(ToString::to_string)
            .collect();
        if !self.is_development() || exposed.is_empty() {
            return Ok(());
        }
        Err(Error::Tls(format!(
            "this {what} would listen on {} beyond loopback with the local development CA, which lets anyone holding its directory join as a node: issue certificates with `unikv-node certs` (see docs/ARCHITECTURE.md, Security) and give their directory as --tls_dir",
            exposed.join(", ")
        )))
    }

    /// Who this process's certificate says it is.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// DER of the first trusted CA certificate.
    pub fn ca_cert_der(&self) -> &[u8] {
        self.inner.roots[0].as_ref()
    }

    /// The stateless-reset key of an endpoint bound at `local`: the same after a restart at the
    /// same address, and secret (derived from the certificate's key, or the development CA's). A restarted node can therefore reset
    /// the connections peers still hold to its previous process, and they redial at once
    /// instead of waiting for the idle timeout.
    pub fn reset_key(&self, local: std::net::SocketAddr) -> ring::hmac::Key {
        let seed = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.inner.reset_seed);
        let tag = ring::hmac::sign(&seed, format!("unikv stateless reset {local}").as_bytes());
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, tag.as_ref())
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
        for root in &self.roots {
            roots.add(root.clone()).map_err(tls)?;
        }
        Ok(Arc::new(roots))
    }

    /// Verifies the leaf against the CA exactly as peers will (as client, and as server for a
    /// node), so a certificate from another CA is reported at start instead of as handshake
    /// failures.
    fn self_check(&self, path: &Path) -> Result<()> {
        let provider = provider();
        let now = UnixTime::now();
        WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(tls)?
            .verify_client_cert(&self.leaf_cert, &[], now)
            .map_err(|e| {
                Error::Tls(format!(
                    "{}: this process's certificate does not verify against the CA: {e}",
                    path.display()
                ))
            })?;
        if self.identity.role() != identity::CertRole::Node {
            return Ok(());
        }
        let name = ServerName::try_from(NODE_NAME).map_err(tls)?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(self.roots()?, provider)
            .build()
            .map_err(tls)?
            .verify_server_cert(&self.leaf_cert, &[], &name, &[], now)
            .map_err(|e| {
                Error::Tls(format!(
                    "{}: this node's certificate does not verify against the CA: {e}",
                    path.display()
                ))
            })?;
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

fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    seed
}
