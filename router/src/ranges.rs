//! Requests for range collections through the router: each goes to the shard the chunk map
//! (`chunk_map`) names for its key; a `wrong_shard` answer or a position no chunk covers reads
//! the map again from every shard and tries again, up to the request timeout. A scan walks
//! the chunks in key order, one shard at a time, until its page is full or the range ends,
//! so a scan inside one chunk contacts only that chunk's shard.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use unikv_http::scan::SCAN_KEY;
use unikv_http::ApiError;
use unikv_types::catalog::Space;
use unikv_types::{ChunkInfo, ClientSeq, Keyspace, KvOp, KvReply, ScanPage, ScanRange, ShardId};

use crate::forward::Backend;
use crate::http::App;

/// Pause before looking again when no chunk covers a position (a move between its steps).
const GAP_WAIT: Duration = Duration::from_millis(50);

impl<B: Backend> App<B> {
    /// A request for range keyspace `ks`.
    pub(crate) async fn execute_range(
        &self,
        ks: Keyspace,
        key: String,
        op: KvOp,
        client: Option<ClientSeq>,
        space: Space,
    ) -> Result<KvReply, ApiError> {
        match op {
            KvOp::Scan(r) => self.scan(ks, r, space).await,
            op => {
                let deadline = Instant::now() + self.forwarder.timeout();
                let mut last: Option<ApiError> = None;
                loop {
                    let arrived = Instant::now();
                    let shard = self
                        .chunk_owner(ks, Some(&key), false, &space, deadline, &mut last)
                        .await?;
                    let res = self
                        .forwarder
                        .execute_on(
                            key.clone(),
                            op.clone(),
                            client.clone(),
                            space.clone(),
                            Some(shard),
                        )
                        .await;
                    match res {
                        Err(e) if e.code == "wrong_shard" && Instant::now() < deadline => {
                            self.refresh_chunks(ks, &space, arrived).await?;
                            last = Some(e);
                        }
                        other => return other,
                    }
                }
            }
        }
    }

    /// The shard the chunk map names for a position, reading the map again (and waiting
    /// out a move's gap) while it names none.
    async fn chunk_owner(
        &self,
        ks: Keyspace,
        pos: Option<&str>,
        reverse: bool,
        space: &Space,
        deadline: Instant,
        last: &mut Option<ApiError>,
    ) -> Result<ShardId, ApiError> {
        loop {
            if let Some(s) = self.chunk_maps.lookup(ks, pos, reverse) {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(last.take().unwrap_or_else(|| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        format!("no shard answered for the chunk holding {pos:?} in time"),
                    )
                }));
            }
            let arrived = Instant::now();
            self.refresh_chunks(ks, space, arrived).await?;
            if self.chunk_maps.lookup(ks, pos, reverse).is_none() {
                tokio::time::sleep(GAP_WAIT).await;
            }
        }
    }

    /// Reads the chunk map of `ks` again (one read at a time, shared by waiting requests).
    pub(crate) async fn refresh_chunks(
        &self,
        ks: Keyspace,
        space: &Space,
        arrived: Instant,
    ) -> Result<(), ApiError> {
        self.chunk_maps
            .refresh(ks, arrived, || self.all_chunks(space))
            .await
    }

    /// Every chunk of the collection of `space`, from every shard that answers.
    pub(crate) async fn all_chunks(&self, space: &Space) -> Result<Vec<ChunkInfo>, ApiError> {
        let shards: Vec<ShardId> = self.view.borrow().shards.keys().copied().collect();
        let calls = shards.iter().map(|s| {
            self.forwarder
                .execute_on(SCAN_KEY.into(), KvOp::Chunks, None, space.clone(), Some(*s))
        });
        let mut all = Vec::new();
        for (shard, res) in shards.iter().zip(futures::future::join_all(calls).await) {
            match res {
                Ok(KvReply::Chunks(c)) => all.extend(c),
                Ok(other) => {
                    tracing::warn!(%shard, reply = ?other, "chunk listing got another reply")
                }
                Err(e) => tracing::debug!(%shard, error = %e.message, "chunk listing"),
            }
        }
        Ok(all)
    }

    /// A scan page: from the shard holding its first position on, shard after shard.
    async fn scan(&self, ks: Keyspace, r: ScanRange, space: Space) -> Result<KvReply, ApiError> {
        let deadline = Instant::now() + self.forwarder.timeout();
        let mut out = ScanPage::default();
        let mut bytes = 0u64;
        let mut cur = r.clone();
        let mut last = None;
        loop {
            let pos = cur.first_position().map(str::to_string);
            let arrived = Instant::now();
            let shard = self
                .chunk_owner(ks, pos.as_deref(), cur.reverse, &space, deadline, &mut last)
                .await?;
            let ask = ScanRange {
                limit: r.limit - out.items.len() as u32,
                max_bytes: r.max_bytes.saturating_sub(bytes).max(1),
                ..cur.clone()
            };
            let res = self
                .forwarder
                .execute_on(
                    SCAN_KEY.into(),
                    KvOp::Scan(ask),
                    None,
                    space.clone(),
                    Some(shard),
                )
                .await;
            let page = match res {
                Ok(KvReply::Scan(p)) => p,
                Ok(other) => {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        format!("a scan got {other:?}"),
                    ))
                }
                Err(e) if e.code == "wrong_shard" && Instant::now() < deadline => {
                    self.refresh_chunks(ks, &space, arrived).await?;
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            bytes += page
                .items
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum::<u64>();
            out.items.extend(page.items);
            match page.resume {
                None => return Ok(KvReply::Scan(out)),
                Some(p) if out.items.len() >= r.limit as usize || bytes >= r.max_bytes => {
                    out.resume = Some(p);
                    return Ok(KvReply::Scan(out));
                }
                Some(p) if cur.reverse => cur.end = Some(p),
                Some(p) => cur.start = p,
            }
        }
    }
}
