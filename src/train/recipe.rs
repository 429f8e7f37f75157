//! The parts of the training recipe beyond the reference's: how an epoch's rows are drawn
//! ([`Sampler`]), and the learning rate of each parameter under layer-wise decay.

use super::Hyper;
use crate::checkpoint::meta::Sampler;
use crate::data::batch::bucketed_batches;
use crate::rng::Rng;

/// One epoch's batches of training-row indices. `Random`: every row once, through
/// [`bucketed_batches`]. `Balanced`: as many draws as rows, each a class chosen uniformly among
/// the classes present and then a row of it uniformly (with replacement), the draws then
/// batched the same way.
pub fn epoch_batches(
    hyper: &Hyper,
    lengths: &[usize],
    labels: &[usize],
    rng: &mut Rng,
) -> Vec<Vec<usize>> {
    match hyper.sampler {
        Sampler::Random => bucketed_batches(lengths, hyper.batch_size, hyper.bucket_window, rng),
        Sampler::Balanced => {
            let drawn = balanced_draws(labels, rng);
            let drawn_lengths: Vec<usize> = drawn.iter().map(|&i| lengths[i]).collect();
            bucketed_batches(&drawn_lengths, hyper.batch_size, hyper.bucket_window, rng)
                .into_iter()
                .map(|batch| batch.into_iter().map(|j| drawn[j]).collect())
                .collect()
        }
    }
}

/// `labels.len()` row indices drawn with replacement, every class present equally likely.
fn balanced_draws(labels: &[usize], rng: &mut Rng) -> Vec<usize> {
    let classes = labels.iter().max().map_or(0, |&m| m + 1);
    let mut rows_of: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &y) in labels.iter().enumerate() {
        rows_of[y].push(i);
    }
    rows_of.retain(|rows| !rows.is_empty());
    (0..labels.len())
        .map(|_| {
            let rows = &rows_of[rng.below(rows_of.len())];
            rows[rng.below(rows.len())]
        })
        .collect()
}

/// The learning-rate factor of each named parameter under layer-wise decay `decay` (1 = all
/// 1): with L encoder layers, the classifier and pooler are at depth L + 1, encoder layer i at
/// depth i + 1 and the embeddings at 0, and a parameter at depth d trains at
/// `decay^(L + 1 − d)` times the learning rate. Names follow transformers' BERT
/// (`….encoder.layer.{i}.…`, `….embeddings.…`); any other parameter counts as the head.
pub fn layer_lr_scales<'a>(names: impl IntoIterator<Item = &'a str>, decay: f64) -> Vec<f64> {
    let names: Vec<&str> = names.into_iter().collect();
    let layer_of = |name: &str| -> Option<usize> {
        let rest = name.split(".layer.").nth(1)?;
        name.contains("encoder.layer.")
            .then(|| rest.split('.').next()?.parse().ok())
            .flatten()
    };
    let layers = names
        .iter()
        .filter_map(|n| layer_of(n))
        .max()
        .map_or(0, |m| m + 1);
    names
        .iter()
        .map(|name| {
            let depth = if let Some(i) = layer_of(name) {
                i + 1
            } else if name.contains("embeddings.") {
                0
            } else {
                layers + 1
            };
            decay.powi((layers + 1 - depth) as i32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_draws_make_classes_equally_frequent() {
        // 90 rows of class 0, 9 of class 2, 1 of class 3; class 1 absent.
        let mut labels = vec![0; 90];
        labels.extend([2; 9]);
        labels.push(3);
        let hyper = Hyper {
            sampler: Sampler::Balanced,
            batch_size: 7,
            ..Hyper::default()
        };
        let lengths = vec![5; labels.len()];
        let mut counts = [0usize; 4];
        let mut batches = 0;
        for epoch in 0..300 {
            let b = epoch_batches(&hyper, &lengths, &labels, &mut Rng::new(epoch));
            assert_eq!(b.concat().len(), labels.len(), "one draw per row");
            assert_eq!(b.len(), labels.len().div_ceil(7));
            for row in b.concat() {
                counts[labels[row]] += 1;
            }
            batches += b.len();
        }
        assert_eq!(batches, 300 * 15);
        assert_eq!(counts[1], 0);
        for c in [0, 2, 3] {
            let share = counts[c] as f64 / 30_000.0;
            assert!((share - 1.0 / 3.0).abs() < 0.01, "class {c}: {share}");
        }
        // The same seed draws the same epoch (resume replays it).
        assert_eq!(
            epoch_batches(&hyper, &lengths, &labels, &mut Rng::new(7)),
            epoch_batches(&hyper, &lengths, &labels, &mut Rng::new(7))
        );
    }

    #[test]
    fn random_sampler_is_the_plain_epoch() {
        let hyper = Hyper::default();
        let lengths = [3, 1, 4, 1, 5];
        assert_eq!(
            epoch_batches(&hyper, &lengths, &[0, 1, 0, 1, 0], &mut Rng::new(3)),
            bucketed_batches(&lengths, 32, 1, &mut Rng::new(3))
        );
    }

    #[test]
    fn layer_scales_fall_by_depth() {
        let names = [
            "bert.embeddings.word_embeddings.weight",
            "bert.encoder.layer.0.attention.self.query.weight",
            "bert.encoder.layer.1.output.LayerNorm.bias",
            "bert.pooler.dense.weight",
            "classifier.weight",
        ];
        let s = layer_lr_scales(names, 0.5);
        assert_eq!(s, vec![0.125, 0.25, 0.5, 1.0, 1.0]);
        assert_eq!(layer_lr_scales(names, 1.0), vec![1.0; 5]);
    }
}
