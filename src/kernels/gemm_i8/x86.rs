//! The x86-64 int8 kernels: AVX-512 VNNI tiles and the AVX2 fallback.

use super::{Tile, NR};
use std::arch::x86_64::*;

/// Up to 12 rows × 32 channels: sums in 24 zmm accumulators, then rescaled to f32 (zero
/// point, both scales, bias) and stored straight into `out` (row stride `ldc`).
#[target_feature(enable = "avx512f,avx512vnni")]
pub(super) unsafe fn tile_vnni(t: &Tile, out: *mut f32, ldc: usize) {
    match t.rows {
        12 => vnni::<12>(t, out, ldc),
        11 => vnni::<11>(t, out, ldc),
        10 => vnni::<10>(t, out, ldc),
        9 => vnni::<9>(t, out, ldc),
        8 => vnni::<8>(t, out, ldc),
        7 => vnni::<7>(t, out, ldc),
        6 => vnni::<6>(t, out, ldc),
        5 => vnni::<5>(t, out, ldc),
        4 => vnni::<4>(t, out, ldc),
        3 => vnni::<3>(t, out, ldc),
        2 => vnni::<2>(t, out, ldc),
        _ => vnni::<1>(t, out, ldc),
    }
}

#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn vnni<const R: usize>(t: &Tile, out: *mut f32, ldc: usize) {
    let mut c0 = [_mm512_setzero_si512(); R];
    let mut c1 = [_mm512_setzero_si512(); R];
    let a = t.a.as_ptr();
    let mut w = t.panel.as_ptr();
    for g in 0..t.kp / 4 {
        let w0 = _mm512_loadu_si512(w as *const _);
        let w1 = _mm512_loadu_si512(w.add(64) as *const _);
        for r in 0..R {
            let x = _mm512_set1_epi32((a.add(r * t.kp + g * 4) as *const i32).read_unaligned());
            c0[r] = _mm512_dpbusd_epi32(c0[r], x, w0);
            c1[r] = _mm512_dpbusd_epi32(c1[r], x, w1);
        }
        w = w.add(NR * 4);
    }
    // exact = sums − za · Σw; out = exact as f32 · (sa · sw) + bias: the scalar epilogue's
    // operations in its order (no FMA), so every kernel writes the same bits.
    let lanes = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
    let masks = [lanes(t.cols), lanes(t.cols.saturating_sub(16))];
    for r in 0..R {
        let za = _mm512_set1_epi32(t.zero_points[r]);
        let sa = _mm512_set1_ps(t.row_scales[r]);
        let o = out.add(r * ldc);
        for (h, c) in [(0, c0[r]), (1, c1[r])] {
            let wsum = _mm512_loadu_si512(t.sums.as_ptr().add(16 * h) as *const _);
            let exact = _mm512_sub_epi32(c, _mm512_mullo_epi32(za, wsum));
            let scale = _mm512_mul_ps(sa, _mm512_loadu_ps(t.scales.as_ptr().add(16 * h)));
            let v = _mm512_add_ps(
                _mm512_mul_ps(_mm512_cvtepi32_ps(exact), scale),
                _mm512_loadu_ps(t.bias.as_ptr().add(16 * h)),
            );
            if t.cols == NR {
                _mm512_storeu_ps(o.add(16 * h), v);
            } else {
                _mm512_mask_storeu_ps(o.add(16 * h), masks[h], v);
            }
        }
    }
}

/// AVX2 has no u8 × i8 dot product without saturation; widening both to 16 bits and
/// `vpmaddwd` gives the exact sums: per group of 4 k, 8 channels at a time.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn sums_avx2(t: &Tile, sums: &mut [i32; 12 * NR]) {
    for r in 0..t.rows {
        let a = t.a.as_ptr().add(r * t.kp);
        let mut acc = [_mm256_setzero_si256(); 4];
        let mut w = t.panel.as_ptr();
        for g in 0..t.kp / 4 {
            // The row's 4 bytes as 16-bit values, repeated for 4 channels: (a0 a1 a2 a3) × 4.
            let x4 = (a.add(g * 4) as *const i32).read_unaligned();
            let x = _mm256_cvtepu8_epi16(_mm_set1_epi32(x4));
            for (q, acc) in acc.iter_mut().enumerate() {
                // 8 channels × 4 k = 32 bytes → two halves of 4 channels.
                let bytes = _mm256_loadu_si256(w.add(q * 32) as *const _);
                let lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(bytes));
                let hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(bytes));
                // Pairs summed: (c, k0+k1), (c, k2+k3) per channel c.
                let plo = _mm256_madd_epi16(x, lo);
                let phi = _mm256_madd_epi16(x, hi);
                // hadd → per channel k0..k3, channels in lane order 0 1 4 5 | 2 3 6 7.
                *acc = _mm256_add_epi32(*acc, _mm256_hadd_epi32(plo, phi));
            }
            w = w.add(NR * 4);
        }
        let mut out = [0i32; NR];
        for (q, acc) in acc.iter().enumerate() {
            let mut lanes = [0i32; 8];
            _mm256_storeu_si256(lanes.as_mut_ptr() as *mut _, *acc);
            let base = q * 8;
            for (lane, &v) in lanes.iter().enumerate() {
                let ch = [0, 1, 4, 5, 2, 3, 6, 7][lane];
                out[base + ch] = v;
            }
        }
        sums[r * NR..(r + 1) * NR].copy_from_slice(&out);
    }
}
