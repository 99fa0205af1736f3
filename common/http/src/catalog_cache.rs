//! The last catalog a node or router read, shared by both: a request resolves its collection
//! here, and reads the catalog again (through whatever path its process has) when the copy
//! lacks a name or gossip shows a newer version. Requests waiting for a read share it, so a
//! flood of unknown names costs one read at a time.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use unikv_types::catalog::Catalog;

#[derive(Debug, Default)]
pub struct CatalogCache {
    current: RwLock<Arc<Catalog>>,
    /// Serialises reads; holds when the last one started.
    last_read: tokio::sync::Mutex<Option<Instant>>,
}

impl CatalogCache {
    pub fn current(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps `c` unless a newer catalog is cached already (versions only grow); returns what
    /// is cached now.
    pub fn offer(&self, c: Catalog) -> Arc<Catalog> {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if c.version >= cur.version {
            *cur = Arc::new(c);
        }
        cur.clone()
    }

    /// A catalog read that started after `arrived`: the one `read` does now, or one another
    /// request started meanwhile.
    pub async fn refresh<F, Fut, E>(&self, arrived: Instant, read: F) -> Result<Arc<Catalog>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Catalog, E>>,
    {
        let mut last = self.last_read.lock().await;
        if last.is_some_and(|t| t >= arrived) {
            return Ok(self.current());
        }
        let started = Instant::now();
        let c = read().await?;
        *last = Some(started);
        Ok(self.offer(c))
    }
}
