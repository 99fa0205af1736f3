//! Calling the leader of another (or this) shard: find it in the gossip view, follow
//! `NotLeader` hints, try other members, retry until a deadline.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use unikv_types::{KvError, ShardId};

use crate::service::Node;

/// Sends `req` to the leader of `shard` and returns its answer. Retries on `NotLeader`,
/// `Unavailable` and transport errors until `timeout`; other errors are returned as they are.
pub async fn call_shard<Req, Resp>(
    node: &Node,
    shard: ShardId,
    kind: u8,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, KvError>
where
    Req: Serialize,
    Resp: DeserializeOwned,
{
    let deadline = Instant::now() + timeout;
    let mut hint: Option<String> = None;
    let mut attempt = 0usize;
    loop {
        let view = node.gossip.view();
        let sv = view.shard(shard);
        let target = hint.take().or_else(|| {
            let sv = sv?;
            match (&sv.leader, attempt) {
                (Some(l), 0) => Some(l.raft.clone()),
                _ => {
                    let live: Vec<_> = sv.members.iter().filter(|m| m.live).collect();
                    let pool = if live.is_empty() {
                        sv.members.iter().collect()
                    } else {
                        live
                    };
                    pool.get(attempt % pool.len().max(1))
                        .map(|m| m.raft.clone())
                }
            }
        });
        attempt += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(KvError::Unavailable {
                shard,
                reason: "no leader of the shard answered in time".into(),
            });
        }
        let Some(addr) = target else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let per_try = remaining.min(Duration::from_secs(3));
        match node
            .transport
            .call::<_, Result<Resp, KvError>>(&addr, kind, req, per_try)
            .await
        {
            Ok(Ok(resp)) => return Ok(resp),
            Ok(Err(KvError::NotLeader { leader, .. })) => {
                hint = leader.map(|l| l.raft).filter(|a| *a != addr);
                if hint.is_none() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok(Err(KvError::Unavailable { .. })) | Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(other)) => return Err(other),
        }
    }
}
