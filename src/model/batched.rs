//! Running a model over many rows: length-sorted batches (little padding on the GPU), softmax
//! on the device, top-k per row with ties broken by class index, results in input order.
//! Inference and training's evaluation both go through here.

use candle_core::{DType, Tensor};

use crate::data::batch::{length_batches, TokenBatch};
use crate::error::{with_batch_size, CandleContext, Result};
use crate::model::{BertClassifier, Mode};

/// How the library reports progress without printing (a front end draws the bar).
pub trait Progress {
    /// `rows` more rows are done.
    fn advance(&self, _rows: usize) {}
}

/// Progress that goes nowhere.
pub struct Quiet;
impl Progress for Quiet {}

/// The k best classes of every row, row-major: row `r` holds `classes[r*k..(r+1)*k]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    /// Classes per row.
    pub k: usize,
    /// Class indices, `k` per row, best first.
    pub classes: Vec<u32>,
    /// Their probabilities.
    pub probs: Vec<f32>,
}

impl TopK {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.classes.len().checked_div(self.k).unwrap_or(0)
    }

    /// (class, probability) pairs of row `r`, best first.
    pub fn row(&self, r: usize) -> impl Iterator<Item = (u32, f32)> + '_ {
        let span = r * self.k..(r + 1) * self.k;
        self.classes[span.clone()]
            .iter()
            .copied()
            .zip(self.probs[span].iter().copied())
    }
}

/// Indices of the `k` largest values, ties broken by the lower index.
pub fn top_k_indices(values: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..values.len() as u32).collect();
    // total_cmp: NaN never panics the sort; stable sort keeps lower indices first on ties.
    idx.sort_by(|&a, &b| values[b as usize].total_cmp(&values[a as usize]));
    idx.truncate(k);
    idx
}

/// Run the model over `encoded` in length-sorted batches, handing each batch's input row
/// indices and logits to `each`. Running out of device memory names `batch_size`.
fn for_each_batch(
    model: &BertClassifier,
    encoded: &[Vec<u32>],
    pad_id: u32,
    batch_size: usize,
    progress: &dyn Progress,
    mut each: impl FnMut(&[usize], &Tensor) -> Result<()>,
) -> Result<()> {
    let lengths: Vec<usize> = encoded.iter().map(Vec::len).collect();
    let batches = length_batches(&lengths, batch_size);
    let run = |rows: &Vec<usize>| -> Result<Tensor> {
        let batch = TokenBatch::select(encoded, rows, pad_id);
        with_batch_size(
            model
                .forward(&batch, &mut Mode::Eval)
                .ctx("running the model"),
            batch_size,
        )
    };
    // On the CPU, batches of short texts are too small for every thread to help inside one
    // forward pass (two threads added 18 % to one); running one batch per thread at a time
    // keeps them busy. Each batch is computed exactly as alone, so results do not change.
    let lanes = match std::env::var("CATBERT_INFER_LANES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => n,
        None if model.on_cpu() => rayon::current_num_threads(),
        None => 1,
    };
    for group in batches.chunks(lanes.max(1)) {
        let group = balanced(group, &lengths);
        let group = &group[..];
        let logits: Vec<Result<Tensor>> = if group.len() > 1 {
            use rayon::prelude::*;
            group.par_iter().map(run).collect()
        } else {
            group.iter().map(run).collect()
        };
        for (rows, logits) in group.iter().zip(logits) {
            each(rows, &logits?)?;
            progress.advance(rows.len());
        }
    }
    Ok(())
}

/// The rows of batches that run side by side, dealt out again in length order so each gets a
/// like share of tokens: a group of a few rows' worth of length-sorted batches (the streaming
/// worker's chunks) otherwise pairs the shortest batch with the longest, and one thread waits.
/// Each row's result does not depend on its batch-mates, so outputs do not change.
fn balanced(group: &[Vec<usize>], lengths: &[usize]) -> Vec<Vec<usize>> {
    if group.len() < 2 {
        return group.to_vec();
    }
    let mut rows = group.concat();
    rows.sort_by_key(|&r| lengths[r]);
    let mut out = vec![Vec::with_capacity(rows.len() / group.len() + 1); group.len()];
    for (i, r) in rows.into_iter().enumerate() {
        out[i % group.len()].push(r);
    }
    out
}

