//! Our fused kernels. Each op runs on the CPU (its `cpu_fwd`, the test oracle) and, in a `cuda`
//! build, on the GPU with the matching kernel of `kernels/catbert.cu`. Model-agnostic: plain
//! tensors in, tensors out.

/// A public function whose body is compiled twice: for the build's baseline target and, on
/// x86-64, for AVX2 + FMA, picked at run time (the crate targets baseline x86-64, where the
/// compiler vectorises these loops with 4-wide SSE only). Same operations in the same order
/// either way: results do not depend on which copy runs.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide($($arg: $ty),*) $body
                if $crate::kernels::gemm::Isa::detect() != $crate::kernels::gemm::Isa::Portable {
                    // SAFETY: Isa::detect() found AVX2 and FMA on this CPU.
                    return unsafe { wide($($arg),*) };
                }
            }
            $body
        }
    };
}

mod cpu_fused;
pub mod cpu_ops;
#[cfg(feature = "cuda")]
mod cuda;
pub mod gemm;
pub mod gemm_i8;
pub mod selfcheck;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};
use rayon::prelude::*;

/// The contiguous f32 data of a CPU tensor argument.
pub(crate) fn f32_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{what}: expected f32, got {:?}", storage.dtype())
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

fn u32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [u32]> {
    let CpuStorage::U32(data) = storage else {
        candle_core::bail!("{what}: expected u32, got {:?}", storage.dtype())
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

/// Class-weighted softmax cross-entropy whose forward pass also computes the gradient: the
/// result is (rows, classes + 1) with each row's loss share in column 0 and d loss / d logits
/// after it, so the backward pass is one multiply.
struct WeightedCrossEntropy {
    total_weight: f32,
}

impl CustomOp3 for WeightedCrossEntropy {
    fn name(&self) -> &'static str {
        "weighted-cross-entropy"
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
        let (rows, classes) = l1.shape().dims2()?;
        let logits = f32_slice(s1, l1, "logits")?;
        let labels = u32_slice(s2, l2, "labels")?;
        let weights = f32_slice(s3, l3, "weights")?;
        let mut out = vec![0f32; rows * (classes + 1)];
        for ((x, &y), o) in logits
            .chunks(classes)
            .zip(labels)
            .zip(out.chunks_mut(classes + 1))
        {
            let y = y as usize;
            let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s: f32 = x.iter().map(|v| (v - m).exp()).sum();
            let coef = weights[y] / self.total_weight;
            for (c, v) in x.iter().enumerate() {
                let p = (v - m).exp() / s;
                o[1 + c] = coef * (p - if c == y { 1.0 } else { 0.0 });
            }
            o[0] = coef * (s.ln() + m - x[y]);
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, classes + 1))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda::weighted_cross_entropy(s1, l1, s2, l2, s3, l3, self.total_weight)
    }

    fn bwd(
        &self,
        _logits: &Tensor,
        _labels: &Tensor,
        _weights: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let classes = res.dim(1)? - 1;
        let upstream = grad_res.narrow(1, 0, 1)?;
        let grad = res.narrow(1, 1, classes)?.broadcast_mul(&upstream)?;
        Ok((Some(grad), None, None))
    }
}

/// Σᵢ w_{yᵢ}·(−log softmax(xᵢ)_{yᵢ}) / Σᵢ w_{yᵢ} (torch's `CrossEntropyLoss(weight=w)`), fused.
/// `logits` (rows, classes) f32, `labels` (rows) u32 on the same device, `weights` host values.
pub fn weighted_cross_entropy(logits: &Tensor, labels: &[u32], weights: &[f32]) -> Result<Tensor> {
    let total_weight: f32 = labels.iter().map(|&y| weights[y as usize]).sum();
    let dev = logits.device();
    let labels_t = Tensor::new(labels, dev)?;
    let weights_t = Tensor::new(weights, dev)?;
    let logits = logits.to_dtype(DType::F32)?.contiguous()?;
    let out = logits.apply_op3(&labels_t, &weights_t, WeightedCrossEntropy { total_weight })?;
    out.narrow(1, 0, 1)?.sum_all()
}

/// Softmax and top-k per row in one op: (rows, 2k) = k probabilities best first, then their
/// class indices (as f32). Ties go to the lower class index.
struct SoftmaxTopK {
    k: usize,
}

