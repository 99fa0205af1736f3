//! Registry and rebalancing administration: `/addshard`, `/removeshard`, `/moveslot`,
//! `/shard/tags`, `/stats`, `/rebalance/status`, and the `SHARD_ADMIN` RPC that carries a change
//! to the leader of the shard it concerns. Unsafe requests are refused with a 4xx naming why.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use unikv_http::{ok, ApiError, Params};
use unikv_storage::{Command, RegistryCommand};
use unikv_types::{rpc_kind, KvError, ShardId, ShardState, Slot, SLOT_COUNT};

use super::handoff;
use super::messages::ShardAdmin;
use super::planner::Shares;
use super::rebalancer::{lock, Rebalancer};
use crate::peer::call_shard;
use crate::service::Node;

const MAX_BODY: usize = 64 * 1024;
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Executes a registry change or explicit move on this node, which must lead its shard.
pub async fn handle_shard_admin(rb: &Rebalancer, req: ShardAdmin) -> Result<Value, KvError> {
    let node = &rb.node;
    if !node.is_leader() {
        return Err(KvError::NotLeader {
            shard: node.shard(),
            leader: node.leader(),
        });
    }
    match req {
        ShardAdmin::SetState(state) => {
            node.propose(Command::Registry(RegistryCommand::SetState { state }))
                .await?;
            Ok(json!({"shard": node.shard().0, "state": state.as_str()}))
        }
        ShardAdmin::SetTags(tags) => {
            node.propose(Command::Registry(RegistryCommand::SetTags { tags }))
                .await?;
            Ok(json!({"shard": node.shard().0, "tags": node.store.descriptor().tags}))
        }
        ShardAdmin::Retire => {
            node.propose(Command::Registry(RegistryCommand::Retire))
                .await?;
            let state = node.store.descriptor().state;
            Ok(json!({"shard": node.shard().0, "state": state.as_str(), "forget": true}))
        }
        ShardAdmin::MoveSlot { slot, to } => {
            let epoch = handoff::move_now(rb, slot, to).await?;
            Ok(json!({"slot": slot, "from": node.shard().0, "to": to.0, "epoch": epoch.0}))
        }
    }
}

/// Runs `req` on the leader of `shard` (this node if it is that leader).
async fn on_shard(rb: &Rebalancer, shard: ShardId, req: ShardAdmin) -> Result<Value, ApiError> {
    let node = &rb.node;
    if shard == node.shard() && node.is_leader() {
        return Ok(handle_shard_admin(rb, req).await?);
    }
    Ok(call_shard::<_, Value>(node, shard, rpc_kind::SHARD_ADMIN, &req, ADMIN_TIMEOUT).await?)
}

/// States of all shards: gossip, with this shard from its own descriptor.
fn states(node: &Node) -> Vec<(ShardId, ShardState)> {
    let view = node.gossip.view();
    let d = node.store.descriptor();
    let mut out: Vec<(ShardId, ShardState)> = view
        .shards
        .values()
        .filter(|s| s.id != node.shard())
        .map(|s| (s.id, s.state))
        .collect();
    out.push((node.shard(), d.state));
    out.sort_by_key(|(id, _)| *id);
    out
}

