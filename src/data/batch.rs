//! Batching in one place: which rows go together (length-sorted batches for inference,
//! bucketed random batches for training) and the [`TokenBatch`] the model's forward takes.

use candle_core::{Device, Result, Tensor};

use crate::rng::Rng;

/// Tokenised texts of one batch, back to back without padding, with the cumulative sequence
/// lengths: text `s` is `ids()[starts()[s]..starts()[s + 1]]`. The CPU runs it as it is
/// (packed: padding costs nothing); [`TokenBatch::padded`] is the right-padded view with an
/// attention mask, for the GPU path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    ids: Vec<u32>,
    starts: Vec<usize>,
    pad_id: u32,
}

impl TokenBatch {
    /// The batch of `rows`; `pad_id` fills the padded view.
    pub fn new(rows: &[&[u32]], pad_id: u32) -> Self {
        let total = rows.iter().map(|r| r.len()).sum();
        let mut ids = Vec::with_capacity(total);
        let mut starts = Vec::with_capacity(rows.len() + 1);
        starts.push(0);
        for row in rows {
            ids.extend_from_slice(row);
            starts.push(ids.len());
        }
        Self {
            ids,
            starts,
            pad_id,
        }
    }

    /// The batch of `encoded[i]` for each `i` of `indices`, in that order.
    pub fn select(encoded: &[Vec<u32>], indices: &[usize], pad_id: u32) -> Self {
        let rows: Vec<&[u32]> = indices.iter().map(|&i| encoded[i].as_slice()).collect();
        Self::new(&rows, pad_id)
    }

    /// Number of texts.
    pub fn rows(&self) -> usize {
        self.starts.len() - 1
    }

    /// Number of real tokens.
    pub fn tokens(&self) -> usize {
        self.ids.len()
    }

    /// The longest text's length (the padded width).
    pub fn max_len(&self) -> usize {
        self.starts
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }

    /// Token ids, texts back to back.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Cumulative sequence lengths: `rows() + 1` offsets into [`TokenBatch::ids`].
    pub fn starts(&self) -> &[usize] {
        &self.starts
    }

    /// Each token's position within its text.
    pub fn positions(&self) -> Vec<u32> {
        let mut positions = Vec::with_capacity(self.ids.len());
        for w in self.starts.windows(2) {
            positions.extend(0..(w[1] - w[0]) as u32);
        }
        positions
    }

    /// Whether every text has at least one token (packed attention needs that).
    pub fn no_empty_rows(&self) -> bool {
        self.starts.windows(2).all(|w| w[1] > w[0])
    }

    /// The right-padded view on `device`: `(input_ids, attention_mask)`, both (rows, max_len),
    /// u32 ids padded with the pad id and a u8 mask of 1 for tokens, 0 for padding.
    pub fn padded(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let len = self.max_len();
        let rows = self.rows();
        let mut ids = Vec::with_capacity(rows * len);
        let mut mask = Vec::with_capacity(rows * len);
        for w in self.starts.windows(2) {
            let n = w[1] - w[0];
            ids.extend_from_slice(&self.ids[w[0]..w[1]]);
            ids.extend(std::iter::repeat_n(self.pad_id, len - n));
            mask.extend(std::iter::repeat_n(1u8, n));
            mask.extend(std::iter::repeat_n(0u8, len - n));
        }
        Ok((
            Tensor::from_vec(ids, (rows, len), device)?,
            Tensor::from_vec(mask, (rows, len), device)?,
        ))
    }
}

/// Pad `rows` to the longest; returns (input_ids, attention_mask) as (batch, len) tensors.
pub fn collate(rows: &[&[u32]], pad_id: u32, device: &Device) -> Result<(Tensor, Tensor)> {
    TokenBatch::new(rows, pad_id).padded(device)
}

/// Row indices grouped into batches of at most `batch_size`, shortest rows first, so rows of
/// similar length share a batch. Stable: equal lengths keep input order.
pub fn length_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Batches for one training epoch: shuffle all rows, sort windows of `window_batches` batches
/// by token length, cut them into batches, then shuffle the batch order. Each batch holds rows
/// of similar length (little padding) while the epoch order stays random; a window of 1 gives
/// plain random batches.
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
    fn batches_group_by_length_and_cover_every_row_once() {
        let lengths = [5, 2, 9, 2, 7, 3, 5];
        let batches = length_batches(&lengths, 3);
        assert_eq!(batches, vec![vec![1, 3, 5], vec![0, 6, 4], vec![2]]);
        let mut seen: Vec<usize> = batches.concat();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
    }

    #[test]
    fn collate_pads_and_masks() {
        let (ids, mask) = collate(&[&[1, 2, 3], &[4]], 0, &Device::Cpu).unwrap();
        assert_eq!(
            ids.to_vec2::<u32>().unwrap(),
            vec![vec![1, 2, 3], vec![4, 0, 0]]
        );
        assert_eq!(
            mask.to_vec2::<u8>().unwrap(),
            vec![vec![1, 1, 1], vec![1, 0, 0]]
        );
    }

    #[test]
    fn packed_batch_keeps_texts_back_to_back() {
        let b = TokenBatch::select(&[vec![7, 8], vec![1, 2, 3], vec![9]], &[1, 0], 0);
        assert_eq!(b.ids(), &[1, 2, 3, 7, 8]);
        assert_eq!(b.starts(), &[0, 3, 5]);
        assert_eq!(b.positions(), vec![0, 1, 2, 0, 1]);
        assert_eq!((b.rows(), b.tokens(), b.max_len()), (2, 5, 3));
        assert!(b.no_empty_rows());
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
