//! From labelled rows to training batches: the label map, a seeded stratified hold-out, class
//! weights, and length-bucketed batches that are short (little padding) and still random.

use std::collections::BTreeSet;

use crate::rng::Rng;

/// Class names in index order: the sorted distinct training labels (as the reference does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    pub names: Vec<String>,
}

impl LabelMap {
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Self {
        let set: BTreeSet<&str> = labels.into_iter().collect();
        Self {
            names: set.into_iter().map(String::from).collect(),
        }
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|n| n.as_str().cmp(name)).ok()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Row indices of a stratified split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub holdout: Vec<usize>,
}

/// Hold out `fraction` of each class (rounded), chosen by a seeded shuffle. Returns the class
/// that would be left without training or hold-out rows, if any.
pub fn stratified_split(
    labels: &[usize],
    classes: usize,
    fraction: f64,
    seed: u64,
) -> Result<Split, (usize, usize)> {
    let mut rng = Rng::new(seed);
    let mut train = Vec::new();
    let mut holdout = Vec::new();
    for class in 0..classes {
        let mut rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        rng.shuffle(&mut rows);
        let n_hold = (rows.len() as f64 * fraction).round() as usize;
        if fraction > 0.0 && (n_hold == 0 || n_hold >= rows.len()) {
            return Err((class, rows.len()));
        }
        holdout.extend_from_slice(&rows[..n_hold]);
        train.extend_from_slice(&rows[n_hold..]);
    }
    train.sort_unstable();
    holdout.sort_unstable();
    Ok(Split { train, holdout })
}

/// `balanced` class weights n / (K · count_c), counted on the rows trained on.
pub fn balanced_weights(labels: &[usize], classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; classes];
    for &l in labels {
        counts[l] += 1;
    }
    counts
        .iter()
        .map(|&c| labels.len() as f32 / (classes as f32 * c.max(1) as f32))
        .collect()
}

/// Batches for one epoch: shuffle all rows, sort windows of `window_batches` batches by token
/// length, cut them into batches, then shuffle the batch order. Each batch holds rows of similar
/// length (little padding) while the epoch order stays random.
pub fn bucketed_batches(
    lengths: &[usize],
    batch_size: usize,
    window_batches: usize,
    rng: &mut Rng,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut order);
    let mut batches = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for window in order.chunks_mut(batch_size * window_batches.max(1)) {
        window.sort_by_key(|&i| lengths[i]);
        batches.extend(window.chunks(batch_size).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut batches);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sorted_and_indexed() {
        let m = LabelMap::from_labels(["b", "a", "c", "a"]);
        assert_eq!(m.names, ["a", "b", "c"]);
        assert_eq!(m.index("c"), Some(2));
        assert_eq!(m.index("z"), None);
    }

    #[test]
    fn split_is_stratified_disjoint_and_seeded() {
        let labels: Vec<usize> = (0..1000).map(|i| if i % 10 == 0 { 1 } else { 0 }).collect();
        let s = stratified_split(&labels, 2, 0.1, 42).unwrap();
        assert_eq!(s.holdout.len(), 100);
        assert_eq!(s.holdout.iter().filter(|&&i| labels[i] == 1).count(), 10);
        let mut all: Vec<usize> = s.train.iter().chain(&s.holdout).copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(s, stratified_split(&labels, 2, 0.1, 42).unwrap());
        assert_ne!(s, stratified_split(&labels, 2, 0.1, 43).unwrap());
    }

    #[test]
    fn split_refuses_to_empty_a_class() {
        let labels = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
        assert_eq!(stratified_split(&labels, 2, 0.1, 1), Err((1, 2)));
    }

    /// Reference: the full products training split gives [1.8272, 0.5942, 0.7734, 0.8461, 3.3905]
    /// with counts [4433, 13632, 10473, 9573, 2389] (n = 40500).
    #[test]
    fn balanced_weights_match_the_reference_formula() {
        let counts = [4433usize, 13632, 10473, 9573, 2389];
        let labels: Vec<usize> = counts
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(c, n))
            .collect();
        let w = balanced_weights(&labels, 5);
        let want = [1.827_205, 0.594_190_1, 0.773_417_4, 0.846_129_7, 3.390_54];
        for (g, w) in w.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn buckets_cover_every_row_once_and_pad_little() {
        let mut rng = Rng::new(3);
        let lengths: Vec<usize> = (0..1000).map(|_| 3 + rng.below(40)).collect();
        let batches = bucketed_batches(&lengths, 32, 50, &mut Rng::new(9));
        let mut seen: Vec<usize> = batches.concat();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        let padded: usize = batches
            .iter()
            .map(|b| b.len() * b.iter().map(|&i| lengths[i]).max().unwrap())
            .sum();
        let real: usize = lengths.iter().sum();
        assert!(
            (padded as f64) < 1.1 * real as f64,
            "padding {padded} vs {real}"
        );
        assert_ne!(
            batches,
            bucketed_batches(&lengths, 32, 50, &mut Rng::new(10))
        );
    }
}
