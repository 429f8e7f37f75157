//! Fused CPU ops with hand-written backward passes, for training on the CPU: LayerNorm,
//! softmax over the last dimension, and bias addition. candle composes these from generic ops
//! whose backward passes reduce over leading dimensions one strided element at a time; here
//! each is one parallel pass over rows, and column sums use per-thread partials.
//! Their oracle is candle's composed version (tests below). On other devices the callers keep
//! the composed ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_ops::{dot, exp_le0};
use super::{f32_slice, BiasGeluBackward};

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// Σ over rows of a row-major (rows, cols) matrix, in parallel.
pub(super) fn column_sums(data: &[f32], cols: usize) -> Vec<f32> {
    data.par_chunks(cols * ROWS_PER_TASK)
        .fold(
            || vec![0f32; cols],
            |mut acc, block| {
                for row in block.chunks(cols) {
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a += v;
                    }
                }
                acc
            },
        )
        .reduce(
            || vec![0f32; cols],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
                a
            },
        )
}

fn cpu_tensor(data: Vec<f32>, shape: &Shape) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &candle_core::Device::Cpu)
}

/// y = (x − mean) / sqrt(var + eps) · gamma + beta over the last dimension.
pub(super) struct LayerNorm {
    pub eps: f32,
}

/// Mean and 1/std of one row.
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm-fused"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "x")?;
        let gamma = f32_slice(s2, l2, "gamma")?;
        let beta = f32_slice(s3, l3, "beta")?;
        let d = gamma.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(o, x)| {
                let (mean, rstd) = row_stats(x, self.eps);
                for (((o, v), g), b) in o.iter_mut().zip(x).zip(gamma).zip(beta) {
                    *o = (v - mean) * rstd * g + b;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let x_v = x.flatten_all()?.to_vec1::<f32>()?;
        let g_v = gamma.to_vec1::<f32>()?;
        let dy = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let d = g_v.len();
        let mut dx = vec![0f32; x_v.len()];
        // Per row: x̂ = (x − μ)·rstd, dx̂ = dy·γ, dx = rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)).
        dx.par_chunks_mut(d)
            .zip(x_v.par_chunks(d).zip(dy.par_chunks(d)))
            .for_each(|(dx, (x, dy))| {
                let (mean, rstd) = row_stats(x, self.eps);
                let n = d as f32;
                let (mut sum_dxh, mut sum_dxh_xh) = (0f32, 0f32);
                for ((v, g), dyv) in x.iter().zip(&g_v).zip(dy) {
                    let xh = (v - mean) * rstd;
                    let dxh = dyv * g;
                    sum_dxh += dxh;
                    sum_dxh_xh += dxh * xh;
                }
                let (m1, m2) = (sum_dxh / n, sum_dxh_xh / n);
                for (((o, v), g), dyv) in dx.iter_mut().zip(x).zip(&g_v).zip(dy) {
                    let xh = (v - mean) * rstd;
                    *o = rstd * (dyv * g - m1 - xh * m2);
                }
            });
        // dγ = Σ dy·x̂, dβ = Σ dy over rows.
        let mut dy_xh = vec![0f32; x_v.len()];
        dy_xh
            .par_chunks_mut(d)
            .zip(x_v.par_chunks(d).zip(dy.par_chunks(d)))
            .for_each(|(o, (x, dy))| {
                let (mean, rstd) = row_stats(x, self.eps);
                for ((o, v), dyv) in o.iter_mut().zip(x).zip(dy) {
                    *o = dyv * (v - mean) * rstd;
                }
            });
        let dgamma = cpu_tensor(column_sums(&dy_xh, d), gamma.shape())?;
        let dbeta = cpu_tensor(column_sums(&dy, d), gamma.shape())?;
        Ok((Some(cpu_tensor(dx, x.shape())?), Some(dgamma), Some(dbeta)))
    }
}

/// Softmax over the last dimension with its backward dx = y·(dy − Σ dy·y).
pub(super) struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-fused"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "x")?;
        let d = l.shape().dims().last().copied().unwrap_or(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(x.par_chunks(d * ROWS_PER_TASK))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut s = 0f32;
                    for (o, v) in o.iter_mut().zip(x) {
                        *o = (v - m).exp();
                        s += *o;
                    }
                    let inv = 1.0 / s;
                    o.iter_mut().for_each(|v| *v *= inv);
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let y = res.flatten_all()?.to_vec1::<f32>()?;
        let dy = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let d = res.dims().last().copied().unwrap_or(1);
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(d * ROWS_PER_TASK)
            .zip(
                y.par_chunks(d * ROWS_PER_TASK)
                    .zip(dy.par_chunks(d * ROWS_PER_TASK)),
            )
            .for_each(|(dx, (y, dy))| {
                for ((dx, y), dy) in dx.chunks_mut(d).zip(y.chunks(d)).zip(dy.chunks(d)) {
                    let dot: f32 = y.iter().zip(dy).map(|(a, b)| a * b).sum();
                    for ((o, y), g) in dx.iter_mut().zip(y).zip(dy) {
                        *o = y * (g - dot);
                    }
                }
            });
        Ok(Some(cpu_tensor(dx, res.shape())?))
    }
}

