//! The last catalog a node read (see `catalog`), kept apart from the code that reads it so
//! the node's state (`service::Node`) can hold it without importing that code.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use unikv_types::catalog::Catalog;

/// The last catalog this node read.
#[derive(Debug, Default)]
pub struct CatalogCache {
    current: RwLock<Arc<Catalog>>,
    /// Serialises refreshes; holds when the last one started.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
}

impl CatalogCache {
    pub fn current(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps `c` unless a newer catalog is already cached (versions only grow); returns what
    /// is cached now.
    pub fn offer(&self, c: Catalog) -> Arc<Catalog> {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if c.version >= cur.version {
            *cur = Arc::new(c);
        }
        cur.clone()
    }

    /// Taken while the catalog is read again; holds when the last such read started.
    pub async fn refresh_lock(&self) -> tokio::sync::MutexGuard<'_, Option<Instant>> {
        self.refreshed.lock().await
    }
}
