//! From labelled rows to training batches: the label map, a seeded stratified hold-out, class
//! weights (batches: [`super::batch`]).

use std::collections::BTreeSet;

use crate::rng::Rng;

/// Class names in index order: the sorted distinct training labels (as the reference does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    /// Class names, sorted; a class's index is its position here.
    pub names: Vec<String>,
}

impl LabelMap {
    /// The map of the distinct labels in `labels`, sorted.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Self {
        let set: BTreeSet<&str> = labels.into_iter().collect();
        Self {
            names: set.into_iter().map(String::from).collect(),
        }
    }

    /// The index of class `name`, or `None` if it is not a class.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|n| n.as_str().cmp(name)).ok()
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Row indices of a stratified split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Rows to train on, in ascending order.
    pub train: Vec<usize>,
    /// Rows held out for evaluation, in ascending order.
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
}
