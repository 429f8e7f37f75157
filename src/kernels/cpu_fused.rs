//! Fused CPU ops with hand-written backward passes, for training on the CPU: LayerNorm,
//! softmax over the last dimension, and bias addition. candle composes these from generic ops
//! whose backward passes reduce over leading dimensions one strided element at a time; here
//! each is one parallel pass over rows, and column sums use per-thread partials.
//! Their oracle is candle's composed version (tests below). On other devices the callers keep
//! the composed ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

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

/// Multi-head attention for inference on the CPU, one pass per (row, head): scores, masked
/// softmax and context, reading q, k, v in their (batch, len, hidden) layout and writing the
/// context in the same layout. Replaces head transposes, two batched GEMMs of tiny matrices and
/// the mask broadcast, which dominate attention for short texts. No backward (inference only).
pub(super) struct Attention {
    pub heads: usize,
    /// Additive mask, (batch, len): 0 for tokens, a large negative for padding.
    pub mask: Vec<f32>,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "attention-cpu"
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
        let (batch, len, hidden) = l1.shape().dims3()?;
        let (q, k, v) = (
            f32_slice(s1, l1, "q")?,
            f32_slice(s2, l2, "k")?,
            f32_slice(s3, l3, "v")?,
        );
        let d = hidden / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0f32; batch * len * hidden];
        out.par_chunks_mut(len * hidden)
            .enumerate()
            .for_each(|(b, ctx)| {
                let base = b * len * hidden;
                let mask = &self.mask[b * len..(b + 1) * len];
                let mut p = vec![0f32; len];
                for h in 0..self.heads {
                    for i in 0..len {
                        let qi = &q[base + i * hidden + h * d..][..d];
                        let mut max = f32::NEG_INFINITY;
                        for (j, pj) in p.iter_mut().enumerate() {
                            let kj = &k[base + j * hidden + h * d..][..d];
                            let dot: f32 = qi.iter().zip(kj).map(|(a, b)| a * b).sum();
                            *pj = dot * scale + mask[j];
                            max = max.max(*pj);
                        }
                        let mut sum = 0f32;
                        for pj in p.iter_mut() {
                            *pj = (*pj - max).exp();
                            sum += *pj;
                        }
                        let o = &mut ctx[i * hidden + h * d..][..d];
                        o.iter_mut().for_each(|x| *x = 0.0);
                        for (j, pj) in p.iter().enumerate() {
                            let w = pj / sum;
                            let vj = &v[base + j * hidden + h * d..][..d];
                            for (x, y) in o.iter_mut().zip(vj) {
                                *x += w * y;
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((batch, len, hidden))))
    }
}
