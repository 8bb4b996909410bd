//! The bounded cache of verified tokens, keyed by the SHA-256 of the token.
//!
//! An entry lives until the token's `exp` (plus leeway, applied by the caller
//! through the time it passes). When full, expired entries are dropped first;
//! if that frees nothing the cache is emptied, which costs re-verification,
//! never a wrong answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Identity;

/// A verified identity, the token's `exp`, and the key generation it was
/// verified under.
pub(super) type Entry = (Arc<Identity>, i64, u64);

#[derive(Debug)]
pub(super) struct TokenCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl TokenCache {
    pub(super) fn new(capacity: usize) -> Self {
        TokenCache {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The identity for this digest if it is cached, `exp > now`, and it was
    /// verified under the current key generation.
    pub(super) fn get(
        &self,
        digest: &[u8; 32],
        now: i64,
        generation: u64,
    ) -> Option<Arc<Identity>> {
        let entries = self.entries.lock().ok()?;
        match entries.get(digest) {
            Some((id, exp, g)) if *exp > now && *g == generation => Some(Arc::clone(id)),
            _ => None,
        }
    }

    pub(super) fn insert(&self, digest: [u8; 32], entry: Entry, now: i64) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity {
            entries.retain(|_, (_, e, _)| *e > now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(digest, entry);
    }

    pub(super) fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}
