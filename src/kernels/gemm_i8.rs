//! int8 products for quantised inference: `C = A·Wᵀ + bias` with W quantised once per output
//! channel (symmetric, ±127) and A quantised per row as it arrives (asymmetric u8 over the
//! row's [min, max] with 0 inside: a zero point per row, so the one-sided outputs of GELU get
//! all 256 levels), int8 × int8 → int32, rescaled to f32 with both scales:
//!
//! `C[i, j] = sa[i] · sw[j] · (Σₖ qa[i, k] · w[j, k] − za[i] · Σₖ w[j, k]) + bias[j]`
//!
//! Each channel's scale is the clipping range with the least squared rounding error (from its
//! largest |w| down to 70 % of it).
//!
//! The weight is packed in panels of [`NR`] channels, four k at a time (`NR × 4` bytes per
//! group), the layout of AVX-512 VNNI's `vpdpbusd` (u8 × i8, four products summed into each
//! 32-bit lane). Kernels: AVX-512 VNNI (12 rows × 32 channels), AVX2 (the same sums through
//! 16-bit multiply-adds, exact), portable. Integer sums are exact, so every kernel gives the
//! same result bit for bit.

use std::cell::RefCell;

use rayon::prelude::*;

use super::gemm::Isa;

/// Output channels per packed panel.
pub const NR: usize = 32;

/// The int8 kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsaI8 {
    /// AVX-512F + AVX-512 VNNI.
    Vnni512,
    /// AVX2.
    Avx2,
    /// Portable Rust.
    Portable,
}

impl IsaI8 {
    /// The best kernel for this CPU, within the cap `CATBERT_GEMM_ISA` puts on the f32 kernels
    /// ([`Isa::detect`]): VNNI only where AVX-512 is allowed.
    pub fn detect() -> IsaI8 {
        static ISA: std::sync::OnceLock<IsaI8> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| match Isa::detect() {
            Isa::Portable => IsaI8::Portable,
            Isa::Avx2 => IsaI8::Avx2,
            Isa::Avx512 if has_vnni() => IsaI8::Vnni512,
            Isa::Avx512 => IsaI8::Avx2,
        })
    }
}

#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_vnni() -> bool {
    false
}

/// A linear layer quantised for int8 products.
#[derive(Clone)]
pub struct QuantizedLinear {
    n: usize,
    k: usize,
    /// k rounded up to a multiple of 4.
    kp: usize,
    /// `ceil(n / NR)` panels of `kp / 4` groups of `NR × 4` bytes.
    panels: Vec<i8>,
    /// Per channel, zero-padded to whole panels: scale, Σₖ w, bias.
    scales: Vec<f32>,
    sums: Vec<i32>,
    bias: Vec<f32>,
}

