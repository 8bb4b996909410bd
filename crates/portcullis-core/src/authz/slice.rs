//! The entities one request needs, instead of the whole store.
//!
//! Cedar evaluates against an `Entities` value; cloning the operator's whole
//! entity file per request and recomputing its hierarchy costs time that
//! grows with the file. A policy can only reach entities through the
//! principal, the action, the resource, their ancestors, attribute values,
//! and entity literals written in the policies, so the slice is exactly that
//! closure: evaluation sees the same data as with the whole store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cedar_policy::{Entities, Entity, EntityUid, EvalResult, PolicySet};
use serde_json::Value;

use crate::authn::Identity;

/// Slices already built, keyed by who asks for what. The identity is kept
/// in the entry (so its address cannot be reused while the entry lives) and
/// compared by pointer: the token cache hands out one `Arc` per token, and
/// API keys have one each, so repeated requests find their slice.
///
/// Only identities that something else already keeps alive are cached (an
/// identity built for one request would never be asked for again), and the
/// cache is bounded both in entries and in the entities they hold; when
/// either bound is reached it is emptied, which costs rebuilding, never a
/// wrong answer.
#[derive(Debug, Default)]
pub(super) struct SliceCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<SliceKey, CachedSlice>,
    /// Entities held by all entries together.
    entities: usize,
}