/// Class probabilities of every encoded row, in input order (row-major, `num_labels` each).
pub fn predict_probs(
    model: &BertClassifier,
    encoded: &[Vec<u32>],
    pad_id: u32,
    batch_size: usize,
    progress: &dyn Progress,
) -> Result<Vec<f32>> {
    let classes = model.num_labels();
    let mut probs = vec![0f32; encoded.len() * classes];
    for_each_batch(
        model,
        encoded,
        pad_id,
        batch_size,
        progress,
        |batch, logits| {
            let p = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32).ctx("softmax")?)
                .and_then(|p| p.to_vec2::<f32>())
                .ctx("softmax")?;
            for (&row, values) in batch.iter().zip(p) {
                probs[row * classes..(row + 1) * classes].copy_from_slice(&values);
            }
            Ok(())
        },
    )?;
    Ok(probs)
}

/// The `k` best classes of every encoded row with their probabilities, in input order. Softmax
/// and top-k run on the device (kernels::softmax_top_k), so only k values per row come back.
pub fn predict_top_k(
    model: &BertClassifier,
    encoded: &[Vec<u32>],
    pad_id: u32,
    batch_size: usize,
    k: usize,
    progress: &dyn Progress,
) -> Result<TopK> {
    let k = k.min(model.num_labels());
    let mut out = TopK {
        k,
        classes: vec![0; encoded.len() * k],
        probs: vec![0.0; encoded.len() * k],
    };
    for_each_batch(
        model,
        encoded,
        pad_id,
        batch_size,
        progress,
        |batch, logits| {
            let (classes, probs) =
                crate::kernels::softmax_top_k(logits, k).ctx("softmax and top-k")?;
            for (j, &row) in batch.iter().enumerate() {
                out.classes[row * k..(row + 1) * k].copy_from_slice(&classes[j * k..(j + 1) * k]);
                out.probs[row * k..(row + 1) * k].copy_from_slice(&probs[j * k..(j + 1) * k]);
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// The `k` best classes of every text of one batch with their probabilities, in batch order:
/// the call a dynamic batcher makes with the batch it assembled.
pub fn batch_top_k(model: &BertClassifier, batch: &TokenBatch, k: usize) -> Result<TopK> {
    let k = k.min(model.num_labels());
    let logits = model
        .forward(batch, &mut Mode::Eval)
        .ctx("running the model")?;
    let (classes, probs) = crate::kernels::softmax_top_k(&logits, k).ctx("softmax and top-k")?;
    Ok(TopK { k, classes, probs })
}

/// The logits of every text of one batch, row-major (`num_labels` per row), in batch order, as
/// f32 whatever the compute precision.
pub fn batch_logits(model: &BertClassifier, batch: &TokenBatch) -> Result<Vec<f32>> {
    let logits = model
        .forward(batch, &mut Mode::Eval)
        .ctx("running the model")?;
    logits
        .to_dtype(DType::F32)
        .and_then(|l| l.flatten_all())
        .and_then(|l| l.to_vec1::<f32>())
        .ctx("reading the logits")
}

/// Top-k of row-major probabilities with `classes` columns.
pub fn top_k(probs: &[f32], classes: usize, k: usize) -> TopK {
    let k = k.min(classes);
    let mut out = TopK {
        k,
        classes: Vec::with_capacity(probs.len() / classes.max(1) * k),
        probs: Vec::with_capacity(probs.len() / classes.max(1) * k),
    };
    for row in probs.chunks(classes) {
        for c in top_k_indices(row, k) {
            out.classes.push(c);
            out.probs.push(row[c as usize]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_lower_class_index() {
        assert_eq!(
            top_k_indices(&[0.1, 0.3, 0.3, 0.2, 0.1], 5),
            vec![1, 2, 3, 0, 4]
        );
        assert_eq!(top_k_indices(&[0.25; 4], 2), vec![0, 1]);
        let t = top_k(&[0.5, 0.5, 0.0, 0.2, 0.2, 0.6], 3, 2);
        assert_eq!(t.classes, vec![0, 1, 2, 0]);
        assert_eq!(t.row(1).collect::<Vec<_>>(), vec![(2, 0.6), (0, 0.2)]);
    }
}