impl CustomOp1 for SoftmaxTopK {
    fn name(&self) -> &'static str {
        "softmax-top-k"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, classes) = layout.shape().dims2()?;
        let logits = f32_slice(storage, layout, "logits")?;
        let k = self.k;
        let mut out = vec![0f32; rows * 2 * k];
        for (x, o) in logits.chunks(classes).zip(out.chunks_mut(2 * k)) {
            let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let s: f32 = x.iter().map(|v| (v - m).exp()).sum();
            let mut idx: Vec<usize> = (0..classes).collect();
            idx.sort_by(|&a, &b| x[b].total_cmp(&x[a]));
            for (r, &c) in idx.iter().take(k).enumerate() {
                o[r] = (x[c] - m).exp() / s;
                o[k + r] = c as f32;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, 2 * k))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda::softmax_top_k(storage, layout, self.k)
    }
}

/// The top `k` (≤ classes) classes and probabilities of each row of `logits`, row-major.
pub fn softmax_top_k(logits: &Tensor, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
    let (rows, classes) = logits.dims2()?;
    let k = k.min(classes);
    let mut logits = logits.to_dtype(DType::F32)?.contiguous()?;
    if !selfcheck::kernel_ok(selfcheck::Kernel::SoftmaxTopK, logits.device()) {
        // The kernel's CPU twin, on the logits brought to the host.
        logits = logits.to_device(&candle_core::Device::Cpu)?;
    }
    let out = logits
        .apply_op1_no_bwd(&SoftmaxTopK { k })?
        .to_vec2::<f32>()?;
    let mut ids = Vec::with_capacity(rows * k);
    let mut probs = Vec::with_capacity(rows * k);
    for row in out {
        probs.extend_from_slice(&row[..k]);
        ids.extend(row[k..].iter().map(|&c| c as u32));
    }
    Ok((ids, probs))
}

#[inline(always)]
fn gelu_erf(h: f32) -> f32 {
    0.5 * h * (1.0 + erf(h * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU′ (with erf); the exponential without a libm call, so the loops around it vectorise.
#[inline(always)]
fn gelu_erf_grad(h: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    0.5 * (1.0 + erf(h * std::f32::consts::FRAC_1_SQRT_2))
        + h * INV_SQRT_2PI * cpu_ops::exp_le0(-0.5 * h * h)
}

/// Rows per parallel task in the elementwise CPU kernels.
const ROW_BLOCK: usize = 64;

/// erf in single precision as a rational minimax approximation x·P(x²)/Q(x²) on [−4, 4] (erf
/// is ±1 in f32 beyond): no exp, no branches (and plain mul/add rather than `mul_add`, which
/// without FMA in the target is a libm call), so the GELU loops vectorise. GELU's erf was a
/// fifth of CPU inference time through libm; this is within 1e-6 of it (see the test).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10_f32;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 + -2.101_024e-6;
    let p = p * x2 + -5.692_506_4e-5;
    let p = p * x2 + -7.349_906_3e-4;
    let p = p * x2 + -2.954_600_1e-3;
    let p = p * x2 + -1.609_603_3e-2;
    let q = -1.456_607_2e-5_f32;
    let q = q * x2 + -2.133_740_6e-4;
    let q = q * x2 + -1.682_827e-3;
    let q = q * x2 + -7.373_329e-3;
    let q = q * x2 + -1.426_474e-2;
    x * p / q
}

/// gelu(x + bias) over the last dimension, forward in one pass; its backward is a second op.
struct BiasGelu;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu"
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
        let mut out = vec![0f32; x.len()];
        // Blocks of rows in parallel (a task per row would drown in scheduling).
        out.par_chunks_mut(d * ROW_BLOCK)
            .zip(x.par_chunks(d * ROW_BLOCK))
            .for_each(|(o, x)| cpu_ops::bias_gelu(o, x, bias));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda::bias_gelu(s1, l1, s2, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if x.device().is_cpu() && !composed_ops_on() {
            let (dx, dbias) = cpu_fused::bias_gelu_grads(x, bias, grad_res)?;
            return Ok((Some(dx), Some(dbias)));
        }
        let dx = x.apply_op3_no_bwd(bias, &grad_res.contiguous()?, &BiasGeluBackward)?;
        let rows = dx.elem_count() / bias.elem_count();
        let dbias = dx.reshape((rows, bias.elem_count()))?.sum(0)?;
        Ok((Some(dx), Some(dbias)))
    }
}

/// dx = dy · gelu'(x + bias).
pub(crate) struct BiasGeluBackward;

impl CustomOp3 for BiasGeluBackward {
    fn name(&self) -> &'static str {
        "bias-gelu-backward"
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
        let bias = f32_slice(s2, l2, "bias")?;
        let dy = f32_slice(s3, l3, "dy")?;
        let d = bias.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d * ROW_BLOCK)
            .zip(
                x.par_chunks(d * ROW_BLOCK)
                    .zip(dy.par_chunks(d * ROW_BLOCK)),
            )
            .for_each(|(o, (x, dy))| cpu_ops::bias_gelu_grad(o, x, dy, bias));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda::bias_gelu(s1, l1, s2, l2, Some((s3, l3)))
    }
}