/// Per-thread quantised rows of the input, reused from call to call.
#[derive(Default)]
struct Rows {
    values: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

thread_local! {
    static ROWS: RefCell<Rows> = RefCell::new(Rows::default());
}

/// Round to the nearest integer (ties to even) without a libm call, for |v| < 2²².
#[inline(always)]
fn round(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

impl QuantizedLinear {
    /// Quantise and pack `weight` (n × k, row-major) with its `bias` (n values).
    pub fn new(weight: &[f32], bias: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(weight.len(), n * k, "weight is not {n} × {k}");
        assert_eq!(bias.len(), n, "bias is not {n} long");
        let kp = k.div_ceil(4) * 4;
        let panels_n = n.div_ceil(NR);
        let mut panels = vec![0i8; panels_n * kp * NR];
        let mut scales = vec![0f32; panels_n * NR];
        let mut sums = vec![0i32; panels_n * NR];
        for j in 0..n {
            let row = &weight[j * k..(j + 1) * k];
            let scale = weight_scale(row);
            scales[j] = scale;
            let (p, jj) = (j / NR, j % NR);
            let mut sum = 0i32;
            for (kk, &v) in row.iter().enumerate() {
                let q = round(v / scale).clamp(-127.0, 127.0) as i8;
                sum += q as i32;
                panels[p * kp * NR + (kk / 4) * NR * 4 + jj * 4 + kk % 4] = q;
            }
            sums[j] = sum;
        }
        let mut padded = bias.to_vec();
        padded.resize(panels_n * NR, 0.0);
        Self {
            n,
            k,
            kp,
            panels,
            scales,
            sums,
            bias: padded,
        }
    }

    /// Output channels.
    pub fn out_dim(&self) -> usize {
        self.n
    }

    /// `c = a·Wᵀ + bias` for `a` (m × k) and `c` (m × n), row-major, `a` quantised per row on
    /// the way; `parallel` splits the rows over rayon's threads.
    pub fn forward(&self, a: &[f32], c: &mut [f32], parallel: bool) {
        let k = self.k;
        let m = a.len() / k.max(1);
        assert_eq!(a.len(), m * k, "input is not m × {k}");
        assert_eq!(c.len(), m * self.n, "output is not {m} × {}", self.n);
        ROWS.with(|rows| {
            let rows = &mut *rows.borrow_mut();
            quantize_rows(a, k, self.kp, rows);
            let isa = IsaI8::detect();
            let block = 96;
            let (q, s, z) = (
                &rows.values[..m * self.kp],
                &rows.scales[..m],
                &rows.zero_points[..m],
            );
            if parallel && m > block && rayon::current_num_threads() > 1 {
                q.par_chunks(block * self.kp)
                    .zip(s.par_chunks(block))
                    .zip(z.par_chunks(block))
                    .zip(c.par_chunks_mut(block * self.n))
                    .for_each(|(((q, s), z), c)| self.block(q, s, z, c, isa));
            } else {
                self.block(q, s, z, c, isa);
            }
        });
    }

    fn block(&self, q: &[u8], row_scales: &[f32], zero_points: &[i32], c: &mut [f32], isa: IsaI8) {
        let (kp, n) = (self.kp, self.n);
        let m = row_scales.len();
        let mr = 12;
        for (p, panel) in self.panels.chunks(kp * NR).enumerate() {
            let span = p * NR..(p + 1) * NR;
            let mut i = 0;
            while i < m {
                let rows = mr.min(m - i);
                let tile = Tile {
                    a: &q[i * kp..(i + rows) * kp],
                    row_scales: &row_scales[i..i + rows],
                    zero_points: &zero_points[i..i + rows],
                    kp,
                    panel,
                    scales: &self.scales[span.clone()],
                    sums: &self.sums[span.clone()],
                    bias: &self.bias[span.clone()],
                    rows,
                    cols: NR.min(n - p * NR),
                };
                tile.run(&mut c[i * n + p * NR..], n, isa);
                i += rows;
            }
        }
    }
}

/// The scale of one output channel: of the clipping ranges from the largest |w| down to 70 %
/// of it, the one whose rounding leaves the smallest squared error (a few large weights
/// otherwise widen every step for the rest).
fn weight_scale(row: &[f32]) -> f32 {
    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max == 0.0 {
        return 1.0;
    }
    let error = |scale: f32| -> f32 {
        row.iter()
            .map(|&v| {
                let e = v - round(v / scale).clamp(-127.0, 127.0) * scale;
                e * e
            })
            .sum()
    };
    let mut best = (error(max / 127.0), max / 127.0);
    for step in 1..=15 {
        let scale = max * (1.0 - 0.02 * step as f32) / 127.0;
        let e = error(scale);
        if e < best.0 {
            best = (e, scale);
        }
    }
    best.1
}

/// (min, max) of `x` and 0, in eight lanes so the loop vectorises.
#[inline(always)]
fn range(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([0f32; 8], [0f32; 8]);
    let chunks = x.chunks_exact(8);
    for &v in chunks.remainder() {
        lo[0] = lo[0].min(v);
        hi[0] = hi[0].max(v);
    }
    for c in chunks {
        for i in 0..8 {
            lo[i] = lo[i].min(c[i]);
            hi[i] = hi[i].max(c[i]);
        }
    }
    (
        lo.iter().fold(0f32, |a, &b| a.min(b)),
        hi.iter().fold(0f32, |a, &b| a.max(b)),
    )
}

multiversion! {
    /// Quantise each row of `a` (rows of `k`) to u8 over its range (0 included): a scale and a
    /// zero point per row; padded to `kp` with the zero point.
    fn quantize_rows(a: &[f32], k: usize, kp: usize, rows: &mut Rows) {
        let m = a.len() / k.max(1);
        rows.values.resize(m * kp, 0);
        rows.scales.resize(m, 0.0);
        rows.zero_points.resize(m, 0);
        for (((x, q), s), z) in a
            .chunks(k)
            .zip(rows.values.chunks_mut(kp))
            .zip(rows.scales.iter_mut())
            .zip(rows.zero_points.iter_mut())
        {
            let (lo, hi) = range(x);
            let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
            let inv = 1.0 / scale;
            let zero = round(-lo * inv).clamp(0.0, 255.0);
            for (q, &v) in q.iter_mut().zip(x) {
                *q = (round(v * inv) + zero).clamp(0.0, 255.0) as u8;
            }
            q[k..].fill(zero as u8);
            *s = scale;
            *z = zero as i32;
        }
    }
}

/// One micro-tile: `rows` quantised rows (stride `kp`) against one panel.
struct Tile<'a> {
    a: &'a [u8],
    row_scales: &'a [f32],
    zero_points: &'a [i32],
    kp: usize,
    panel: &'a [i8],
    scales: &'a [f32],
    sums: &'a [i32],
    bias: &'a [f32],
    rows: usize,
    cols: usize,
}

impl Tile<'_> {
    fn run(&self, out: &mut [f32], ldc: usize, isa: IsaI8) {
        assert!(
            out.len() >= (self.rows - 1) * ldc + self.cols,
            "output tile out of bounds"
        );
        let mut sums = [0i32; 12 * NR];
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: IsaI8::detect() returned Vnni512 only where the CPU has AVX-512F and
            // VNNI; `a` holds rows × kp bytes and the panel kp × NR, `out` the tile (asserted
            // above), as the kernel reads and writes.
            IsaI8::Vnni512 => return unsafe { x86::tile_vnni(self, out.as_mut_ptr(), ldc) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, for AVX2 (sums only).
            IsaI8::Avx2 => unsafe { x86::sums_avx2(self, &mut sums) },
            _ => self.sums_portable(&mut sums),
        }
        for r in 0..self.rows {
            let (sa, za) = (self.row_scales[r], self.zero_points[r]);
            let o = &mut out[r * ldc..r * ldc + self.cols];
            for (j, o) in o.iter_mut().enumerate() {
                // The VNNI kernel's vector epilogue does the same operations in this order.
                let exact = sums[r * NR + j] - za * self.sums[j];
                *o = exact as f32 * (sa * self.scales[j]) + self.bias[j];
            }
        }
    }

