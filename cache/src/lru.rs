//! One shard's recency list: a slab of nodes linked most-recent-first, found through a hash
//! table of slab indices.
//!
//! The table stores only `u32` slab indices and compares keys through the slab, so a key is kept
//! once and a lookup or a move to the front allocates nothing.

use std::borrow::Borrow;
use std::hash::Hash;

use hashbrown::HashTable;

/// Marks "no node" in the links.
const NIL: u32 = u32::MAX;

/// The recency tick of an empty list: larger than any real tick, so eviction never picks it.
pub(crate) const EMPTY_TICK: u64 = u64::MAX;

/// One cached entry.
#[derive(Debug)]
pub(crate) struct Node<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
    pub(crate) hash: u64,
    pub(crate) weight: u64,
    /// When it was last used, on the cache-wide clock; orders tails across shards.
    tick: u64,
    prev: u32,
    next: u32,
}

/// A least-recently-used list with O(1) lookup, move-to-front, insert and removal.
#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    table: HashTable<u32>,
    slots: Vec<Option<Node<K, V>>>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    total_weight: u64,
}

impl<K, V> Default for Lru<K, V> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            total_weight: 0,
        }
    }
}

impl<K: Hash + Eq, V> Lru<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The sum of the weights of the nodes in the list.
    pub(crate) fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// The tick of the least recently used node, or [`EMPTY_TICK`].
    pub(crate) fn tail_tick(&self) -> u64 {
        self.node(self.tail).map_or(EMPTY_TICK, |n| n.tick)
    }

    fn node(&self, index: u32) -> Option<&Node<K, V>> {
        self.slots.get(index as usize).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, index: u32) -> Option<&mut Node<K, V>> {
        self.slots.get_mut(index as usize).and_then(Option::as_mut)
    }

    fn find<Q>(&self, hash: u64, key: &Q) -> Option<u32>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let slots = &self.slots;
        self.table
            .find(hash, |&i| slot_key_is(slots, i, key))
            .copied()
    }

    /// The value of `key` without touching recency.
    pub(crate) fn peek<Q>(&self, hash: u64, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let index = self.find(hash, key)?;
        self.node(index).map(|n| &n.value)
    }

    /// The value of `key` and the tick of its last use, without touching recency.
    pub(crate) fn peek_with_tick<Q>(&self, hash: u64, key: &Q) -> Option<(&V, u64)>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let index = self.find(hash, key)?;
        self.node(index).map(|n| (&n.value, n.tick))
    }

    /// The value of `key`, made most recent with `tick`. The flag says whether the tail changed.
    pub(crate) fn get<Q>(&mut self, hash: u64, key: &Q, tick: u64) -> Option<(&V, bool)>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let index = self.find(hash, key)?;
        let tail_changed = index == self.tail;
        self.unlink(index);
        self.link_front(index);
        let node = self.node_mut(index)?;
        node.tick = tick;
        Some((&node.value, tail_changed))
    }

    /// Puts a key that is not in the list at the front.
    pub(crate) fn push_front(&mut self, hash: u64, key: K, value: V, weight: u64, tick: u64) {
        debug_assert!(
            self.find(hash, &key).is_none(),
            "push_front of a present key"
        );
        let node = Node {
            key,
            value,
            hash,
            weight,
            tick,
            prev: NIL,
            next: NIL,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = Some(node);
                index
            }
            None => {
                let index = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&i| i != NIL)
                    .expect("a shard holds fewer than 2^32 - 1 entries");
                self.slots.push(Some(node));
                index
            }
        };
        self.link_front(index);
        self.total_weight += weight;
        let slots = &self.slots;
        self.table
            .insert_unique(hash, index, |&i| slot_hash(slots, i));
    }

    /// Takes `key` out of the list.
    pub(crate) fn remove<Q>(&mut self, hash: u64, key: &Q) -> Option<Node<K, V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let index = self.find(hash, key)?;
        self.take(index)
    }

    /// Takes the least recently used node out of the list.
    pub(crate) fn pop_back(&mut self) -> Option<Node<K, V>> {
        if self.tail == NIL {
            return None;
        }
        self.take(self.tail)
    }

    /// Keys from most to least recently used.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn keys_by_recency(&self) -> Vec<&K> {
        let mut keys = Vec::with_capacity(self.len());
        let mut at = self.head;
        while let Some(node) = self.node(at) {
            keys.push(&node.key);
            at = node.next;
        }
        keys
    }

    fn take(&mut self, index: u32) -> Option<Node<K, V>> {
        let hash = self.node(index)?.hash;
        self.unlink(index);
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == index) {
            entry.remove();
        }
        let node = self.slots.get_mut(index as usize)?.take();
        self.free.push(index);
        self.total_weight -= node.as_ref().map_or(0, |n| n.weight);
        if self.table.is_empty() {
            // Give back the slab once the list runs empty, so a cleared shard holds no memory.
            self.slots = Vec::new();
            self.free = Vec::new();
        }
        node
    }

    fn unlink(&mut self, index: u32) {
        let Some(node) = self.node(index) else { return };
        let (prev, next) = (node.prev, node.next);
        match self.node_mut(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.node_mut(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn link_front(&mut self, index: u32) {
        let old_head = self.head;
        if let Some(node) = self.node_mut(index) {
            node.prev = NIL;
            node.next = old_head;
        }
        match self.node_mut(old_head) {
            Some(h) => h.prev = index,
            None => self.tail = index,
        }
        self.head = index;
    }
}

fn slot_key_is<K, V, Q>(slots: &[Option<Node<K, V>>], index: u32, key: &Q) -> bool
where
    K: Borrow<Q>,
    Q: Eq + ?Sized,
{
    slots
        .get(index as usize)
        .and_then(Option::as_ref)
        .is_some_and(|n| n.key.borrow() == key)
}

fn slot_hash<K, V>(slots: &[Option<Node<K, V>>], index: u32) -> u64 {
    slots
        .get(index as usize)
        .and_then(Option::as_ref)
        .map_or(0, |n| n.hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(lru: &Lru<u32, u32>) -> Vec<u32> {
        lru.keys_by_recency().into_iter().copied().collect()
    }

    #[test]
    fn push_get_remove_keep_recency_order() {
        let mut lru = Lru::default();
        for k in 0..4u32 {
            lru.push_front(u64::from(k), k, k * 10, 1, u64::from(k));
        }
        assert_eq!(keys(&lru), [3, 2, 1, 0]);
        assert_eq!(lru.tail_tick(), 0);
        let (v, tail_changed) = lru.get(0, &0, 9).unwrap();
        assert_eq!((*v, tail_changed), (0, true));
        assert_eq!(keys(&lru), [0, 3, 2, 1]);
        assert_eq!(lru.tail_tick(), 1);
        assert_eq!(lru.remove(2, &2).map(|n| n.value), Some(20));
        assert_eq!(keys(&lru), [0, 3, 1]);
        assert_eq!(lru.pop_back().map(|n| n.key), Some(1));
        assert_eq!(lru.pop_back().map(|n| n.key), Some(3));
        assert_eq!(lru.pop_back().map(|n| n.key), Some(0));
        assert!(lru.pop_back().is_none());
        assert_eq!(lru.tail_tick(), EMPTY_TICK);
        assert_eq!(lru.len(), 0);
    }

    #[test]
    fn slots_are_reused_and_lookups_survive_collisions() {
        let mut lru = Lru::default();
        // Every key shares one hash: lookups must still compare keys.
        for k in 0..100u32 {
            lru.push_front(7, k, k, 1, 0);
        }
        for k in 0..100u32 {
            assert_eq!(lru.peek(7, &k), Some(&k));
        }
        for k in (0..100u32).step_by(2) {
            assert!(lru.remove(7, &k).is_some());
        }
        for k in 100..150u32 {
            lru.push_front(7, k, k, 1, 0);
        }
        assert_eq!(lru.slots.len(), 100, "freed slots are reused");
        assert_eq!(lru.len(), 100);
        assert!(lru.peek(7, &0).is_none());
        assert_eq!(lru.peek(7, &149), Some(&149));
    }
}