pub async fn addshard(
    State(rb): State<Arc<Rebalancer>>,
    req: Request,
) -> Result<Response, ApiError> {
    let node = &rb.node;
    let p = Params::from_request(req, MAX_BODY).await?;
    let shard = p.shard_id("shardID")?;
    let addr = p.required("shardAddress")?.trim().to_string();
    if states(node)
        .iter()
        .any(|(id, st)| *id == shard && matches!(st, ShardState::Active | ShardState::Draining))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "shard_exists",
            format!("shard {shard} is already part of the cluster"),
        ));
    }
    // A removed shard's nodes may still gossip (the views leave the shard out).
    let removed = node.gossip.view().members.iter().any(|m| {
        m.node
            .as_ref()
            .is_some_and(|n| n.shard == shard && n.state == ShardState::Removed)
    }) || (shard == node.shard()
        && node.store.descriptor().state == ShardState::Removed);
    if removed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "shard_removed",
            format!("shard {shard} was removed from the cluster for good; to add a shard with this id, start its nodes with new data dirs"),
        ));
    }
    // The address is never contacted over HTTP (a node must not fetch what a caller names):
    // the node answering for it is found in this cluster's gossip, then asked who it is over
    // the cluster's own mutual-TLS QUIC (HELLO).
    let (member_shard, raft) = gossip_member_soon(node, &addr).await?;
    if member_shard != shard {
        return Err(ApiError::bad_request(
            "wrong_shard",
            format!("the node at {addr} belongs to shard {member_shard}, not {shard}"),
        ));
    }
    let hello = node
        .transport
        .call::<_, crate::service::Hello>(&raft, rpc_kind::HELLO, &(), ADMIN_TIMEOUT)
        .await
        .map_err(|e| {
            ApiError::bad_request(
                "unreachable",
                format!("the node at {addr} does not answer over the cluster's QUIC ({raft}): {e}"),
            )
        })?;
    if hello.shard != shard {
        return Err(ApiError::bad_request(
            "wrong_shard",
            format!(
                "the node at {addr} says it belongs to shard {}, not {shard}",
                hello.shard
            ),
        ));
    }
    let res = on_shard(&rb, shard, ShardAdmin::SetState(ShardState::Active)).await?;
    tracing::info!(shard = %shard, %addr, "shard added");
    Ok(ok(
        json!({"ok": true, "shard": shard.0, "address": addr, "result": res}),
    ))
}

/// How long `/addshard` waits for gossip to bring news of a node it does not know yet (the
/// nodes of a shard just started reach every member's view within a few gossip rounds).
const LEARN_MEMBER: Duration = Duration::from_secs(5);

/// [`gossip_member`], waiting up to [`LEARN_MEMBER`] for the view to learn the node.
async fn gossip_member_soon(node: &Node, addr: &str) -> Result<(ShardId, String), ApiError> {
    let deadline = tokio::time::Instant::now() + LEARN_MEMBER;
    let mut views = node.gossip.watch();
    loop {
        match gossip_member(node, addr).await {
            Err(e) if e.code == "unknown_address" => {
                match tokio::time::timeout_at(deadline, views.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => return Err(e),
                }
            }
            other => return other,
        }
    }
}

/// The shard and QUIC address of the gossip member whose HTTP address is `addr` (compared
/// as resolved socket addresses, so `localhost:8041` finds `127.0.0.1:8041`).
async fn gossip_member(node: &Node, addr: &str) -> Result<(ShardId, String), ApiError> {
    let resolve = |a: &str| {
        let a = a.to_string();
        async move {
            tokio::net::lookup_host(a)
                .await
                .map(|it| it.collect::<Vec<std::net::SocketAddr>>())
                .unwrap_or_default()
        }
    };
    let wanted = resolve(addr).await;
    if wanted.is_empty() {
        return Err(ApiError::bad_request(
            "bad_address",
            format!("shardAddress {addr:?} is not host:port"),
        ));
    }
    // Every node this one knows: its own shard's Raft members, and every shard's gossip
    // members (a single shard's nodes need not gossip with each other).
    let mut known: Vec<(ShardId, String, String)> = node
        .raft_members()
        .into_iter()
        .map(|a| (node.shard(), a.http, a.raft))
        .collect();
    let view = node.gossip.view();
    for s in view.shards.values() {
        known.extend(
            s.members
                .iter()
                .map(|m| (s.id, m.http.clone(), m.raft.clone())),
        );
    }
    for (shard, http, raft) in known {
        if http == addr || resolve(&http).await.iter().any(|a| wanted.contains(a)) {
            return Ok((shard, raft));
        }
    }
    Err(ApiError::bad_request(
        "unknown_address",
        format!(
            "no node of this cluster has the HTTP address {addr}: start the new shard's nodes with --peer_shards naming this cluster, wait until /config lists them, then add the shard"
        ),
    ))
}

