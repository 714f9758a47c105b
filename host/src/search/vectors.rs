//! One organization's entries and their vectors, for nearest-neighbour
//! search: exact cosine for small sets, sign-bit sketches and an exact
//! rescore for large ones.

use std::collections::HashMap;
use std::sync::Arc;

use super::Entry;

/// Below this many vectors every one is scored exactly.
const EXACT_UP_TO: usize = 4096;

#[derive(Default)]
pub struct Vectors {
    entries: Vec<Arc<Entry>>,
    positions: HashMap<i64, usize>,
    /// Dimension, fixed by the first vector stored.
    dim: usize,
    /// `entries.len() * dim` values, L2-normalised; zeros where missing.
    values: Vec<f32>,
    /// One bit per dimension (set when positive), `words()` u64s per entry.
    sketches: Vec<u64>,
    has_vector: Vec<bool>,
}

impl Vectors {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn words(&self) -> usize {
        self.dim.div_ceil(64)
    }

    pub fn entry(&self, id: i64) -> Option<Arc<Entry>> {
        self.positions.get(&id).map(|&i| self.entries[i].clone())
    }

    /// Adds or replaces an entry. A vector of another dimension than the
    /// ones already held is not stored (the entry stays text-searchable).
    pub fn upsert(&mut self, entry: Arc<Entry>, vector: Option<Vec<f32>>) {
        self.remove(entry.id);
        if self.dim == 0
            && let Some(v) = &vector
            && !v.is_empty()
        {
            self.dim = v.len();
        }
        let vector = vector.filter(|v| v.len() == self.dim && self.dim > 0);
        let words = self.words();
        let i = self.entries.len();
        self.positions.insert(entry.id, i);
        self.entries.push(entry);
        match vector {
            Some(mut v) => {
                normalise(&mut v);
                self.sketches.extend(sketch(&v, words));
                self.values.extend(v);
                self.has_vector.push(true);
            }
            None => {
                self.values.extend(std::iter::repeat_n(0.0, self.dim));
                self.sketches.extend(std::iter::repeat_n(0, words));
                self.has_vector.push(false);
            }
        }
    }

    /// Removes an entry (moving the last one into its place).
    pub fn remove(&mut self, id: i64) {
        let Some(i) = self.positions.remove(&id) else {
            return;
        };
        let last = self.entries.len() - 1;
        let (dim, words) = (self.dim, self.words());
        self.entries.swap_remove(i);
        self.has_vector.swap_remove(i);
        if i != last {
            self.values
                .copy_within(last * dim..(last + 1) * dim, i * dim);
            self.sketches
                .copy_within(last * words..(last + 1) * words, i * words);
            self.positions.insert(self.entries[i].id, i);
        }
        self.values.truncate(last * dim);
        self.sketches.truncate(last * words);
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// Cosine similarity of entry `id` with `query`.
    pub fn similarity(&self, id: i64, query: &[f32]) -> Option<f32> {
        let &i = self.positions.get(&id)?;
        if !self.has_vector[i] || query.len() != self.dim {
            return None;
        }
        let mut q = query.to_vec();
        normalise(&mut q);
        Some(dot(self.row(i), &q))
    }

    /// Up to `k` entries most similar to `query` (positive similarity
    /// only), best first. Above [`EXACT_UP_TO`] entries, only the `rescore`
    /// with the closest sketches are scored exactly.
    pub fn nearest(&self, query: &[f32], k: usize, rescore: usize) -> Vec<(i64, f32)> {
        if query.len() != self.dim || self.dim == 0 {
            return Vec::new();
        }
        let mut q = query.to_vec();
        normalise(&mut q);
        let n = self.entries.len();
        let candidates: Vec<usize> = if n <= EXACT_UP_TO {
            (0..n).filter(|&i| self.has_vector[i]).collect()
        } else {
            let words = self.words();
            let qs = sketch(&q, words);
            let mut distances: Vec<(u32, usize)> = (0..n)
                .filter(|&i| self.has_vector[i])
                .map(|i| {
                    let s = &self.sketches[i * words..(i + 1) * words];
                    let d = s.iter().zip(&qs).map(|(a, b)| (a ^ b).count_ones()).sum();
                    (d, i)
                })
                .collect();
            let keep = rescore.min(distances.len());
            if keep < distances.len() {
                distances.select_nth_unstable(keep);
                distances.truncate(keep);
            }
            distances.into_iter().map(|(_, i)| i).collect()
        };
        let mut scored: Vec<(i64, f32)> = candidates
            .into_iter()
            .map(|i| (self.entries[i].id, dot(self.row(i), &q)))
            .filter(|(_, s)| *s > 0.0)
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(k);
        scored
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight lanes that the compiler vectorises.
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

fn sketch(v: &[f32], words: usize) -> Vec<u64> {
    let mut out = vec![0u64; words];
    for (d, x) in v.iter().enumerate() {
        if *x > 0.0 {
            out[d / 64] |= 1 << (d % 64);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64) -> Arc<Entry> {
        Arc::new(Entry {
            id,
            org_id: 1,
            document_id: id,
            title: String::new(),
            content: String::new(),
            url: None,
            source: "knowledge_base".into(),
        })
    }

    /// A deterministic pseudo-random unit vector.
    fn vector(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..dim)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn sketches_find_what_exact_search_finds() {
        let mut small = Vectors::default();
        let mut large = Vectors::default();
        for id in 0..6000 {
            large.upsert(entry(id), Some(vector(id as u64, 256)));
            if id < 100 {
                small.upsert(entry(id), Some(vector(id as u64, 256)));
            }
        }
        // A query near entry 4321 finds it first through the sketches.
        let mut q = vector(4321, 256);
        q[0] += 0.3;
        assert_eq!(large.nearest(&q, 5, 256)[0].0, 4321);
        let q = vector(42, 256);
        assert_eq!(small.nearest(&q, 3, 256)[0].0, 42);
        assert!((small.similarity(42, &q).expect("as expected") - 1.0).abs() < 1e-4);
    }

    #[test]
    fn removal_keeps_rows_aligned() {
        let mut v = Vectors::default();
        for id in 0..5 {
            v.upsert(entry(id), Some(vector(id as u64, 16)));
        }
        v.remove(1);
        v.upsert(entry(3), None);
        assert_eq!(v.len(), 4);
        assert_eq!(v.nearest(&vector(4, 16), 1, 10)[0].0, 4);
        assert!(v.similarity(3, &vector(3, 16)).is_none());
        assert!(v.entry(1).is_none());
        // Another dimension is refused, not mixed in.
        v.upsert(entry(9), Some(vec![1.0; 8]));
        assert!(v.similarity(9, &[1.0; 8]).is_none());
    }
}