/// x + bias over the last dimension; backward: dx = dy, dbias = column sums of dy.
pub(super) struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "x")?;
        let bias = f32_slice(s2, l2, "bias")?;
        let d = bias.len();
        let mut out = x.to_vec();
        out.par_chunks_mut(d * ROWS_PER_TASK).for_each(|o| {
            for row in o.chunks_mut(d) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = grad.contiguous()?;
        let sums = column_sums(&dy.flatten_all()?.to_vec1::<f32>()?, bias.elem_count());
        Ok((Some(dy), Some(cpu_tensor(sums, bias.shape())?)))
    }
}

/// The bias gradient of bias+GELU from its dx: column sums, computed fast on the CPU.
pub(super) fn bias_gelu_grads(
    x: &Tensor,
    bias: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let dx = x.apply_op3_no_bwd(bias, &grad.contiguous()?, &BiasGeluBackward)?;
    let sums = column_sums(&dx.flatten_all()?.to_vec1::<f32>()?, bias.elem_count());
    Ok((dx, cpu_tensor(sums, bias.shape())?))
}

/// `buf` (rows of `width` values) cut into one mutable slice per sequence, `starts` being the
/// first row of each sequence plus the end.
fn per_sequence<'a>(mut buf: &'a mut [f32], starts: &[usize], width: usize) -> Vec<&'a mut [f32]> {
    starts
        .windows(2)
        .map(|w| {
            let (head, rest) = std::mem::take(&mut buf).split_at_mut((w[1] - w[0]) * width);
            buf = rest;
            head
        })
        .collect()
}

/// Multi-head self-attention over packed sequences (no padding): q, k, v are (tokens, hidden)
/// with sequence `s` in rows `starts[s]..starts[s + 1]`; each token attends to its own
/// sequence only. One pass per (sequence, head) computes scores, softmax, dropout and context,
/// instead of head transposes, padded batched GEMMs of tiny matrices and a mask broadcast. The
/// backward pass recomputes the probabilities (attention is ~2 % of the FLOPs of short texts)
/// rather than keeping (heads × len²) of them per sequence alive.
pub(super) struct VarlenAttention {
    pub heads: usize,
    /// First token row of each sequence, then the total (sequences + 1 entries).
    pub starts: Vec<usize>,
    /// Inverted-dropout factors on the probabilities (0 or 1/keep), per sequence, head, query
    /// and key in that order; `None` in evaluation.
    pub keep: Option<Vec<f32>>,
}

impl VarlenAttention {
    /// Offset of each sequence's block in `keep`.
    fn keep_offsets(&self) -> Vec<usize> {
        let mut offsets = Vec::with_capacity(self.starts.len());
        let mut at = 0;
        for w in self.starts.windows(2) {
            offsets.push(at);
            at += self.heads * (w[1] - w[0]).pow(2);
        }
        offsets
    }

    /// Length of `keep` the op expects.
    pub fn keep_len(heads: usize, starts: &[usize]) -> usize {
        starts
            .windows(2)
            .map(|w| heads * (w[1] - w[0]).pow(2))
            .sum()
    }

    /// Softmax probabilities of query `i` over the `len` keys of one head, into `p`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn probs(
        q: &[f32],
        k: &[f32],
        hidden: usize,
        col: usize,
        d: usize,
        i: usize,
        scale: f32,
        p: &mut [f32],
    ) {
        let qi = &q[i * hidden + col..][..d];
        let mut max = f32::NEG_INFINITY;
        for (j, pj) in p.iter_mut().enumerate() {
            *pj = dot(qi, &k[j * hidden + col..][..d]) * scale;
            max = max.max(*pj);
        }
        let mut sum = 0f32;
        for pj in p.iter_mut() {
            *pj = exp_le0(*pj - max);
            sum += *pj;
        }
        let inv = 1.0 / sum;
        p.iter_mut().for_each(|v| *v *= inv);
    }
}