    fn sums_portable(&self, sums: &mut [i32; 12 * NR]) {
        for r in 0..self.rows {
            let a = &self.a[r * self.kp..(r + 1) * self.kp];
            let acc = &mut sums[r * NR..(r + 1) * NR];
            for (g, group) in self.panel.chunks_exact(NR * 4).enumerate() {
                let x = &a[g * 4..g * 4 + 4];
                for (s, w) in acc.iter_mut().zip(group.chunks_exact(4)) {
                    *s += (0..4).map(|t| x[t] as i32 * w[t] as i32).sum::<i32>();
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    /// The same quantisation in plain f64 arithmetic: the oracle of the integer kernels.
    fn reference(a: &[f32], w: &[f32], bias: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        // Weights: symmetric, divided by their scale.
        let quant_w = |x: &[f32]| {
            let s = weight_scale(x);
            let q = x.iter().map(|&v| round(v / s).clamp(-127.0, 127.0) as f64);
            (q.collect::<Vec<_>>(), s)
        };
        // Rows: over [min, max] with 0 inside, multiplied by the inverse scale, zero point off.
        let quant_a = |x: &[f32]| {
            let lo = x.iter().fold(0f32, |m, &v| m.min(v));
            let hi = x.iter().fold(0f32, |m, &v| m.max(v));
            let s = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
            let inv = 1.0 / s;
            let z = round(-lo * inv).clamp(0.0, 255.0);
            let q = x
                .iter()
                .map(|&v| ((round(v * inv) + z).clamp(0.0, 255.0) - z) as f64);
            (q.collect::<Vec<_>>(), s)
        };
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            let (qa, sa) = quant_a(&a[i * k..(i + 1) * k]);
            for j in 0..n {
                let (qw, sw) = quant_w(&w[j * k..(j + 1) * k]);
                let dot: f64 = qa.iter().zip(&qw).map(|(x, y)| x * y).sum();
                c[i * n + j] = (dot * (sa * sw) as f64 + bias[j] as f64) as f32;
            }
        }
        c
    }

    #[test]
    fn every_kernel_gives_the_quantised_product() {
        let mut isas = vec![IsaI8::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                isas.push(IsaI8::Avx2);
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") {
                isas.push(IsaI8::Vnni512);
            }
        }
        for &(m, n, k) in &[
            (1, 5, 3),
            (13, 33, 17),
            (25, 64, 384),
            (200, 97, 42),
            (7, 1, 1),
        ] {
            let (a, w, bias) = (values(m * k, 1), values(n * k, 2), values(n, 3));
            let q = QuantizedLinear::new(&w, &bias, n, k);
            let want = reference(&a, &w, &bias, m, n, k);
            let mut first: Option<Vec<f32>> = None;
            for &isa in &isas {
                let mut c = vec![f32::NAN; m * n];
                let mut rows = Rows::default();
                quantize_rows(&a, k, q.kp, &mut rows);
                q.block(&rows.values, &rows.scales, &rows.zero_points, &mut c, isa);
                let worst = c
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
                    .fold(0f32, f32::max);
                assert!(worst < 1e-5, "{isa:?} {m}×{n}×{k}: off by {worst}");
                // Exact integer sums: the kernels agree bit for bit.
                match &first {
                    None => first = Some(c),
                    Some(f) => assert_eq!(f, &c, "{isa:?} {m}×{n}×{k}"),
                }
            }
            let mut c = vec![0f32; m * n];
            q.forward(&a, &mut c, true);
            assert_eq!(first.as_ref(), Some(&c), "forward {m}×{n}×{k}");
        }
    }

    #[test]
    fn quantisation_error_is_small_against_f32() {
        let (m, n, k) = (16, 64, 384);
        let (a, w, bias) = (values(m * k, 4), values(n * k, 5), values(n, 6));
        let exact = crate::kernels::gemm::PackedLinear::new(&w, &bias, n, k);
        let (mut want, mut got) = (vec![0f32; m * n], vec![0f32; m * n]);
        exact.forward(&a, &mut want, false);
        QuantizedLinear::new(&w, &bias, n, k).forward(&a, &mut got, false);
        // Uniform values in ±1 over 384 terms: sums of size ~11; int8 keeps them within ~1 %.
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 0.02 * scale,
            "int8 off by {worst} on values up to {scale}"
        );
    }
}
