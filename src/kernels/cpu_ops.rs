//! Inference ops on plain f32 buffers, in place where they can be: residual + LayerNorm,
//! activations, and attention over sequences packed back to back (no padding). With the
//! packed products of [`super::gemm`] they make a forward pass that allocates nothing per
//! batch. Model-agnostic; their oracles are candle's composed ops (tests below).

multiversion! {
    /// `x = LayerNorm(x + residual)` row by row (rows of `gamma.len()` values); `residual` may
    /// be empty for a plain LayerNorm.
    pub fn add_layer_norm(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let d = gamma.len();
        if !residual.is_empty() {
            for (v, r) in x.iter_mut().zip(residual) {
                *v += r;
            }
        }
        for row in x.chunks_mut(d) {
            let mean = sum8(row, |v| v) / d as f32;
            let var = sum8(row, |v| (v - mean) * (v - mean)) / d as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * rstd * g + b;
            }
        }
    }
}

multiversion! {
    /// GELU with erf, in place (the erf of [`super::bias_gelu`]).
    pub fn gelu_erf(x: &mut [f32]) {
        for v in x {
            *v = super::gelu_erf(*v);
        }
    }
}

multiversion! {
    /// `out = gelu(x + bias)` (GELU with erf) row by row, rows of `bias.len()` values: the
    /// training forward of [`super::bias_gelu`].
    pub fn bias_gelu(out: &mut [f32], x: &[f32], bias: &[f32]) {
        let d = bias.len();
        for (o, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            for ((o, &x), &b) in o.iter_mut().zip(x).zip(bias) {
                *o = super::gelu_erf(x + b);
            }
        }
    }
}

multiversion! {
    /// `out = dy · gelu′(x + bias)` row by row, rows of `bias.len()` values: the backward of
    /// [`bias_gelu`].
    pub fn bias_gelu_grad(out: &mut [f32], x: &[f32], dy: &[f32], bias: &[f32]) {
        let d = bias.len();
        for ((o, x), dy) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(dy.chunks_exact(d)) {
            for (((o, &x), &g), &b) in o.iter_mut().zip(x).zip(dy).zip(bias) {
                *o = g * super::gelu_erf_grad(x + b);
            }
        }
    }
}

multiversion! {
    /// GELU's tanh approximation (transformers' `gelu_new`), in place.
    pub fn gelu_tanh(x: &mut [f32]) {
        const C: f32 = 0.797_884_6; // sqrt(2 / pi)
        for v in x {
            let u = *v;
            *v = 0.5 * u * (1.0 + (C * (u + 0.044_715 * u * u * u)).tanh());
        }
    }
}

/// max(x, 0), in place.
pub fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

multiversion! {
    /// Multi-head attention over sequences packed back to back. `qkv` holds one row of
    /// `3 · hidden` values per token (query, key, value, each `heads` heads wide); sequence `s`
    /// is tokens `starts[s]..starts[s + 1]`. Writes softmax(q·kᵀ/√d)·v per token and head into
    /// `out` (one row of `hidden` per token); `scores` is scratch. With `first_only`, only each
    /// sequence's first token asks (its keys and values are all the tokens): `out` then holds
    /// one row per sequence.
    pub fn packed_attention(
        qkv: &[f32],
        starts: &[usize],
        heads: usize,
        out: &mut [f32],
        scores: &mut Vec<f32>,
        first_only: bool,
    ) {
        let hidden = qkv.len() / starts.last().copied().unwrap_or(0).max(1) / 3;
        let d = hidden / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let row = 3 * hidden;
        for (i, w) in starts.windows(2).enumerate() {
            let seq = &qkv[w[0] * row..w[1] * row];
            let (asking, outs) = if first_only {
                (&seq[..row.min(seq.len())], &mut out[i * hidden..(i + 1) * hidden])
            } else {
                (seq, &mut out[w[0] * hidden..w[1] * hidden])
            };
            scores.resize(w[1] - w[0], 0.0);
            for h in 0..heads {
                let (q0, k0, v0) = (h * d, hidden + h * d, 2 * hidden + h * d);
                for (qrow, orow) in asking.chunks_exact(row).zip(outs.chunks_exact_mut(hidden)) {
                    let q = &qrow[q0..q0 + d];
                    let mut max = f32::NEG_INFINITY;
                    for (krow, s) in seq.chunks_exact(row).zip(scores.iter_mut()) {
                        *s = dot(q, &krow[k0..k0 + d]) * scale;
                        max = max.max(*s);
                    }
                    let mut sum = 0.0;
                    for s in scores.iter_mut() {
                        *s = exp_le0(*s - max);
                        sum += *s;
                    }
                    let inv = 1.0 / sum;
                    let o = &mut orow[q0..q0 + d];
                    for v in o.iter_mut() {
                        *v = 0.0;
                    }
                    for (vrow, &p) in seq.chunks_exact(row).zip(scores.iter()) {
                        let p = p * inv;
                        for (o, v) in o.iter_mut().zip(&vrow[v0..v0 + d]) {
                            *o += p * v;
                        }
                    }
                }
            }
        }
    }
}