impl CustomOp3 for VarlenAttention {
    fn name(&self) -> &'static str {
        "varlen-attention-cpu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (tokens, hidden) = l1.shape().dims2()?;
        let (q, k, v) = (
            f32_slice(s1, l1, "q")?,
            f32_slice(s2, l2, "k")?,
            f32_slice(s3, l3, "v")?,
        );
        let heads = self.heads;
        let keep_at = self.keep_offsets();
        let mut out = vec![0f32; tokens * hidden];
        per_sequence(&mut out, &self.starts, hidden)
            .into_par_iter()
            .enumerate()
            .for_each(|(s, ctx)| {
                let (a, len) = (self.starts[s], self.starts[s + 1] - self.starts[s]);
                let keep = self.keep.as_ref().map(|keep| &keep[keep_at[s]..]);
                let (q, k, v) = (&q[a * hidden..], &k[a * hidden..], &v[a * hidden..]);
                attend(ctx, q, k, v, len, heads, keep);
            });
        Ok((CpuStorage::F32(out), Shape::from((tokens, hidden))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (tokens, hidden) = q.dims2()?;
        let host = |t: &Tensor| t.contiguous()?.flatten_all()?.to_vec1::<f32>();
        let (q, k, v, dctx) = (host(q)?, host(k)?, host(v)?, host(grad)?);
        let heads = self.heads;
        let keep_at = self.keep_offsets();
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; tokens * hidden],
            vec![0f32; tokens * hidden],
            vec![0f32; tokens * hidden],
        );
        let dq_s = per_sequence(&mut dq, &self.starts, hidden);
        let dk_s = per_sequence(&mut dk, &self.starts, hidden);
        let dv_s = per_sequence(&mut dv, &self.starts, hidden);
        dq_s.into_par_iter()
            .zip(dk_s.into_par_iter().zip(dv_s))
            .enumerate()
            .for_each(|(s, (dq, (dk, dv)))| {
                let (a, len) = (self.starts[s], self.starts[s + 1] - self.starts[s]);
                let keep = self.keep.as_ref().map(|keep| &keep[keep_at[s]..]);
                let inputs = (&q[a * hidden..], &k[a * hidden..], &v[a * hidden..]);
                attend_grad(dq, dk, dv, inputs, &dctx[a * hidden..], len, heads, keep);
            });
        let shape = Shape::from((tokens, hidden));
        Ok((
            Some(cpu_tensor(dq, &shape)?),
            Some(cpu_tensor(dk, &shape)?),
            Some(cpu_tensor(dv, &shape)?),
        ))
    }
}

multiversion! {
    /// One packed sequence's attention (`len` tokens, rows `hidden` wide, `heads` heads) into
    /// `ctx`; `keep` holds its dropout factors (head, query, key order), if any.
    fn attend(ctx: &mut [f32], q: &[f32], k: &[f32], v: &[f32], len: usize, heads: usize, keep: Option<&[f32]>) {
        let hidden = ctx.len() / len.max(1);
        let d = hidden / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut p = vec![0f32; len];
        for h in 0..heads {
            let col = h * d;
            for i in 0..len {
                VarlenAttention::probs(q, k, hidden, col, d, i, scale, &mut p);
                if let Some(keep) = keep {
                    let m = &keep[(h * len + i) * len..][..len];
                    p.iter_mut().zip(m).for_each(|(x, m)| *x *= m);
                }
                let o = &mut ctx[i * hidden + col..][..d];
                for (j, w) in p.iter().enumerate() {
                    let vj = &v[j * hidden + col..][..d];
                    for (x, y) in o.iter_mut().zip(vj) {
                        *x += w * y;
                    }
                }
            }
        }
    }
}

multiversion! {
    /// The backward of [`attend`] for one sequence: recomputes the probabilities, adds into
    /// `dq`, `dk`, `dv` (rows of this sequence) from `dctx`.
    #[allow(clippy::too_many_arguments)]
    fn attend_grad(dq: &mut [f32], dk: &mut [f32], dv: &mut [f32], inputs: (&[f32], &[f32], &[f32]), dctx: &[f32], len: usize, heads: usize, keep: Option<&[f32]>) {
        let (q, k, v) = inputs;
        let hidden = dq.len() / len.max(1);
        let d = hidden / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let (mut p, mut dp) = (vec![0f32; len], vec![0f32; len]);
        for h in 0..heads {
            let col = h * d;
            for i in 0..len {
                VarlenAttention::probs(q, k, hidden, col, d, i, scale, &mut p);
                let m = keep.map(|keep| &keep[(h * len + i) * len..][..len]);
                let gi = &dctx[i * hidden + col..][..d];
                // dv_j += p̃_ij·dctx_i;  dp_ij = (dctx_i · v_j)·keep_ij.
                for j in 0..len {
                    let mj = m.map_or(1.0, |m| m[j]);
                    let w = p[j] * mj;
                    let vj = &v[j * hidden + col..][..d];
                    let dvj = &mut dv[j * hidden + col..][..d];
                    for (o, g) in dvj.iter_mut().zip(gi) {
                        *o += w * g;
                    }
                    dp[j] = dot(gi, vj) * mj;
                }
                // Softmax backward: ds_ij = p_ij·(dp_ij − Σ_j p_ij·dp_ij), scaled.
                let row_dot = dot(&p, &dp);
                let qi = &q[i * hidden + col..][..d];
                for j in 0..len {
                    let ds = p[j] * (dp[j] - row_dot) * scale;
                    let kj = &k[j * hidden + col..][..d];
                    let dqi = &mut dq[i * hidden + col..][..d];
                    for (o, y) in dqi.iter_mut().zip(kj) {
                        *o += ds * y;
                    }
                    let dkj = &mut dk[j * hidden + col..][..d];
                    for (o, y) in dkj.iter_mut().zip(qi) {
                        *o += ds * y;
                    }
                }
            }
        }
    }
}