/// gelu_erf(x + bias), bias broadcast over the last dimension; f32 (other dtypes fall back to
/// candle's ops).
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if x.dtype() != DType::F32
        || bias.dtype() != DType::F32
        || !selfcheck::kernel_ok(selfcheck::Kernel::BiasGelu, x.device())
    {
        return x.broadcast_add(bias)?.gelu_erf();
    }
    if x.dim(D::Minus1)? != bias.elem_count() {
        candle_core::bail!(
            "bias-gelu: x {:?} and bias {:?} do not fit",
            x.shape(),
            bias.shape()
        )
    }
    x.contiguous()?.apply_op2(&bias.contiguous()?, BiasGelu)
}

thread_local! {
    static COMPOSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The GPU's op mix on the CPU, for tests: while on, ops called from this thread take candle's
/// composed ops (as on a GPU) instead of the fused CPU training ops. Our own kernels (the
/// loss, bias + GELU) keep running: on a GPU they run too, their CPU code being their twin.
pub fn use_composed_ops(on: bool) {
    COMPOSED.with(|c| c.set(on));
}

/// Whether [`use_composed_ops`] is on for this thread.
pub fn composed_ops_on() -> bool {
    COMPOSED.with(|c| c.get())
}

/// Whether the fused CPU training ops apply (f32 on the CPU, unless [`use_composed_ops`] is
/// on; elsewhere candle's composed ops).
fn fused_cpu(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && !composed_ops_on()
}

/// x + bias over the last dimension, differentiable.
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) && bias.dtype() == DType::F32 {
        x.contiguous()?
            .apply_op2(&bias.contiguous()?, cpu_fused::BiasAdd)
    } else {
        x.broadcast_add(bias)
    }
}

/// LayerNorm over the last dimension, differentiable (candle's fused `layer_norm` records no
/// backward op). Half-precision input is normalised in f32.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if fused_cpu(x) && gamma.dtype() == DType::F32 {
        return x.contiguous()?.apply_op3(
            &gamma.contiguous()?,
            &beta.contiguous()?,
            cpu_fused::LayerNorm { eps: eps as f32 },
        );
    }
    let dtype = x.dtype();
    let x = match dtype {
        DType::BF16 | DType::F16 => x.to_dtype(DType::F32)?,
        _ => x.clone(),
    };
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed
        .to_dtype(dtype)?
        .broadcast_mul(gamma)?
        .broadcast_add(beta)
}

/// Softmax over the last dimension, differentiable.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        x.contiguous()?.apply_op1(cpu_fused::Softmax)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

/// Whether `varlen_attention` runs for tensors like `t` (f32 on the CPU; elsewhere callers
/// keep padded batches and the matmul path).
pub fn varlen_attention_supported(t: &Tensor) -> bool {
    fused_cpu(t)
}

/// Number of dropout factors `varlen_attention` takes for these sequences: one per (sequence,
/// head, query, key).
pub fn varlen_attention_keep_len(heads: usize, starts: &[usize]) -> usize {
    cpu_fused::VarlenAttention::keep_len(heads, starts)
}

/// Multi-head self-attention over packed sequences, differentiable: q, k, v (tokens, hidden),
/// sequence `s` in rows `starts[s]..starts[s + 1]` → context (tokens, hidden). `keep` holds
/// inverted-dropout factors for the probabilities (`varlen_attention_keep_len` of them), or
/// `None` for no dropout. No padding means no FLOPs spent on it, whatever the length mix.
pub fn varlen_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    starts: &[usize],
    heads: usize,
    keep: Option<Vec<f32>>,
) -> Result<Tensor> {
    let (tokens, hidden) = q.dims2()?;
    if !fused_cpu(q) || hidden % heads != 0 || starts.last() != Some(&tokens) {
        candle_core::bail!(
            "varlen attention: {:?} f32 CPU tensor with {heads} heads and sequences ending at {:?}",
            q.shape(),
            starts.last()
        )
    }
    if let Some(keep) = &keep {
        if keep.len() != varlen_attention_keep_len(heads, starts) {
            candle_core::bail!("varlen attention: {} dropout factors", keep.len())
        }
    }
    let op = cpu_fused::VarlenAttention {
        heads,
        starts: starts.to_vec(),
        keep,
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

#[cfg(test)]
mod tests;
