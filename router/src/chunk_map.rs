//! The router's copy of where range collections' chunks are, per keyspace, like
//! CockroachDB's range cache: learned by asking every shard for the chunks it holds, used to
//! send each request to one shard, and read again when a shard answers `wrong_shard` or no
//! chunk covers a position (a move or split happened). A stale copy costs a retry, never a
//! wrong answer: the shard checks its own descriptor on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use unikv_types::{ChunkInfo, Keyspace, ShardId};

#[derive(Debug, Default)]
pub struct ChunkMaps {
    maps: Mutex<HashMap<Keyspace, Arc<Vec<ChunkInfo>>>>,
    /// Serialises refreshes; when the last one of each keyspace started.
    refreshed: tokio::sync::Mutex<HashMap<Keyspace, Instant>>,
}

impl ChunkMaps {
    /// The shard holding `pos` of keyspace `ks` (backwards: the keys just below `pos`,
    /// `None` = the end), if the copy knows.
    pub fn lookup(&self, ks: Keyspace, pos: Option<&str>, reverse: bool) -> Option<ShardId> {
        let maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let chunks = maps.get(&ks)?;
        chunks
            .iter()
            .find(|c| {
                if reverse {
                    c.ends_at_or_after(pos)
                } else {
                    pos.is_some_and(|p| c.contains(p))
                }
            })
            .map(|c| c.shard)
    }

    /// Replaces the copy of `ks`.
    pub fn install(&self, ks: Keyspace, mut chunks: Vec<ChunkInfo>) {
        chunks.sort_by(|a, b| a.min.cmp(&b.min));
        self.maps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ks, Arc::new(chunks));
    }

    /// Reads `ks` again with `read` unless a read that started after `arrived` already did;
    /// requests waiting for it share it.
    pub async fn refresh<F, Fut, E>(&self, ks: Keyspace, arrived: Instant, read: F) -> Result<(), E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<ChunkInfo>, E>>,
    {
        let mut last = self.refreshed.lock().await;
        if last.get(&ks).is_some_and(|t| *t >= arrived) {
            return Ok(());
        }
        let started = Instant::now();
        let chunks = read().await?;
        self.install(ks, chunks);
        last.insert(ks, started);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unikv_types::{ChunkId, Epoch};

    fn chunk(shard: u64, min: &str, max: Option<&str>) -> ChunkInfo {
        ChunkInfo {
            id: ChunkId(shard),
            keyspace: Keyspace(16),
            shard: ShardId(shard),
            min: min.into(),
            max: max.map(Into::into),
            count: 0,
            size: 0,
            version: 1,
            epoch: Epoch(1),
            updated_ms: 0,
            moving_to: None,
        }
    }

    #[test]
    fn positions_find_their_chunk_forwards_and_backwards() {
        let m = ChunkMaps::default();
        let ks = Keyspace(16);
        assert_eq!(m.lookup(ks, Some("a"), false), None);
        m.install(
            ks,
            vec![
                chunk(3, "m", None),
                chunk(1, "", Some("f")),
                chunk(2, "f", Some("m")),
            ],
        );
        assert_eq!(m.lookup(ks, Some(""), false), Some(ShardId(1)));
        assert_eq!(m.lookup(ks, Some("f"), false), Some(ShardId(2)));
        assert_eq!(m.lookup(ks, Some("zz"), false), Some(ShardId(3)));
        assert_eq!(m.lookup(ks, Some("m"), true), Some(ShardId(2)));
        assert_eq!(m.lookup(ks, None, true), Some(ShardId(3)));
        assert_eq!(m.lookup(ks, Some("b"), true), Some(ShardId(1)));
        assert_eq!(m.lookup(Keyspace(17), Some("a"), false), None);
    }
}
