//! The x86-64 int8 kernels: AVX-512 VNNI tiles and the AVX2 fallback.

use super::{Tile, NR};
use std::arch::x86_64::*;

#[target_feature(enable = "avx512f,avx512vnni")]
pub(super) unsafe fn sums_vnni(t: &Tile, sums: &mut [i32; 12 * NR]) {
    match t.rows {
        12 => vnni::<12>(t, sums),
        11 => vnni::<11>(t, sums),
        10 => vnni::<10>(t, sums),
        9 => vnni::<9>(t, sums),
        8 => vnni::<8>(t, sums),
        7 => vnni::<7>(t, sums),
        6 => vnni::<6>(t, sums),
        5 => vnni::<5>(t, sums),
        4 => vnni::<4>(t, sums),
        3 => vnni::<3>(t, sums),
        2 => vnni::<2>(t, sums),
        _ => vnni::<1>(t, sums),
    }
}

#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn vnni<const R: usize>(t: &Tile, sums: &mut [i32; 12 * NR]) {
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
    let o = sums.as_mut_ptr();
    for r in 0..R {
        _mm512_storeu_si512(o.add(r * NR) as *mut _, c0[r]);
        _mm512_storeu_si512(o.add(r * NR + 16) as *mut _, c1[r]);
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
