//! f32 matrix products against a weight packed once: `C = A·Wᵀ + bias`, the shape of every
//! linear layer at inference. The weight (n × k, row-major, as a linear layer stores it) is
//! cut at load time into panels of [`NR`] output channels, each stored k-major (`k × NR`,
//! zero-padded), so the micro-kernels stream it with aligned vector loads and no per-call
//! repacking. The micro-kernel is picked at run time: AVX-512F (12 rows × 32 columns in 24
//! registers), AVX2 + FMA (6 rows × 16 columns), or portable code the compiler vectorises.
//! Single-threaded by design: callers parallelise over independent batches (or pass
//! `parallel`), so one product never waits on another thread.

use rayon::prelude::*;

/// Output channels per packed panel.
pub const NR: usize = 32;

/// The instruction set the micro-kernels use, detected once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F (x86-64).
    Avx512,
    /// AVX2 with FMA (x86-64).
    Avx2,
    /// Portable Rust, vectorised by the compiler for the build target.
    Portable,
}

impl Isa {
    /// The best instruction set this CPU has; `CATBERT_GEMM_ISA=avx2|portable` caps it (for
    /// comparisons and tests).
    pub fn detect() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            let cap = std::env::var("CATBERT_GEMM_ISA").unwrap_or_default();
            let best = best_isa();
            match (cap.as_str(), best) {
                ("portable", _) => Isa::Portable,
                ("avx2", Isa::Avx512) => Isa::Avx2,
                _ => best,
            }
        })
    }
}