/// The identity the key points at (kept alive so its address stays unique)
/// and its slice.
type CachedSlice = (Option<Arc<Identity>>, Arc<Entities>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SliceKey {
    identity: usize,
    resource: EntityUid,
    action: EntityUid,
}

const SLICE_CACHE_ENTRIES: usize = 4096;
const SLICE_CACHE_ENTITIES: usize = 1 << 18;

impl SliceCache {
    /// The cached slice, or `build` it (and remember it when worth it).
    pub(super) fn get_or_build(
        &self,
        identity: Option<&Arc<Identity>>,
        resource: &EntityUid,
        action: &EntityUid,
        build: impl FnOnce() -> Result<Entities, String>,
    ) -> Result<Arc<Entities>, String> {
        let key = SliceKey {
            identity: identity.map_or(0, |i| Arc::as_ptr(i) as usize),
            resource: resource.clone(),
            action: action.clone(),
        };
        if let Some(slice) = self
            .inner
            .lock()
            .ok()
            .and_then(|c| c.entries.get(&key).map(|(_, s)| Arc::clone(s)))
        {
            return Ok(slice);
        }
        let slice = Arc::new(build()?);
        let shared = identity.is_none_or(|i| Arc::strong_count(i) > 1);
        if shared
            && slice.len() <= SLICE_CACHE_ENTITIES
            && let Ok(mut c) = self.inner.lock()
        {
            if c.entries.len() >= SLICE_CACHE_ENTRIES
                || c.entities + slice.len() > SLICE_CACHE_ENTITIES
            {
                c.entries.clear();
                c.entities = 0;
            }
            c.entities += slice.len();
            if let Some((_, old)) = c
                .entries
                .insert(key, (identity.cloned(), Arc::clone(&slice)))
            {
                c.entities -= old.len();
            }
        }
        Ok(slice)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|c| c.entries.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::authn::AuthMethod;

    fn identity() -> Arc<Identity> {
        Arc::new(Identity {
            subject: "a".into(),
            roles: vec![],
            scopes: vec![],
            attributes: vec![],
            method: AuthMethod::Jwt,
            expires_at: None,
        })
    }

    #[test]
    fn only_identities_kept_elsewhere_are_cached() {
        let cache = SliceCache::default();
        let uid = EntityUid::from_str(r#"Doc::"d""#).unwrap();
        let builds = std::cell::Cell::new(0);
        let get = |id: Option<&Arc<Identity>>| {
            cache
                .get_or_build(id, &uid, &uid, || {
                    builds.set(builds.get() + 1);
                    Ok(Entities::empty())
                })
                .unwrap();
        };
        // Built for one request only: never cached.
        let once = identity();
        get(Some(&once));
        get(Some(&once));
        assert_eq!(builds.get(), 2);
        // Kept by another owner (as the token cache does): built once.
        let kept = identity();
        let _owner = Arc::clone(&kept);
        get(Some(&kept));
        get(Some(&kept));
        assert_eq!(builds.get(), 3);
        // Anonymous: cached.
        get(None);
        get(None);
        assert_eq!(builds.get(), 4);
        assert_eq!(cache.len(), 2);
    }
}

/// Precomputed reachability over the operator's entities.
#[derive(Debug)]
pub(super) struct EntityIndex {
    /// The whole store (file entities and the schema's actions).
    all: Entities,
    /// For each stored entity: its ancestors and the entities its
    /// attributes name (only those present in the store).
    reach: HashMap<EntityUid, Vec<EntityUid>>,
    /// Entities named by literals in the policies.
    literals: Vec<EntityUid>,
}

impl EntityIndex {
    pub(super) fn new(all: Entities, policies: &PolicySet) -> Result<Self, String> {
        let mut reach = HashMap::new();
        for e in all.iter() {
            let uid = e.uid();
            let mut next: Vec<EntityUid> = all
                .ancestors(&uid)
                .map(|a| a.cloned().collect())
                .unwrap_or_default();
            for (_, v) in e.attrs().chain(e.tags()) {
                if let Ok(v) = v {
                    collect_uids(&v, &mut next);
                }
            }
            next.retain(|u| all.get(u).is_some());
            next.sort_by_key(ToString::to_string);
            next.dedup();
            reach.insert(uid, next);
        }
        let mut literals = Vec::new();
        for p in policies.policies() {
            let est = p.to_json().map_err(|e| format!("policy {}: {e}", p.id()))?;
            literal_uids(&est, &mut literals);
        }
        literals.retain(|u| all.get(u).is_some());
        literals.sort_by_key(ToString::to_string);
        literals.dedup();
        Ok(EntityIndex {
            all,
            reach,
            literals,
        })
    }

    /// The stored entity, if any.
    pub(super) fn get(&self, uid: &EntityUid) -> Option<&Entity> {
        self.all.get(uid)
    }

    /// The slice for one request: `principal` (already built, with its roles
    /// as parents) plus everything reachable from it, `roots` and the
    /// policies' literals.
    pub(super) fn slice(
        &self,
        principal: Option<Entity>,
        roots: &[&EntityUid],
    ) -> Result<Entities, String> {
        let mut seen: HashSet<EntityUid> = HashSet::new();
        let mut stack: Vec<EntityUid> = roots.iter().map(|u| (*u).clone()).collect();
        stack.extend(self.literals.iter().cloned());
        let mut out: Vec<Entity> = Vec::with_capacity(stack.len() + 1);
        if let Some(p) = principal {
            let uid = p.uid();
            let mut refs = Vec::new();
            for (_, v) in p.attrs().chain(p.tags()) {
                if let Ok(v) = v {
                    collect_uids(&v, &mut refs);
                }
            }
            stack.extend(refs);
            if let Some(r) = self.reach.get(&uid) {
                stack.extend(r.iter().cloned());
            }
            seen.insert(uid);
            out.push(p);
        }
        while let Some(uid) = stack.pop() {
            if !seen.insert(uid.clone()) {
                continue;
            }
            if let Some(e) = self.all.get(&uid) {
                out.push(e.clone());
                if let Some(r) = self.reach.get(&uid) {
                    stack.extend(r.iter().filter(|u| !seen.contains(*u)).cloned());
                }
            }
        }
        Entities::from_entities(out, None).map_err(|e| e.to_string())
    }
}

fn collect_uids(v: &EvalResult, out: &mut Vec<EntityUid>) {
    match v {
        EvalResult::EntityUid(u) => out.push(u.clone()),
        EvalResult::Set(s) => s.iter().for_each(|i| collect_uids(i, out)),
        EvalResult::Record(r) => r.iter().for_each(|(_, i)| collect_uids(i, out)),
        _ => {}
    }
}

/// Entity uids written as values in a policy's conditions (`{"__entity":
/// {...}}` in its JSON form), whose attributes a condition may read. Scope
/// constraints (`principal in Role::"admin"`) only compare uids, so the
/// entities they name need not be present.
fn literal_uids(v: &Value, out: &mut Vec<EntityUid>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(e)) = m.get("__entity")
                && let Ok(uid) = EntityUid::from_json(Value::Object(e.clone()))
            {
                out.push(uid);
            }
            m.values().for_each(|x| literal_uids(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| literal_uids(x, out)),
        _ => {}
    }
}