pub async fn removeshard(
    State(rb): State<Arc<Rebalancer>>,
    req: Request,
) -> Result<Response, ApiError> {
    let node = &rb.node;
    let p = Params::from_request(req, MAX_BODY).await?;
    let shard = p.shard_id("shardID")?;
    let forget = p.flag("forget")?;
    let all = states(node);
    let Some((_, state)) = all.iter().find(|(id, _)| *id == shard) else {
        return Err(unknown_shard(shard));
    };
    match state {
        ShardState::Draining | ShardState::Inactive if forget => {
            let res = on_shard(&rb, shard, ShardAdmin::Retire).await?;
            return Ok(ok(json!({"ok": true, "shard": shard.0, "result": res})));
        }
        ShardState::Draining | ShardState::Inactive | ShardState::Removed => {
            return Ok(ok(
                json!({"ok": true, "shard": shard.0, "state": state.as_str(), "already": true}),
            ));
        }
        _ => {}
    }
    let others_active = all
        .iter()
        .filter(|(id, st)| *id != shard && *st == ShardState::Active)
        .count();
    if others_active == 0 {
        return Err(ApiError::bad_request(
            "last_active_shard",
            format!("shard {shard} is the last active shard; its slots would have nowhere to go"),
        ));
    }
    // Shard keys placed on it move to an active shard they are not on yet: there must be one.
    let active: Vec<ShardId> = all
        .iter()
        .filter(|(id, st)| *id != shard && *st == ShardState::Active)
        .map(|(id, _)| *id)
        .collect();
    let stuck: Vec<String> = node
        .read_catalog()
        .await?
        .shard_keys_on(shard)
        .into_iter()
        .filter(|(_, _, on)| active.iter().all(|a| on.contains(a)))
        .map(|(c, k, _)| format!("{c}/{k}"))
        .collect();
    if !stuck.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "holds_shard_keys",
            format!(
                "shard {shard} holds shard keys that are on every other active shard already ({}): add a shard first, or delete them",
                stuck.join(", ")
            ),
        ));
    }
    let change = if forget {
        ShardAdmin::Retire
    } else {
        ShardAdmin::SetState(ShardState::Draining)
    };
    let res = on_shard(&rb, shard, change).await?;
    tracing::info!(shard = %shard, forget, "shard draining");
    Ok(ok(
        json!({"ok": true, "shard": shard.0, "state": "draining", "forget": forget, "result": res}),
    ))
}

fn unknown_shard(shard: ShardId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_shard",
        format!("no shard {shard} in the cluster"),
    )
}

/// `DELETE /shards/{id}`: unregisters a drained shard for good (seed 000's registry
/// removal). Refused while it is active or draining (409 `shard_active`) or holds anything
/// (409 `shard_not_empty`); the check and the change are one commit in its own Raft log, so
/// nothing can arrive in between. Its nodes must be running to commit it; afterwards every
/// view leaves the shard out and its nodes can be stopped.
pub async fn forget_shard(
    State(rb): State<Arc<Rebalancer>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let shard = match id.parse::<u64>() {
        Ok(n) if n >= 1 => ShardId(n),
        _ => {
            return Err(ApiError::bad_request(
                "bad_request",
                format!("{id:?} is not a shard id (a number, at least 1)"),
            ))
        }
    };
    let all = states(&rb.node);
    match all.iter().find(|(id, _)| *id == shard) {
        None => Err(unknown_shard(shard)),
        Some((_, ShardState::Removed)) => Ok(ok(
            json!({"ok": true, "shard": shard.0, "state": "removed", "already": true}),
        )),
        Some(_) => {
            let placed = rb.node.read_catalog().await?.shard_keys_on(shard);
            if !placed.is_empty() {
                let names: Vec<String> =
                    placed.iter().map(|(c, k, _)| format!("{c}/{k}")).collect();
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "shard_not_empty",
                    format!("shard {shard} is still where shard keys are placed ({}); they move once it drains", names.join(", ")),
                ));
            }
            on_shard(&rb, shard, ShardAdmin::SetState(ShardState::Removed)).await?;
            tracing::info!(shard = %shard, "shard unregistered");
            Ok(ok(
                json!({"ok": true, "shard": shard.0, "state": "removed"}),
            ))
        }
    }
}

