//! Places counted per key, each key capped: connections per client
//! address, WebSockets per owner. A place is given back when its guard
//! goes, and a key with no place taken is forgotten.

use std::hash::Hash;
use std::sync::Arc;

use dashmap::DashMap;

/// The places taken under each key, and a value the key's places share.
pub struct Places<K: Eq + Hash, V> {
    taken: DashMap<K, (usize, V)>,
}

impl<K: Eq + Hash, V> Default for Places<K, V> {
    fn default() -> Self {
        Places {
            taken: DashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Places<K, V> {
    /// One more place under `key`, with the key's value (`init` makes it
    /// for the key's first place), or `None` when `max` are taken.
    pub fn take(
        self: &Arc<Self>,
        key: K,
        max: usize,
        init: impl FnOnce() -> V,
    ) -> Option<(Place<K, V>, V)> {
        let mut entry = self.taken.entry(key.clone()).or_insert_with(|| (0, init()));
        if entry.0 >= max {
            return None;
        }
        entry.0 += 1;
        let value = entry.1.clone();
        Some((
            Place {
                places: self.clone(),
                key,
            },
            value,
        ))
    }

    /// The value of `key`, while it has places taken.
    pub fn get(&self, key: &K) -> Option<V> {
        self.taken.get(key).map(|e| e.1.clone())
    }

    /// Calls `f` with the value of every key that has places taken.
    pub fn for_each(&self, mut f: impl FnMut(&V)) {
        for entry in &self.taken {
            f(&entry.1);
        }
    }

    /// How many places `key` has taken.
    pub fn count(&self, key: &K) -> usize {
        self.taken.get(key).map_or(0, |e| e.0)
    }
}

/// One place taken; dropping it gives the place back.
pub struct Place<K: Eq + Hash, V> {
    places: Arc<Places<K, V>>,
    key: K,
}

impl<K: Eq + Hash, V> Drop for Place<K, V> {
    fn drop(&mut self) {
        self.places.taken.remove_if_mut(&self.key, |_, entry| {
            entry.0 = entry.0.saturating_sub(1);
            entry.0 == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_per_key_and_given_back() {
        let places: Arc<Places<&str, u8>> = Arc::default();
        let (a1, v) = places.take("a", 2, || 7).expect("first");
        assert_eq!(v, 7);
        let a2 = places.take("a", 2, || 9).expect("second").0;
        assert!(places.take("a", 2, || 9).is_none(), "over the cap");
        assert!(places.take("b", 2, || 1).is_some(), "keys are apart");
        drop(a1);
        assert_eq!(places.count(&"a"), 1);
        drop(a2);
        assert_eq!(places.get(&"a"), None, "an empty key is forgotten");
    }
}
