//! Label-free drift figures between a reference distribution and a window's: the
//! Jensen–Shannon distance (as scipy's `jensenshannon(p, q, base=2)`, in [0, 1]) and the
//! population stability index (Σ (a − e) · ln(a / e), empty bins smoothed), over class
//! distributions or histograms with fixed bins.

/// Bins that are empty on one side get this share before PSI's logarithm.
const EPS: f64 = 1e-4;

fn normalised(v: &[f64]) -> Vec<f64> {
    let sum: f64 = v.iter().sum();
    if sum <= 0.0 {
        return vec![0.0; v.len()];
    }
    v.iter().map(|x| x / sum).collect()
}

/// Jensen–Shannon distance (base 2) between two distributions given as counts or shares.
pub fn js_distance(p: &[f64], q: &[f64]) -> f64 {
    let (p, q) = (normalised(p), normalised(q));
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter()
            .zip(m)
            .filter(|(x, _)| **x > 0.0)
            .map(|(x, y)| x * (x / y).log2())
            .sum()
    };
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    ((kl(&p, &m) + kl(&q, &m)) / 2.0).max(0.0).sqrt()
}

/// Population stability index of `actual` against `expected` (counts or shares).
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    let smooth = |v: &[f64]| -> Vec<f64> {
        let v: Vec<f64> = normalised(v).into_iter().map(|x| x.max(EPS)).collect();
        normalised(&v)
    };
    let (e, a) = (smooth(expected), smooth(actual));
    e.iter().zip(&a).map(|(e, a)| (a - e) * (a / e).ln()).sum()
}

/// Counts of `values` in `bins` equal-width bins over [lo, hi] (outside values go to the
/// end bins).
pub fn histogram(values: impl IntoIterator<Item = f64>, bins: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut counts = vec![0.0; bins];
    let width = (hi - lo) / bins as f64;
    for v in values {
        let i = ((v - lo) / width).floor();
        let i = if i.is_nan() {
            0
        } else {
            (i.max(0.0) as usize).min(bins - 1)
        };
        counts[i] += 1.0;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_scipy_and_the_psi_formula() {
        // scipy.spatial.distance.jensenshannon([.5,.3,.2], [.2,.3,.5], base=2)
        let d = js_distance(&[0.5, 0.3, 0.2], &[0.2, 0.3, 0.5]);
        assert!((d - 0.309_540_953_677_148_2).abs() < 1e-12, "{d}");
        // Σ (a − e) ln(a / e) with e = [.5,.3,.2], a = [.2,.3,.5]
        let p = psi(&[5.0, 3.0, 2.0], &[2.0, 3.0, 5.0]);
        assert!((p - 0.549_774_439_124_493).abs() < 1e-6, "{p}");
        assert_eq!(js_distance(&[1.0, 2.0], &[2.0, 4.0]), 0.0);
        assert!(psi(&[1.0, 0.0], &[0.0, 1.0]) > 1.0);
        assert_eq!(
            histogram([0.05, 0.5, 0.99, 1.0, -1.0], 10, 0.0, 1.0)[9],
            2.0
        );
    }
}