pub async fn moveslot(
    State(rb): State<Arc<Rebalancer>>,
    req: Request,
) -> Result<Response, ApiError> {
    let node = &rb.node;
    let p = Params::from_request(req, MAX_BODY).await?;
    let slot = p.u64("slot")?;
    if slot >= u64::from(SLOT_COUNT) {
        return Err(ApiError::bad_request(
            "bad_request",
            format!("slot must be below {SLOT_COUNT}"),
        ));
    }
    let slot = slot as Slot;
    let to = p.shard_id("to")?;
    let target_state = states(node)
        .into_iter()
        .find(|(id, _)| *id == to)
        .map(|(_, s)| s);
    if target_state != Some(ShardState::Active) {
        return Err(ApiError::bad_request(
            "bad_target",
            format!("shard {to} is not an active shard (state: {target_state:?})"),
        ));
    }
    let owner = if node.store.descriptor().owns(slot).is_some() {
        Some(node.shard())
    } else {
        node.gossip.view().owner_of(slot).map(|(s, _)| s)
    };
    let Some(owner) = owner else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_owned",
            format!("no shard owns slot {slot} right now"),
        ));
    };
    // An operator may name the source; it must be the owner.
    if p.optional("from").is_some() {
        let from = p.shard_id("from")?;
        if from != owner {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_owner",
                format!("shard {from} does not own slot {slot} (shard {owner} does)"),
            ));
        }
    }
    if owner == to {
        return Err(ApiError::bad_request(
            "bad_target",
            format!("slot {slot} is already owned by shard {to}"),
        ));
    }
    let res = on_shard(&rb, owner, ShardAdmin::MoveSlot { slot, to }).await?;
    Ok(ok(json!({"ok": true, "result": res})))
}

pub async fn tags(State(rb): State<Arc<Rebalancer>>, req: Request) -> Result<Response, ApiError> {
    let node = &rb.node;
    let p = Params::from_request(req, MAX_BODY).await?;
    let shard = p.shard_id("shardID")?;
    let mut tags: Vec<(String, String)> = Vec::new();
    for (k, v) in p.iter() {
        if k == "shardID" {
            continue;
        }
        let valid = |s: &str| {
            s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        };
        if k.is_empty() || !valid(k) || !valid(v) {
            return Err(ApiError::bad_request(
                "bad_tag",
                format!("tag {k:?}={v:?}: names and values are up to 64 of [A-Za-z0-9-_.:]"),
            ));
        }
        tags.push((k.to_string(), v.to_string()));
    }
    if tags.is_empty() {
        return Err(ApiError::bad_request(
            "missing_param",
            "give tags as name=value parameters",
        ));
    }
    if !states(node).iter().any(|(id, _)| *id == shard) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_shard",
            format!("no shard {shard} in the cluster"),
        ));
    }
    let res = on_shard(&rb, shard, ShardAdmin::SetTags(tags)).await?;
    Ok(ok(json!({"ok": true, "result": res})))
}

pub async fn stats(State(rb): State<Arc<Rebalancer>>, req: Request) -> Result<Response, ApiError> {
    let node = &rb.node;
    let p = Params::from_request(req, MAX_BODY).await?;
    let view = node.gossip.view();
    let d = node.store.descriptor();
    let (keys, bytes) = crate::gossip_publisher::shard_totals(node);
    let mut shards: Vec<Value> = view
        .shards
        .values()
        .filter(|s| s.id != node.shard())
        .map(|s| {
            json!({
                "id": s.id.0, "state": s.state.as_str(),
                "tags": s.tags.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "slot_count": s.slots.iter().map(|(r, _)| r.len()).sum::<usize>(),
                "keys": s.keys, "bytes": s.bytes, "descriptor_version": s.descriptor_version,
                "chunk_count": s.chunks,
            })
        })
        .collect();
    let mut own = json!({
        "id": node.shard().0, "state": d.state.as_str(), "tags": d.tags,
        "slot_count": d.slot_count(), "keys": keys, "bytes": bytes, "descriptor_version": d.version,
        "chunk_count": crate::gossip_publisher::chunks_served(&d),
    });
    // Keyspace ids with the collection names this node's catalog copy has for them.
    let catalog = node.catalog.current();
    let names: std::collections::BTreeMap<u32, String> = catalog
        .list()
        .into_iter()
        .map(|c| (c.id.0, c.name))
        .collect();
    let name = |ks: u32| match ks {
        0 => Some("default".to_string()),
        _ if unikv_types::Keyspace(ks) == unikv_types::Keyspace::SYSTEM => Some("_system".into()),
        _ => names.get(&ks).cloned(),
    };
    if p.optional("slots")
        .is_some_and(|v| v != "0" && v != "false")
    {
        let per_slot: Vec<Value> = node
            .store
            .slot_stats()
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
            .into_iter()
            .filter(|(slot, _)| *slot < unikv_types::SLOT_COUNT)
            .map(|(slot, s)| json!({"slot": slot, "keys": s.keys, "bytes": s.bytes}))
            .collect();
        own["slots"] = Value::Array(per_slot);
    }
    // Shard keys placed here (custom collections), by keyspace id.
    let units: Vec<Value> = node
        .store
        .unit_stats()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .into_iter()
        .map(|(ks, s)| json!({"keyspace": ks.0, "collection": name(ks.0), "keys": s.keys, "bytes": s.bytes}))
        .collect();
    own["shard_keys"] = Value::Array(units);
    // Chunks of range collections held here, by keyspace id.
    let mut ranges: std::collections::BTreeMap<u32, (u64, u64, u64)> = Default::default();
    for c in node
        .store
        .chunks(None)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    {
        let e = ranges.entry(c.keyspace.0).or_default();
        *e = (e.0 + 1, e.1 + c.count, e.2 + c.size);
    }
    own["chunks"] = ranges
        .iter()
        .map(|(ks, (n, k, b))| json!({"keyspace": ks, "collection": name(*ks), "chunks": n, "keys": k, "bytes": b}))
        .collect();
    // Hash collections' keys here (the system keyspace, with the catalog, included).
    own["collections"] = node
        .store
        .hash_collection_totals()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .into_iter()
        .map(|(ks, s)| json!({"keyspace": ks.0, "collection": name(ks.0), "keys": s.keys, "bytes": s.bytes}))
        .collect();
    shards.push(own);
    shards.sort_by_key(|s| s["id"].as_u64());
    let version: u64 = shards
        .iter()
        .filter_map(|s| s["descriptor_version"].as_u64())
        .sum();
    Ok(ok(json!({
        "version": version,
        "shards": shards,
        "catalog_version": node.catalog.current().version.max(view.catalog_version()),
    })))
}

