//! The router's copy of the catalog: enough to send a request for a custom collection's
//! shard key straight to the shard that holds the key's bucket. Everything else (hash
//! collections, the seed's keys) routes by slot and is resolved by the serving node.
//!
//! The copy is read again when gossip shows a newer catalog version, or when a request names
//! a collection or shard key the copy lacks (reads waiting together share one read).

use std::sync::{Arc, RwLock};
use std::time::Instant;

use unikv_types::catalog::Catalog;

/// The last catalog the router read.
#[derive(Debug, Default)]
pub struct RouterCatalog {
    current: RwLock<Arc<Catalog>>,
    /// Serialises reads; holds when the last one started.
    last_read: tokio::sync::Mutex<Option<Instant>>,
}

impl RouterCatalog {
    pub fn current(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A catalog read that started after `arrived`: the one `read` does now, or one another
    /// request started meanwhile.
    pub async fn refresh<F, Fut, E>(&self, arrived: Instant, read: F) -> Result<Arc<Catalog>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Catalog, E>>,
    {
        let mut last = self.last_read.lock().await;
        if last.is_some_and(|t| t >= arrived) {
            return Ok(self.current());
        }
        let started = Instant::now();
        let c = read().await?;
        *last = Some(started);
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if c.version >= cur.version {
            *cur = Arc::new(c);
        }
        Ok(cur.clone())
    }
}
