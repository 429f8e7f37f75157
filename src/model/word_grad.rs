//! The word-embedding gradient of a CPU training step, kept in one dense buffer across steps.
//!
//! Through candle's autograd, the lookup `word.index_select(ids)` gives the 30,522 × 384 table
//! (47 MB for MiniLM) a fresh zeroed gradient every step, copied once more by `index_add`,
//! although a batch touches a few hundred rows. Here the looked-up rows are a leaf of the
//! graph instead; after the backward pass their gradient is added into a buffer that lives
//! across steps, whose rows of the previous step are zeroed first. The values are those of
//! candle's path bit for bit (the same rows added in the same order onto zeros), so AdamW,
//! which still updates every row (its moments decay), takes the same step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Result, Tensor, Var};

/// The switch and state of the kept word-embedding gradient (off until a training loop turns
/// it on: a caller that reads gradients itself gets candle's).
#[derive(Default)]
pub(super) struct WordGrad {
    on: AtomicBool,
    /// This step's looked-up rows as a leaf variable, with the ids they came from.
    input: Mutex<Option<(Var, Vec<u32>)>>,
    /// The dense gradient and the rows it holds values in.
    buffer: Mutex<Option<(Tensor, Vec<u32>)>>,
}

fn poisoned<T>(_: T) -> candle_core::Error {
    candle_core::Error::Msg("word-embedding gradient: a lock was poisoned".into())
}

impl WordGrad {
    /// Turn the kept gradient on or off; it stays off unless `word` is an f32 table on the
    /// CPU. Returns whether it is on.
    pub(super) fn set(&self, word: &Tensor, on: bool) -> bool {
        let on = on && word.device().is_cpu() && word.dtype() == DType::F32;
        self.on.store(on, Ordering::Relaxed);
        on
    }

    /// The rows of `word` for the flat u32 `ids`. When on and `train`, they are a leaf of
    /// the graph (the table stays out of it) and [`Self::finish`] gives the table its gradient.
    pub(super) fn lookup(&self, word: &Tensor, ids: &Tensor, train: bool) -> Result<Tensor> {
        if !(train && self.on.load(Ordering::Relaxed)) {
            return word.index_select(ids, 0);
        }
        let rows = Var::from_tensor(&word.detach().index_select(ids, 0)?)?;
        let ids = ids.to_vec1::<u32>()?;
        *self.input.lock().map_err(poisoned)? = Some((rows.clone(), ids));
        Ok(rows.as_tensor().clone())
    }

    /// After `backward`: the last lookup's gradient added into the kept buffer, handed to
    /// `grads` as `word`'s. The buffer is rewritten by the next step's call, so `grads` must
    /// not outlive the step. A no-op when off or when nothing was looked up.
    pub(super) fn finish(&self, word: &Tensor, grads: &mut GradStore) -> Result<()> {
        let Some((rows, ids)) = self.input.lock().map_err(poisoned)?.take() else {
            return Ok(());
        };
        let Some(g) = grads.remove(rows.as_tensor()) else {
            return Ok(());
        };
        let g = g.to_dtype(DType::F32)?.contiguous()?;
        let mut kept = self.buffer.lock().map_err(poisoned)?;
        if kept.is_none() {
            *kept = Some((word.zeros_like()?, Vec::new()));
        }
        let Some((buffer, touched)) = kept.as_mut() else {
            unreachable!("set above")
        };
        buffer.inplace_op2(
            &g,
            &AddRows {
                clear: touched,
                ids: &ids,
                width: word.dim(1)?,
            },
        )?;
        let mut now = ids;
        now.sort_unstable();
        now.dedup();
        *touched = now;
        grads.insert(word, buffer.clone());
        Ok(())
    }
}

impl super::BertClassifier {
    /// Keep the word-embedding gradient in one buffer across training steps instead of a
    /// fresh dense tensor per step (CPU, f32 only; same values): the training loop then calls
    /// [`Self::finish_gradients`] after every backward pass. Returns whether it is on.
    pub fn keep_word_gradient(&self, on: bool) -> bool {
        self.embeddings.grad.set(&self.embeddings.word, on)
    }

    /// Complete `grads` after a training step's backward pass (the kept word-embedding
    /// gradient, see [`Self::keep_word_gradient`]); `grads` must not outlive the step.
    pub fn finish_gradients(&self, grads: &mut candle_core::backprop::GradStore) -> Result<()> {
        self.embeddings.grad.finish(&self.embeddings.word, grads)
    }
}

/// Zero the rows `clear` of a (rows, width) table, then add row `i` of the source into row
/// `ids[i]`, in order (as candle's `index_add` does onto zeros).
struct AddRows<'a> {
    clear: &'a [u32],
    ids: &'a [u32],
    width: usize,
}

impl InplaceOp2 for AddRows<'_> {
    fn name(&self) -> &'static str {
        "word-gradient-add-rows"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(table), Some((a, b))) = (s1, l1.contiguous_offsets()) else {
            candle_core::bail!("word gradient: expected a contiguous f32 table")
        };
        let table = &mut table[a..b];
        let src = crate::kernels::f32_slice(s2, l2, "word gradient")?;
        let w = self.width;
        if src.len() != self.ids.len() * w {
            candle_core::bail!(
                "word gradient: {} values for {} ids",
                src.len(),
                self.ids.len()
            )
        }
        let rows = table.len() / w;
        for &r in self.clear.iter().chain(self.ids) {
            if r as usize >= rows {
                candle_core::bail!("word gradient: row {r} of {rows}")
            }
        }
        for &r in self.clear {
            table[r as usize * w..][..w].fill(0.0);
        }
        for (g, &r) in src.chunks_exact(w).zip(self.ids) {
            for (d, &s) in table[r as usize * w..][..w].iter_mut().zip(g) {
                *d += s;
            }
        }
        Ok(())
    }
}