pub async fn rebalance_status(State(rb): State<Arc<Rebalancer>>) -> Response {
    let node = &rb.node;
    let d = node.store.descriptor();
    let view = node.gossip.view();
    let shares = Shares::with_slot_bytes(&view, &d, &rb.slot_bytes());
    let bound = shares.bound(rb.tolerance());
    let (phase, reason) = shares.phase(bound);
    let r = &*rb;
    let (left_slots, left_bytes) = r.left();
    let rate = r.rate();
    // Left to send from here: the hand-offs running and those planned; at the rate so far.
    let eta_s = (left_slots > 0 && rate > 0.0).then(|| (left_bytes as f64 / rate).ceil());
    ok(json!({
        "shard": node.shard().0,
        "state": d.state.as_str(),
        "leader": node.is_leader(),
        "copying": r.node.copies.len(),
        "moving": d.outgoing.len(),
        "staging": d.staging.len(),
        "queued": r.queued(),
        "moved_slots": r.moved_slots.load(Relaxed),
        "moved_bytes": r.moved_bytes.load(Relaxed),
        "aborted": r.aborted.load(Relaxed),
        "rate_bytes_per_s": rate.round(),
        "move_rate_limit_bytes_per_s": r.node.throttle.bytes_per_s(),
        "left": {"slots": left_slots, "bytes": left_bytes},
        "eta_s": eta_s,
        "write_pause_ms": r.pause_percentiles().map(|(p50, p99, max)| json!({"p50": p50, "p99": p99, "max": max})),
        "chunks": {
            "moving": d.chunks.owned.values().filter(|c| matches!(c.state, unikv_storage::ChunkState::Outgoing { .. })).count(),
            "staging": d.chunks.owned.values().filter(|c| c.is_staging()).count(),
            "moved": node.chunk_moves.moved.load(Relaxed),
            "moved_bytes": node.chunk_moves.bytes.load(Relaxed),
            "aborted": node.chunk_moves.aborted.load(Relaxed),
            "write_pause_ms": node.chunk_moves.pauses.percentiles().map(|(p50, p99, max)| json!({"p50": p50, "p99": p99, "max": max})),
        },
        "cluster": {
            "pending_slots": shares.pending(),
            "targets": shares.targets().iter().map(|(k, v)| (k.0.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            "slot_counts": shares.shards.iter().map(|(k, l)| (k.0.to_string(), l.slots)).collect::<std::collections::BTreeMap<_, _>>(),
            "bytes": shares.shards.iter().map(|(k, l)| (k.0.to_string(), l.bytes)).collect::<std::collections::BTreeMap<_, _>>(),
            "bound": bound,
            "phase": phase,
            "reason": reason,
        },
        "last_plan": lock(&r.last_plan).as_ref().map(|(at_ms, p)| json!({"at_ms": at_ms, "plan": p})),
    }))
}
