//! Which subtree hashes the log keeps, and how a computation over the tree
//! learns which of them it needs: the leaves and complete subtrees at every
//! `STRIDE`-th level are stored; `Kept` answers from those it holds and
//! notes the ones it lacks, so a caller fetches them in one read and runs
//! the computation again. Pure: no storage, no events.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;

use super::merkle::{Hash, Subtrees, node_hash};

/// Complete subtrees are stored at levels 4, 8, 12, …: a sixteenth of the
/// leaves again in rows, and any complete subtree is at most 15 stored
/// hashes below it.
pub const STRIDE: u32 = 4;

/// A complete subtree: `2^level` leaves from `start` (level 0: a leaf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u32,
    pub start: u64,
}

/// Whether the log stores this subtree's hash.
pub fn is_stored(level: u32) -> bool {
    level.is_multiple_of(STRIDE)
}

/// Stored hashes at hand. A lookup of one not at hand answers zeros and
/// notes it in `missing`: a computation run once against an empty `Kept`
/// lists exactly what it reads, since which subtrees it reads never
/// depends on their hashes.
#[derive(Debug, Default)]
pub struct Kept {
    pub known: HashMap<NodeId, Hash>,
    missing: RefCell<BTreeSet<NodeId>>,
}

impl Kept {
    /// What the last computations lacked, emptied.
    pub fn take_missing(&self) -> BTreeSet<NodeId> {
        std::mem::take(&mut self.missing.borrow_mut())
    }

    fn get(&self, id: NodeId) -> Hash {
        match self.known.get(&id) {
            Some(h) => *h,
            None => {
                self.missing.borrow_mut().insert(id);
                [0; 32]
            }
        }
    }

    /// The hash of a stored-level subtree computed from those below it
    /// (what the integrator does for each one a batch completes).
    pub fn compute(&self, id: NodeId) -> Hash {
        debug_assert!(id.level > 0);
        let half = 1u64 << (id.level - 1);
        node_hash(
            &self.below(id.start, id.level - 1),
            &self.below(id.start + half, id.level - 1),
        )
    }

    fn below(&self, start: u64, level: u32) -> Hash {
        if is_stored(level) {
            self.get(NodeId { level, start })
        } else {
            self.compute(NodeId { level, start })
        }
    }
}

impl Subtrees for Kept {
    type Error = Infallible;

    fn leaf(&self, index: u64) -> Result<Hash, Infallible> {
        Ok(self.get(NodeId { level: 0, start: index }))
    }

    fn complete(&self, start: u64, level: u32) -> Result<Hash, Infallible> {
        Ok(self.below(start, level))
    }
}

/// The stored-level subtrees that the leaves `[from, to)` complete, lowest
/// level first (each is computed from ones before it or already stored).
pub fn completed(from: u64, to: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut level = STRIDE;
    while level < 64 && (1u64 << level) <= to {
        let width = 1u64 << level;
        // Subtrees ending in (from, to]: their last leaf is new.
        let mut start = (from / width) * width;
        while start + width <= to {
            if start + width > from {
                out.push(NodeId { level, start });
            }
            start += width;
        }
        level += STRIDE;
    }
    out
}

/// The right edge of a tree grown leaf by leaf: its complete subtrees,
/// largest first. What `audit verify` keeps while it walks the whole log.
#[derive(Debug, Default, Clone)]
pub struct Frontier {
    size: u64,
    edge: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, leaf: Hash) {
        self.size += 1;
        let mut node = (0, leaf);
        while let Some(&(level, left)) = self.edge.last()
            && level == node.0
        {
            self.edge.pop();
            node = (level + 1, node_hash(&left, &node.1));
        }
        self.edge.push(node);
    }

    /// The root of the leaves pushed so far (RFC 6962: the edge folded
    /// from its smallest subtree up).
    pub fn root(&self) -> Hash {
        let mut it = self.edge.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return super::merkle::empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::merkle::leaf_hash;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// Runs `f` against what `store` holds, fetching (as the log does) only
    /// what a first run noted missing; a lookup of something never stored
    /// panics, so this also proves the computation reads stored levels only.
    fn fetched<T>(store: &HashMap<NodeId, Hash>, kept: &mut Kept, f: impl Fn(&Kept) -> T) -> T {
        let _ = f(kept);
        for id in kept.take_missing() {
            kept.known
                .insert(id, *store.get(&id).unwrap_or_else(|| panic!("{id:?} is not stored")));
        }
        let out = f(kept);
        assert!(kept.take_missing().is_empty());
        out
    }

    /// Grows the stored levels batch by batch as the integrator does and
    /// checks every new subtree, root and proof against the in-memory tree
    /// of all leaves.
    #[test]
    fn stored_levels_answer_roots_and_proofs_as_the_whole_tree_does() {
        let all = leaves(300);
        let mut store: HashMap<NodeId, Hash> = HashMap::new();
        let mut size = 0u64;
        for batch in [1u64, 15, 1, 16, 17, 100, 150] {
            let to = size + batch;
            for i in size..to {
                store.insert(NodeId { level: 0, start: i }, all[i as usize]);
            }
            for id in completed(size, to) {
                let h = fetched(&store, &mut Kept::default(), |k| k.compute(id));
                assert_eq!(h, all[..].subtree(id.start, id.start + (1 << id.level)).unwrap());
                store.insert(id, h);
            }
            size = to;
            let mut k = Kept::default();
            let root = fetched(&store, &mut k, |k| k.root(size).unwrap());
            assert_eq!(root, all[..].root(size).unwrap());
            for (i, from) in [(0, 1), (size / 3, size / 2), (size - 1, size - 1)] {
                let p = fetched(&store, &mut Kept::default(), |k| k.inclusion_proof(i, size).unwrap());
                assert_eq!(p, all[..].inclusion_proof(i, size).unwrap());
                let c = fetched(&store, &mut Kept::default(), |k| {
                    k.consistency_proof(from, size).unwrap()
                });
                assert_eq!(c, all[..].consistency_proof(from, size).unwrap());
            }
        }
    }

    #[test]
    fn the_frontier_has_the_root_of_every_prefix() {
        let all = leaves(70);
        let mut f = Frontier::default();
        assert_eq!(f.root(), all[..].root(0).unwrap());
        for (i, leaf) in all.iter().enumerate() {
            f.push(*leaf);
            assert_eq!(f.root(), all[..].root(i as u64 + 1).unwrap(), "size {}", i + 1);
        }
    }

    #[test]
    fn a_batch_completes_the_subtrees_whose_last_leaf_it_adds() {
        assert_eq!(completed(0, 15), vec![]);
        assert_eq!(completed(0, 16), vec![NodeId { level: 4, start: 0 }]);
        assert_eq!(completed(16, 32), vec![NodeId { level: 4, start: 16 }]);
        assert_eq!(completed(31, 33), vec![NodeId { level: 4, start: 16 }]);
        let big = completed(250, 256 + 16);
        assert_eq!(
            big,
            vec![
                NodeId { level: 4, start: 240 },
                NodeId { level: 4, start: 256 },
                NodeId { level: 8, start: 0 }
            ]
        );
    }
}
