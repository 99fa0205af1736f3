//! `unikv-node certs`: the cluster's certificates, issued where the CA key is kept.
//!
//! The first call creates the CA (`ca.pem` + `ca.key`) and the gossip key in `--ca_dir`; each
//! call then writes one process's directory (`--out`, given to that process as `--tls_dir`):
//! the CA certificate, the process's own certificate and key, the gossip key — never the CA
//! key. Running it again for the same process replaces its certificate (rotation).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use unikv_net::{issue_certificates, Identity};

use crate::error::{Error, Result};

/// Issues a certificate for one node or router of the cluster.
#[derive(Debug, Parser)]
#[command(
    name = "unikv-node certs",
    about = "Issue a node's or a router's certificate from the cluster CA (created on first use)",
    after_help = "Examples:\n  unikv-node certs --ca_dir ca --out certs/node-1-1 node --shard_id 1 --node_id 1\n  unikv-node certs --ca_dir ca --out certs/router router\nThen start the process with --tls_dir <out>; keep --ca_dir offline (it holds the CA key)."
)]
pub struct CertsCommand {
    /// The CA's directory: created (0700) with the CA and the gossip key on first use. Keep it
    /// off the machines that run the cluster.
    #[arg(long = "ca_dir", alias = "ca-dir", global = true, default_value = "ca")]
    pub ca_dir: PathBuf,
    /// The process's certificate directory to write (its `--tls_dir`).
    #[arg(long = "out", global = true)]
    pub out: Option<PathBuf>,
    #[command(subcommand)]
    pub what: CertFor,
}

#[derive(Debug, Subcommand)]
pub enum CertFor {
    /// A node: may serve, and send every request (Raft, moves, membership, KV).
    Node {
        #[arg(long = "shard_id", alias = "shard-id")]
        shard_id: u64,
        #[arg(long = "node_id", alias = "node-id")]
        node_id: u64,
    },
    /// A router: may send client requests (KV, KV_BATCH, READ_INDEX) only.
    Router {
        /// A name for the certificate (letters, digits, '-').
        #[arg(long, default_value = "router")]
        name: String,
    },
}

impl CertsCommand {
    /// Issues the certificate; returns what to tell the user.
    pub fn run(&self) -> Result<String> {
        let identity = match &self.what {
            CertFor::Node { shard_id, node_id } => {
                if *shard_id == 0 || *node_id == 0 {
                    return Err(Error::Config("shard and node ids start at 1".into()));
                }
                Identity::node(*shard_id, *node_id)
            }
            CertFor::Router { name } => Identity::router(name)?,
        };
        let out = self.out.clone().ok_or_else(|| {
            Error::Config("--out: where to write the certificate directory".into())
        })?;
        let issued = issue_certificates(&self.ca_dir, &out, &identity)?;
        Ok(format!(
            "{issued}: start it with --tls_dir {} (the CA key stays in {})",
            out.display(),
            self.ca_dir.display()
        ))
    }
}
