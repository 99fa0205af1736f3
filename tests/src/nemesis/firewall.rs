//! Network partitions on loopback with iptables: every rule lives in one chain of our own
//! (`UNIKV_NEM_<pid>_<n>`), jumped to from INPUT, so healing is "flush the chain" and cleanup is
//! "unhook and delete the chain" — nothing outside it is ever touched, even when a run fails
//! (the chain is removed on drop).
//!
//! QUIC (Raft and KV RPCs) and gossip are UDP, and each node sends and receives on its own
//! ports, so dropping UDP packets to or from a node's ports cuts exactly that node's links.

use std::process::Command;

use anyhow::{bail, Context};

pub struct Firewall {
    chain: String,
}

/// Which traffic of a node is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Nothing in, nothing out.
    Both,
    /// The node receives nothing (it still sends).
    Inbound,
    /// Nothing the node sends arrives.
    Outbound,
}

fn iptables(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .output()
        .context("running iptables (scripts/setup.sh installs it)")?;
    if !out.status.success() {
        bail!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Firewall {
    /// Creates the chain and hooks it into INPUT.
    pub fn new() -> anyhow::Result<Firewall> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let chain = format!("UNIKV_NEM_{}_{n}", std::process::id());
        // Chains left by runs that were killed before their destructors ran (kill -9 of the
        // campaign): their pid is gone, so nobody else owns them.
        Firewall::remove_stale();
        let _ = Firewall::remove(&chain);
        iptables(&["-N", &chain])?;
        iptables(&["-I", "INPUT", "-j", &chain])?;
        Ok(Firewall { chain })
    }

    /// Appends a rule dropping loopback UDP packets that match `filter` (port matches).
    fn drop_udp(&self, filter: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["-A", &self.chain, "-i", "lo", "-p", "udp"];
        args.extend_from_slice(filter);
        args.extend_from_slice(&["-j", "DROP"]);
        iptables(&args)
    }

    /// Drops `cut` traffic of the node owning `ports` (its UDP ports).
    pub fn isolate(&self, ports: &[u16], cut: Cut) -> anyhow::Result<()> {
        for p in ports {
            let p = p.to_string();
            if matches!(cut, Cut::Both | Cut::Inbound) {
                self.drop_udp(&["--dport", &p])?;
            }
            if matches!(cut, Cut::Both | Cut::Outbound) {
                self.drop_udp(&["--sport", &p])?;
            }
        }
        Ok(())
    }

    /// Drops every UDP packet between the node owning `a` and the node owning `b` (both ways);
    /// each keeps its links to everyone else. Each node sends from the ports it listens on
    /// (one QUIC endpoint, one gossip socket), so port pairs name the link exactly.
    pub fn cut_link(&self, a: &[u16], b: &[u16]) -> anyhow::Result<()> {
        for pa in a {
            for pb in b {
                for (from, to) in [(pa, pb), (pb, pa)] {
                    self.drop_udp(&["--sport", &from.to_string(), "--dport", &to.to_string()])?;
                }
            }
        }
        Ok(())
    }

    /// Removes every rule (all partitions heal).
    pub fn heal(&self) -> anyhow::Result<()> {
        iptables(&["-F", &self.chain])
    }

    /// Removes every `UNIKV_NEM_<pid>_<n>` chain whose process is gone (or a zombie).
    fn remove_stale() {
        let Ok(out) = Command::new("iptables").args(["-w", "5", "-S"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(chain) = line.strip_prefix("-N ") else {
                continue;
            };
            let pid = chain
                .strip_prefix("UNIKV_NEM_")
                .and_then(|rest| rest.split('_').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !crate::unified::pid_alive(pid) {
                    eprintln!("[nemesis] removing stale iptables chain {chain}");
                    let _ = Firewall::remove(chain);
                }
            }
        }
    }

    fn remove(chain: &str) -> anyhow::Result<()> {
        let unhook = iptables(&["-D", "INPUT", "-j", chain]);
        iptables(&["-F", chain])?;
        iptables(&["-X", chain])?;
        unhook
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if let Err(e) = Firewall::remove(&self.chain) {
            eprintln!("[nemesis] removing iptables chain {}: {e:#}", self.chain);
        }
    }
}
