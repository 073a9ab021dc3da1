//! RFC 6962 / RFC 9162 Merkle tree hashing and proofs, for the audit log as
//! a transparency log (issue 22): the leaf and node hashes, the root of the
//! first `n` leaves, inclusion and consistency proofs, and their checks. It
//! reads subtree hashes through `Subtrees`, so a store that keeps the hashes
//! of complete subtrees answers a proof with O(log n) reads; it knows
//! nothing of events or storage.

use ring::digest::{Context, SHA256};

pub type Hash = [u8; 32];

/// SHA-256 of the empty string: the root of the empty tree.
pub fn empty_root() -> Hash {
    digest(&[])
}

fn digest(parts: &[&[u8]]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// RFC 6962 §2.1: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    digest(&[&[0x00], data])
}

/// RFC 6962 §2.1: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    digest(&[&[0x01], left, right])
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: u64) -> u64 {
    debug_assert!(n > 1);
    1 << (63 - (n - 1).leading_zeros())
}

/// The hashes of subtrees over leaves `[start, end)`: what proofs are built
/// from. A store answers the complete (power-of-two, aligned) ones from
/// what it keeps; `subtree` composes any range from those.
/// One step down both proofs' walks: split `range` at `k`, note the half not
/// taken, keep the other, and keep `m` (the leaf's position, or the old tree's
/// size, counted from the range's start) relative to the range kept.
fn descend<T: Subtrees + ?Sized>(
    tree: &T,
    range: &mut (u64, u64),
    m: &mut u64,
    k: u64,
    left: bool,
    proof: &mut Vec<Hash>,
) -> Result<(), T::Error> {
    let (start, end) = *range;
    if left {
        proof.push(tree.subtree(start + k, end)?);
        *range = (start, start + k);
    } else {
        proof.push(tree.subtree(start, start + k)?);
        *range = (start + k, end);
        *m -= k;
    }
    Ok(())
}

pub trait Subtrees {
    type Error;

    /// The leaf hash at `index`.
    fn leaf(&self, index: u64) -> Result<Hash, Self::Error>;

    /// The hash of the complete subtree of `2^level` leaves starting at
    /// `start` (a multiple of `2^level`). The default computes it from the
    /// leaves; a store overrides it with what it kept.
    fn complete(&self, start: u64, level: u32) -> Result<Hash, Self::Error> {
        if level == 0 {
            return self.leaf(start);
        }
        let half = 1u64 << (level - 1);
        Ok(node_hash(
            &self.complete(start, level - 1)?,
            &self.complete(start + half, level - 1)?,
        ))
    }

    /// MTH(D[start:end]), RFC 6962 §2.1.
    fn subtree(&self, start: u64, end: u64) -> Result<Hash, Self::Error> {
        let n = end - start;
        if n == 0 {
            return Ok(empty_root());
        }
        if n.is_power_of_two() && start.is_multiple_of(n) {
            return self.complete(start, n.trailing_zeros());
        }
        let k = split(n);
        Ok(node_hash(
            &self.subtree(start, start + k)?,
            &self.subtree(start + k, end)?,
        ))
    }

    /// The root of the first `size` leaves.
    fn root(&self, size: u64) -> Result<Hash, Self::Error> {
        self.subtree(0, size)
    }

    /// PATH(index, D[0:size]), RFC 6962 §2.1.1: sibling hashes, leaf first.
    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, Self::Error> {
        let mut proof = Vec::new();
        let (mut range, mut m) = ((0, size), index);
        // Walk down from the root, noting each sibling; the RFC lists them leaf first.
        while range.1 - range.0 > 1 {
            let k = split(range.1 - range.0);
            let left = m < k;
            descend(self, &mut range, &mut m, k, left, &mut proof)?;
        }
        proof.reverse();
        Ok(proof)
    }

    /// PROOF(from, D[0:to]), RFC 6962 §2.1.2.
    fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, Self::Error> {
        let mut proof = Vec::new();
        if from == 0 || from >= to {
            return Ok(proof);
        }
        let (mut range, mut m, mut whole) = ((0, to), from, true);
        loop {
            let n = range.1 - range.0;
            if m == n {
                if !whole {
                    proof.push(self.subtree(range.0, range.1)?);
                }
                break;
            }
            let k = split(n);
            let left = m <= k;
            whole &= left;
            descend(self, &mut range, &mut m, k, left, &mut proof)?;
        }
        proof.reverse();
        Ok(proof)
    }
}