#[cfg(target_arch = "x86_64")]
fn best_isa() -> Isa {
    if is_x86_feature_detected!("avx512f") {
        Isa::Avx512
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Isa::Avx2
    } else {
        Isa::Portable
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn best_isa() -> Isa {
    Isa::Portable
}

/// A weight `W` (n × k) with its bias, packed for `C = A·Wᵀ + bias`.
#[derive(Clone)]
pub struct PackedLinear {
    n: usize,
    k: usize,
    /// `ceil(n / NR)` panels of `k × NR` values.
    panels: Vec<f32>,
    /// The bias, zero-padded to a whole number of panels.
    bias: Vec<f32>,
}

impl PackedLinear {
    /// Pack `weight` (n × k, row-major) and `bias` (n values).
    pub fn new(weight: &[f32], bias: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(weight.len(), n * k, "weight is not {n} × {k}");
        assert_eq!(bias.len(), n, "bias is not {n} long");
        let panels_n = n.div_ceil(NR);
        let mut panels = vec![0f32; panels_n * k * NR];
        for (p, panel) in panels.chunks_mut(k * NR).enumerate() {
            for j in 0..NR.min(n - p * NR) {
                let row = &weight[(p * NR + j) * k..(p * NR + j + 1) * k];
                for (kk, &w) in row.iter().enumerate() {
                    panel[kk * NR + j] = w;
                }
            }
        }
        let mut padded = bias.to_vec();
        padded.resize(panels_n * NR, 0.0);
        Self {
            n,
            k,
            panels,
            bias: padded,
        }
    }

    /// Output channels.
    pub fn out_dim(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn in_dim(&self) -> usize {
        self.k
    }

    /// `c = a·Wᵀ + bias` for `a` (m × k) and `c` (m × n), both row-major; `parallel` splits the
    /// rows over rayon's threads.
    pub fn forward(&self, a: &[f32], c: &mut [f32], parallel: bool) {
        let m = a.len() / self.k.max(1);
        assert_eq!(a.len(), m * self.k, "input is not m × {}", self.k);
        assert_eq!(c.len(), m * self.n, "output is not {m} × {}", self.n);
        let isa = Isa::detect();
        let block = rows_per_block(self.k, isa);
        if parallel && m > block && rayon::current_num_threads() > 1 {
            a.par_chunks(block * self.k)
                .zip(c.par_chunks_mut(block * self.n))
                .for_each(|(a, c)| self.block(a, c, isa));
        } else {
            for (a, c) in a.chunks(block * self.k).zip(c.chunks_mut(block * self.n)) {
                self.block(a, c, isa);
            }
        }
    }

    /// One block of rows: every panel against the block, a micro-tile of rows at a time, so
    /// the panel stays in cache across the block and the block across panels.
    fn block(&self, a: &[f32], c: &mut [f32], isa: Isa) {
        let (k, n) = (self.k, self.n);
        let m = a.len() / k.max(1);
        let mr = micro_rows(isa);
        for (p, panel) in self.panels.chunks(k * NR).enumerate() {
            let cols = NR.min(n - p * NR);
            let bias = &self.bias[p * NR..(p + 1) * NR];
            let mut i = 0;
            while i < m {
                let rows = mr.min(m - i);
                let tile = Tile {
                    a: &a[i * k..(i + rows) * k],
                    k,
                    panel,
                    bias,
                    rows,
                    cols,
                };
                let out = &mut c[i * n + p * NR..];
                tile.run(out, n, isa);
                i += rows;
            }
        }
    }
}

/// Rows per cache block: the block of `a` stays within ~256 KB (half a typical L2).
fn rows_per_block(k: usize, isa: Isa) -> usize {
    let mr = micro_rows(isa);
    let rows = (256 * 1024 / 4 / k.max(1)).max(mr);
    rows / mr * mr
}

fn micro_rows(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 12,
        Isa::Avx2 => 6,
        Isa::Portable => 4,
    }
}

/// One micro-tile: `rows` rows of `a` (stride `k`) against one panel; `cols` of its `NR`
/// columns are real.
struct Tile<'a> {
    a: &'a [f32],
    k: usize,
    panel: &'a [f32],
    bias: &'a [f32],
    rows: usize,
    cols: usize,
}

impl Tile<'_> {
    /// Write the tile's `rows × cols` results into `out` (row stride `ldc`).
    fn run(&self, out: &mut [f32], ldc: usize, isa: Isa) {
        assert!(
            out.len() >= (self.rows - 1) * ldc + self.cols,
            "output tile out of bounds"
        );
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Isa::detect() returned Avx512 only where the CPU has AVX-512F; the
            // slices hold rows × k values of `a` and k × NR of the panel, and `out` holds the
            // tile (asserted above), which is all the kernel reads and writes.
            Isa::Avx512 => unsafe { x86::tile_avx512(self, out.as_mut_ptr(), ldc) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, for AVX2 and FMA.
            Isa::Avx2 => unsafe { x86::tile_avx2(self, out.as_mut_ptr(), ldc) },
            _ => self.portable(out, ldc),
        }
    }

    /// The portable kernel: four rows at a time, NR accumulators each.
    fn portable(&self, out: &mut [f32], ldc: usize) {
        for r0 in (0..self.rows).step_by(4) {
            let rows = 4.min(self.rows - r0);
            let mut t = [[0f32; NR]; 4];
            for row in t.iter_mut() {
                row.copy_from_slice(self.bias);
            }
            for (kk, b) in self.panel.chunks_exact(NR).enumerate() {
                for (r, row) in t.iter_mut().enumerate().take(rows) {
                    let x = self.a[(r0 + r) * self.k + kk];
                    for (o, w) in row.iter_mut().zip(b) {
                        *o += x * w;
                    }
                }
            }
            for (r, row) in t.iter().enumerate().take(rows) {
                let at = (r0 + r) * ldc;
                out[at..at + self.cols].copy_from_slice(&row[..self.cols]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile, NR};
    use std::arch::x86_64::*;

    /// Up to 12 rows × 32 columns in 24 zmm accumulators, stored straight into `out` (row
    /// stride `ldc`; masked stores for a partial last panel).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_avx512(t: &Tile, out: *mut f32, ldc: usize) {
        match t.rows {
            12 => avx512::<12>(t, out, ldc),
            11 => avx512::<11>(t, out, ldc),
            10 => avx512::<10>(t, out, ldc),
            9 => avx512::<9>(t, out, ldc),
            8 => avx512::<8>(t, out, ldc),
            7 => avx512::<7>(t, out, ldc),
            6 => avx512::<6>(t, out, ldc),
            5 => avx512::<5>(t, out, ldc),
            4 => avx512::<4>(t, out, ldc),
            3 => avx512::<3>(t, out, ldc),
            2 => avx512::<2>(t, out, ldc),
            _ => avx512::<1>(t, out, ldc),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512<const R: usize>(t: &Tile, out: *mut f32, ldc: usize) {
        let b = t.bias.as_ptr();
        let mut c0 = [_mm512_loadu_ps(b); R];
        let mut c1 = [_mm512_loadu_ps(b.add(16)); R];
        let a = t.a.as_ptr();
        let mut w = t.panel.as_ptr();
        for kk in 0..t.k {
            let w0 = _mm512_loadu_ps(w);
            let w1 = _mm512_loadu_ps(w.add(16));
            for r in 0..R {
                let x = _mm512_set1_ps(*a.add(r * t.k + kk));
                c0[r] = _mm512_fmadd_ps(x, w0, c0[r]);
                c1[r] = _mm512_fmadd_ps(x, w1, c1[r]);
            }
            w = w.add(NR);
        }
        let lanes = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
        let (m0, m1) = (lanes(t.cols), lanes(t.cols.saturating_sub(16)));
        for r in 0..R {
            let o = out.add(r * ldc);
            if t.cols == NR {
                _mm512_storeu_ps(o, c0[r]);
                _mm512_storeu_ps(o.add(16), c1[r]);
            } else {
                _mm512_mask_storeu_ps(o, m0, c0[r]);
                _mm512_mask_storeu_ps(o.add(16), m1, c1[r]);
            }
        }
    }

    /// Up to 6 rows × 32 columns, as two passes of 6 × 16 in 12 ymm accumulators.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2(t: &Tile, out: *mut f32, ldc: usize) {
        for half in [0, 16] {
            if t.cols <= half {
                break;
            }
            match t.rows {
                6 => avx2::<6>(t, out, ldc, half),
                5 => avx2::<5>(t, out, ldc, half),
                4 => avx2::<4>(t, out, ldc, half),
                3 => avx2::<3>(t, out, ldc, half),
                2 => avx2::<2>(t, out, ldc, half),
                _ => avx2::<1>(t, out, ldc, half),
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const R: usize>(t: &Tile, out: *mut f32, ldc: usize, half: usize) {
        let b = t.bias.as_ptr().add(half);
        let mut c0 = [_mm256_loadu_ps(b); R];
        let mut c1 = [_mm256_loadu_ps(b.add(8)); R];
        let a = t.a.as_ptr();
        let mut w = t.panel.as_ptr().add(half);
        for kk in 0..t.k {
            let w0 = _mm256_loadu_ps(w);
            let w1 = _mm256_loadu_ps(w.add(8));
            for r in 0..R {
                let x = _mm256_set1_ps(*a.add(r * t.k + kk));
                c0[r] = _mm256_fmadd_ps(x, w0, c0[r]);
                c1[r] = _mm256_fmadd_ps(x, w1, c1[r]);
            }
            w = w.add(NR);
        }
        let cols = (t.cols - half).min(16);
        for r in 0..R {
            let o = out.add(r * ldc + half);
            if cols == 16 {
                _mm256_storeu_ps(o, c0[r]);
                _mm256_storeu_ps(o.add(8), c1[r]);
            } else {
                let mut tmp = [0f32; 16];
                _mm256_storeu_ps(tmp.as_mut_ptr(), c0[r]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), c1[r]);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), o, cols);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain triple loop in f64: the oracle.
    fn reference(a: &[f32], w: &[f32], bias: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = bias[j] as f64;
                for p in 0..k {
                    s += a[i * k + p] as f64 * w[j * k + p] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_isa_matches_the_reference_on_ragged_shapes() {
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx2);
            }
            if is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Avx512);
            }
        }
        // m below, at and above the micro-tile heights; n with a partial last panel; k odd.
        for &(m, n, k) in &[
            (1, 5, 3),
            (13, 33, 17),
            (25, 64, 384),
            (300, 97, 40),
            (7, 1, 1),
        ] {
            let (a, w, bias) = (values(m * k, 1), values(n * k, 2), values(n, 3));
            let packed = PackedLinear::new(&w, &bias, n, k);
            let want = reference(&a, &w, &bias, m, n, k);
            for &isa in &isas {
                let mut c = vec![f32::NAN; m * n];
                let block = rows_per_block(k, isa);
                for (a, c) in a.chunks(block * k).zip(c.chunks_mut(block * n)) {
                    packed.block(a, c, isa);
                }
                let worst = c
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst < 1e-4 * k as f32,
                    "{isa:?} {m}×{n}×{k}: off by {worst}"
                );
            }
            let mut c = vec![0f32; m * n];
            packed.forward(&a, &mut c, true);
            let worst = c
                .iter()
                .zip(&want)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-4 * k as f32,
                "parallel {m}×{n}×{k}: off by {worst}"
            );
        }
    }
}
