//! The source side of a shard key's move, run by the source shard's leader: `Out` (freeze) →
//! send the unit's data and dedup table to the target leader, which commits `In` → `Done`
//! (delete here, forwarding note) → the catalog commit that puts the target in this shard's
//! place in the key's shard list → nudge the target to `Activate`. If the target refuses, or
//! has not taken it within `--handoff_timeout_ms`, `Abort` unfreezes it here instead.

use std::time::{Duration, Instant};

use unikv_storage::{Command, UnitCommand};
use unikv_types::catalog::{CatalogChange, CatalogOp};
use unikv_types::{rpc_kind, Epoch, Keyspace, KvError, ShardId};

use super::messages::{UnitActivate, UnitIn};
use crate::peer::{call_shard, deliver, Delivery};
use crate::service::Node;

/// The task-set tag of a shard key's hand-off.
pub(super) const MOVING: u8 = 3;

impl Node {
    /// Moves this shard's part of shard key `ks` to shard `to` (or resumes the move already
    /// committed, wherever it goes) and waits until it is done or refused.
    pub(crate) async fn move_shard_key(&self, ks: Keyspace, to: ShardId) -> Result<Epoch, KvError> {
        if !self.claim_task(MOVING, u64::from(ks.0)) {
            return Err(KvError::Refused {
                status: 409,
                code: "shard_key_moving".into(),
                message: format!("shard key {ks} is already moving"),
            });
        }
        let res = self.hand_off_unit(ks, to).await;
        self.release_task(MOVING, u64::from(ks.0));
        res
    }

    async fn hand_off_unit(&self, ks: Keyspace, to: ShardId) -> Result<Epoch, KvError> {
        let d = self.store.descriptor();
        let (to, epoch) = match d.unit_moves.outgoing.get(&ks) {
            Some(h) => (h.target, h.epoch),
            None => {
                let epoch = Epoch(d.unit_moves.epoch(ks).0 + 1);
                self.propose(Command::Unit(UnitCommand::Out {
                    keyspace: ks,
                    to,
                    epoch,
                }))
                .await?;
                (to, epoch)
            }
        };
        let frozen_at = Instant::now();
        let Some(export) = self
            .store
            .export_unit(ks)
            .map_err(|e| KvError::Internal(e.to_string()))?
        else {
            return Err(self.unavailable(format!("shard key {ks} left this shard meanwhile")));
        };
        let kv: Vec<(String, String)> = export
            .collections_kv
            .into_iter()
            .filter(|(k, _, _)| *k == ks)
            .map(|(_, k, v)| (k, v))
            .collect();
        let bytes: u64 = kv.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        let keys = kv.len();
        let msg = UnitIn {
            keyspace: ks,
            from: self.shard(),
            epoch,
            kv,
            dedup: export.dedup,
            dedup_horizon_ms: export.dedup_horizon_ms,
        };
        let give_up_at = Instant::now() + self.config.handoff_timeout();
        let refusal = match deliver(self, to, rpc_kind::UNIT_IN, &msg, give_up_at).await? {
            Delivery::Taken(()) => None,
            Delivery::Refused { message, .. } => Some(KvError::BadRequest {
                code: "move_refused".into(),
                message,
            }),
            Delivery::TimedOut(e) => Some(KvError::Unavailable {
                shard: to,
                reason: format!(
                    "shard key {ks}: shard {to} did not take it within {} ms ({e}); the move was aborted",
                    self.config.handoff_timeout_ms
                ),
            }),
        };
        if let Some(e) = refusal {
            tracing::warn!(shard = %self.shard(), keyspace = %ks, to = %to, error = %e, "shard key move aborted");
            self.propose(Command::Unit(UnitCommand::Abort {
                keyspace: ks,
                epoch,
            }))
            .await?;
            return Err(e);
        }
        self.propose(Command::Unit(UnitCommand::Done {
            keyspace: ks,
            epoch,
        }))
        .await?;
        // Retried by the drain loop if it does not land now.
        if let Err(e) = self.record_shard_key_move(ks, to).await {
            tracing::warn!(keyspace = %ks, to = %to, error = %e, "shard key moved; the catalog change is retried");
        }
        let nudge = UnitActivate {
            keyspace: ks,
            epoch,
        };
        let activated = call_shard::<_, ()>(
            self,
            to,
            rpc_kind::UNIT_ACTIVATE,
            &nudge,
            Duration::from_secs(2),
        )
        .await;
        tracing::info!(shard = %self.shard(), keyspace = %ks, to = %to, %epoch, keys, bytes,
            frozen_ms = frozen_at.elapsed().as_millis() as u64, activated = activated.is_ok(), "shard key handed off");
        Ok(epoch)
    }

    /// After `Done`: the catalog puts `to` in this shard's place in the key's shard list
    /// (idempotent; nothing to do if the shard key was deleted meanwhile).
    pub(super) async fn record_shard_key_move(
        &self,
        ks: Keyspace,
        to: ShardId,
    ) -> Result<(), KvError> {
        let cat = self.read_catalog().await?;
        let Some((collection, key, _)) = cat.shard_key_of(ks) else {
            return Ok(());
        };
        let op = CatalogOp {
            change: CatalogChange::MoveShardKey {
                collection,
                key,
                from: self.shard(),
                to,
            },
            expected_version: None,
        };
        self.change_catalog(op).await.map(|_| ())
    }
}
