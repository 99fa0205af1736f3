//! Who a certificate belongs to: its role (a node or a router) and, for nodes, which shard and
//! node. Both are DNS names in the certificate's subject alternative names, so the same
//! standard check that TLS does for host names tells them apart (no certificate parser needed):
//! every node certificate names [`NODE_NAME`], every router certificate [`ROUTER_NAME`], and
//! each also names itself (`n2.s1.node.unikv.cluster`, `<name>.router.unikv.cluster`).
//!
//! Clients dial every peer as [`NODE_NAME`], so only a node's certificate can serve; servers
//! read the role of the client's certificate after the handshake ([`peer_role`]) and let the
//! [`crate::Handler`] decide which request kinds that role may send.

use std::fmt;

use quinn::Connection;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::error::{Error, Result};

/// The name every node certificate carries and every client asks a server for.
pub const NODE_NAME: &str = "node.unikv.cluster";
/// The name every router certificate carries.
pub const ROUTER_NAME: &str = "router.unikv.cluster";

/// What a certificate allows its holder to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertRole {
    /// A shard's node: may send every request kind, and serve.
    Node,
    /// A router (or another client-facing tool): client requests only.
    Router,
}

impl CertRole {
    pub fn as_str(self) -> &'static str {
        match self {
            CertRole::Node => "node",
            CertRole::Router => "router",
        }
    }

    fn dns_name(self) -> &'static str {
        match self {
            CertRole::Node => NODE_NAME,
            CertRole::Router => ROUTER_NAME,
        }
    }
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The process a certificate is issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Node {
        shard: u64,
        node: u64,
    },
    /// `name`: a DNS label (letters, digits, '-'), e.g. `router` or `router-3000`.
    Router {
        name: String,
    },
}

impl Identity {
    pub fn node(shard: u64, node: u64) -> Identity {
        Identity::Node { shard, node }
    }

    /// A router identity; the name must be a DNS label.
    pub fn router(name: &str) -> Result<Identity> {
        let label_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !label_ok {
            return Err(Error::Tls(format!(
                "router name {name:?}: use 1-63 lowercase letters, digits or '-' (not at either end)"
            )));
        }
        Ok(Identity::Router {
            name: name.to_owned(),
        })
    }

    pub fn role(&self) -> CertRole {
        match self {
            Identity::Node { .. } => CertRole::Node,
            Identity::Router { .. } => CertRole::Router,
        }
    }

    /// The certificate's common name (for logs and `openssl x509 -text`).
    pub fn common_name(&self) -> String {
        match self {
            Identity::Node { shard, node } => format!("node-{shard}-{node}"),
            Identity::Router { name } => format!("router {name}"),
        }
    }

    /// The DNS name that is this identity's own.
    pub(crate) fn own_name(&self) -> String {
        match self {
            Identity::Node { shard, node } => format!("n{node}.s{shard}.{NODE_NAME}"),
            Identity::Router { name } => format!("{name}.{ROUTER_NAME}"),
        }
    }

    /// The subject alternative names of this identity's certificate: its role, then itself.
    pub(crate) fn alt_names(&self) -> Vec<String> {
        vec![self.role().dns_name().to_owned(), self.own_name()]
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Node { shard, node } => write!(f, "node {shard}/{node}"),
            Identity::Router { name } => write!(f, "router {name}"),
        }
    }
}

/// Whether `cert` names `name` among its subject alternative names.
pub(crate) fn names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(name) = ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .and_then(|c| c.verify_is_valid_for_subject_name(&name))
        .is_ok()
}

/// The role a (CA-verified) certificate carries, if any.
pub(crate) fn role_of(cert: &CertificateDer<'_>) -> Option<CertRole> {
    [CertRole::Node, CertRole::Router]
        .into_iter()
        .find(|role| names(cert, role.dns_name()))
}

/// The role of the certificate the peer of `conn` presented (verified against the cluster CA
/// during the handshake).
pub(crate) fn peer_role(conn: &Connection) -> Option<CertRole> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    role_of(chain.first()?)
}