/// Leaf hashes in memory (tests, `audit verify` over a whole log).
impl Subtrees for [Hash] {
    type Error = std::convert::Infallible;

    fn leaf(&self, index: u64) -> Result<Hash, Self::Error> {
        Ok(self[index as usize])
    }
}

/// The walk both RFC 9162 checks share: each proof hash joins the running
/// hash on the left (`true`) or the right, as the indexes `f_n` and `s_n`
/// say. False if the proof does not end exactly at the root.
fn walk(mut f_n: u64, mut s_n: u64, proof: &[Hash], mut step: impl FnMut(&Hash, bool)) -> bool {
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            step(p, true);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            step(p, false);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0
}

/// RFC 9162 §2.1.3.2: whether `proof` shows `leaf` at `index` in the tree
/// of `size` leaves whose root is `root`.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let mut r = *leaf;
    let whole = walk(index, size - 1, proof, |p, left| {
        r = if left { node_hash(p, &r) } else { node_hash(&r, p) };
    });
    whole && r == *root
}

/// RFC 9162 §2.1.4.2: whether `proof` shows the tree of `from` leaves with
/// root `old` is a prefix of the tree of `to` leaves with root `new`.
pub fn verify_consistency(from: u64, to: u64, proof: &[Hash], old: &Hash, new: &Hash) -> bool {
    if from == to {
        return proof.is_empty() && old == new;
    }
    if from == 0 || from > to {
        return false;
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if from.is_power_of_two() {
        path.insert(0, *old);
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f_n, mut s_n) = (from - 1, to - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    let whole = walk(f_n, s_n, rest, |c, left| {
        if left {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
        } else {
            sr = node_hash(&sr, c);
        }
    });
    whole && fr == *old && sr == *new
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The leaves and roots of the reference test data that Certificate
    /// Transparency implementations share (transparency-dev/merkle's
    /// `testonly`): eight leaves, the root of each prefix.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("leaf {i}").as_bytes())).collect()
    }

    #[test]
    fn the_reference_leaves_have_the_reference_roots() {
        let tree: Vec<Hash> = LEAVES.iter().map(|l| leaf_hash(&unhex(l))).collect();
        for (n, root) in ROOTS.iter().enumerate() {
            assert_eq!(hex(&tree[..].root(n as u64 + 1).unwrap()), *root, "size {}", n + 1);
        }
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn every_inclusion_proof_verifies_and_only_for_its_leaf_index_and_root() {
        let tree = leaves(33);
        for size in 1..=33u64 {
            let root = tree[..].root(size).unwrap();
            for index in 0..size {
                let proof = tree[..].inclusion_proof(index, size).unwrap();
                let leaf = tree[index as usize];
                assert!(verify_inclusion(&leaf, index, size, &proof, &root), "{index} in {size}");
                let another = tree[(index as usize + 1) % tree.len()];
                assert!(
                    !verify_inclusion(&another, index, size, &proof, &root),
                    "another leaf at {index} in {size}"
                );
                if size > 1 {
                    assert!(
                        !verify_inclusion(&leaf, (index + 1) % size, size, &proof, &root),
                        "{index} moved in {size}"
                    );
                }
                let mut other = root;
                other[0] ^= 1;
                assert!(!verify_inclusion(&leaf, index, size, &proof, &other));
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_rewritten_prefix_does_not() {
        let tree = leaves(33);
        let mut forged = tree.clone();
        forged[2] = leaf_hash(b"rewritten");
        for to in 1..=33u64 {
            let new = tree[..].root(to).unwrap();
            for from in 1..=to {
                let old = tree[..].root(from).unwrap();
                let proof = tree[..].consistency_proof(from, to).unwrap();
                assert!(verify_consistency(from, to, &proof, &old, &new), "{from} -> {to}");
                if from > 2 {
                    let forged_old = forged[..].root(from).unwrap();
                    assert!(
                        !verify_consistency(from, to, &proof, &forged_old, &new),
                        "forged {from} -> {to}"
                    );
                }
            }
        }
    }
}