/// Σ f(x) in eight partial sums, so the loop vectorises.
#[inline(always)]
fn sum8(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for i in 0..8 {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ x·y in eight partial sums, so the loop vectorises.
#[inline(always)]
pub(super) fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for i in 0..8 {
            acc[i] += a[i] * b[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// eˣ for x ≤ 0 (softmax after its max is subtracted), within 2 ulp, without a libm call so
/// the loops around it vectorise: x = n·ln 2 + r, eʳ by its Taylor polynomial on
/// |r| ≤ ln 2 / 2, 2ⁿ put into the exponent bits.
#[inline(always)]
pub(super) fn exp_le0(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer
    let x = x.max(-87.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r / 5040.0))))));
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn add_layer_norm_matches_candle() -> candle_core::Result<()> {
        let (rows, d) = (5, 24);
        let (x, r, g, b) = (
            values(rows * d, 1),
            values(rows * d, 2),
            values(d, 3),
            values(d, 4),
        );
        let dev = Device::Cpu;
        let sum =
            (Tensor::from_slice(&x, (rows, d), &dev)? + Tensor::from_slice(&r, (rows, d), &dev)?)?;
        let want = candle_nn::ops::layer_norm(
            &sum,
            &Tensor::from_slice(&g, d, &dev)?,
            &Tensor::from_slice(&b, d, &dev)?,
            1e-12,
        )?
        .flatten_all()?
        .to_vec1::<f32>()?;
        let mut got = x.clone();
        add_layer_norm(&mut got, &r, &g, &b, 1e-12);
        assert!(worst(&got, &want) < 1e-5, "{}", worst(&got, &want));
        Ok(())
    }

    #[test]
    fn activations_match_candle() -> candle_core::Result<()> {
        let x = values(257, 5);
        let t = Tensor::from_slice(&x, x.len(), &Device::Cpu)?;
        let (mut e, mut n, mut r) = (x.clone(), x.clone(), x.clone());
        gelu_erf(&mut e);
        gelu_tanh(&mut n);
        relu(&mut r);
        assert!(worst(&e, &t.gelu_erf()?.to_vec1()?) < 1e-6);
        assert!(worst(&n, &t.gelu()?.to_vec1()?) < 1e-6);
        assert!(worst(&r, &t.relu()?.to_vec1()?) == 0.0);
        Ok(())
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp_le0(x), x.exp());
            assert!(
                (got - want).abs() <= 2.0 * f32::EPSILON * want,
                "{x}: {got} vs {want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp_le0(0.0), 1.0);
        assert!(exp_le0(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn packed_attention_matches_the_varlen_kernel() -> candle_core::Result<()> {
        let (heads, hidden) = (4, 32);
        let starts = vec![0, 3, 4, 11];
        let tokens = *starts.last().unwrap();
        let qkv = values(tokens * 3 * hidden, 6);
        let dev = Device::Cpu;
        let all = Tensor::from_slice(&qkv, (tokens, 3 * hidden), &dev)?;
        let (q, k, v) = (
            all.narrow(1, 0, hidden)?.contiguous()?,
            all.narrow(1, hidden, hidden)?.contiguous()?,
            all.narrow(1, 2 * hidden, hidden)?.contiguous()?,
        );
        let want = crate::kernels::varlen_attention(&q, &k, &v, &starts, heads, None)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut got = vec![0f32; tokens * hidden];
        packed_attention(&qkv, &starts, heads, &mut got, &mut Vec::new(), false);
        assert!(worst(&got, &want) < 1e-5, "{}", worst(&got, &want));
        // Only the first token of each sequence: exactly those rows of the full result.
        let mut first = vec![0f32; (starts.len() - 1) * hidden];
        packed_attention(&qkv, &starts, heads, &mut first, &mut Vec::new(), true);
        let rows: Vec<f32> = starts[..starts.len() - 1]
            .iter()
            .flat_map(|&s| got[s * hidden..(s + 1) * hidden].to_vec())
            .collect();
        assert_eq!(first, rows);
        Ok(())
    }
}
