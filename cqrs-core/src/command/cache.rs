//! The command handler's cache of recently handled aggregates.

use std::collections::HashMap;

use super::CommandHandler;
use crate::aggregate::Aggregate;

/// A bounded map of recently handled aggregates: stream id -> (version, state).
pub(super) struct Cache<A> {
    capacity: usize,
    entries: HashMap<String, (u64, A)>,
}

impl<A> Cache<A> {
    pub(super) fn new(capacity: usize) -> Self {
        Cache {
            capacity,
            entries: HashMap::new(),
        }
    }
}

impl<A: Aggregate> CommandHandler<A> {
    pub(super) fn cached(&self, id: &str, trust: bool) -> Option<(A, u64)> {
        if !trust {
            return None;
        }
        let cache = self.cache.as_ref()?.lock().expect("cache lock");
        cache.entries.get(id).map(|(v, a)| (a.clone(), *v))
    }

    pub(super) fn evict(&self, id: &str) {
        if let Some(c) = &self.cache {
            c.lock().expect("cache lock").entries.remove(id);
        }
    }

    /// Keeps `state` at `version` for aggregate `id`, unless the cache holds a later version
    /// already (two commands of this handler on one aggregate may finish out of order).
    pub(super) fn remember(&self, id: &str, version: u64, state: &A) {
        let Some(c) = &self.cache else { return };
        let mut c = c.lock().expect("cache lock");
        match c.entries.get(id) {
            Some((held, _)) if *held >= version => return,
            Some(_) => {}
            None if c.entries.len() >= c.capacity => {
                // NOTE: dropping an arbitrary entry is enough: a miss costs one stream read.
                if let Some(k) = c.entries.keys().next().cloned() {
                    c.entries.remove(&k);
                }
            }
            None => {}
        }
        c.entries.insert(id.to_owned(), (version, state.clone()));
    }
}
