//! Class-weighted softmax cross-entropy, as `torch.nn.CrossEntropyLoss(weight=w)` computes it:
//! the weighted mean Σᵢ w_{yᵢ}·(−log p_{i,yᵢ}) / Σᵢ w_{yᵢ}.

use candle_core::{DType, Result, Tensor, D};

/// The loss of `logits` (batch, classes) against `labels`, differentiable. Single precision and
/// below use the fused kernel (loss and gradient in one pass); f64 the composed ops.
pub fn weighted_cross_entropy(
    logits: &Tensor,
    labels: &[usize],
    weights: &[f32],
) -> Result<Tensor> {
    use crate::kernels::selfcheck::{kernel_ok, Kernel};
    if logits.dtype() != DType::F64 && kernel_ok(Kernel::WeightedCrossEntropy, logits.device()) {
        let labels: Vec<u32> = labels.iter().map(|&y| y as u32).collect();
        return crate::kernels::weighted_cross_entropy(logits, &labels, weights);
    }
    weighted_cross_entropy_composed(logits, labels, weights)
}

/// The same loss from candle's differentiable ops (the fused kernel's oracle).
pub fn weighted_cross_entropy_composed(
    logits: &Tensor,
    labels: &[usize],
    weights: &[f32],
) -> Result<Tensor> {
    smoothed_cross_entropy(logits, labels, weights, 0.0)
}

/// The training loss: [`weighted_cross_entropy`], with label smoothing `epsilon` when it is
/// above 0 ([`smoothed_cross_entropy`]).
pub fn training_loss(
    logits: &Tensor,
    labels: &[usize],
    weights: &[f32],
    epsilon: f64,
) -> Result<Tensor> {
    if epsilon > 0.0 {
        smoothed_cross_entropy(logits, labels, weights, epsilon)
    } else {
        weighted_cross_entropy(logits, labels, weights)
    }
}

/// Class-weighted cross-entropy with label smoothing ε, from candle's differentiable ops, as
/// `torch.nn.CrossEntropyLoss(weight=w, label_smoothing=ε)` computes it: with
/// W = Σᵢ w_{yᵢ} and C classes,
/// (1 − ε)·Σᵢ w_{yᵢ}·(−log p_{i,yᵢ}) / W + (ε / C)·Σᵢ Σ_c w_c·(−log p_{i,c}) / W.
pub fn smoothed_cross_entropy(
    logits: &Tensor,
    labels: &[usize],
    weights: &[f32],
    epsilon: f64,
) -> Result<Tensor> {
    let (batch, classes) = logits.dims2()?;
    // Each row's coefficients over the classes, so the loss is one multiply-and-sum of the
    // log-probabilities: (1 − ε)·w_y/W at the label's column, plus ε·w_c/(C·W) at every c.
    let total: f64 = labels.iter().map(|&y| weights[y] as f64).sum();
    let spread: Vec<f64> = weights
        .iter()
        .map(|&w| epsilon * w as f64 / (classes as f64 * total))
        .collect();
    let mut coef = Vec::with_capacity(batch * classes);
    for &y in labels {
        coef.extend(spread.iter().map(|&s| s as f32));
        let at = coef.len() - classes + y;
        coef[at] = ((1.0 - epsilon) * weights[y] as f64 / total + spread[y]) as f32;
    }
    // Half-precision logits are reduced in f32; f32/f64 keep their precision.
    let dtype = match logits.dtype() {
        DType::BF16 | DType::F16 => DType::F32,
        d => d,
    };
    let coef = Tensor::from_vec(coef, (batch, classes), logits.device())?.to_dtype(dtype)?;
    let log_probs = candle_nn::ops::log_softmax(&logits.to_dtype(dtype)?, D::Minus1)?;
    (log_probs * coef)?.sum_all()?.neg()
}

/// The same loss from probabilities already on the host (evaluation): rows × classes.
pub fn weighted_cross_entropy_host(
    probs: &[f32],
    classes: usize,
    labels: &[usize],
    weights: &[f32],
) -> f64 {
    let mut num = 0.0;
    let mut den = 0.0;
    for (row, &y) in probs.chunks(classes).zip(labels) {
        let w = weights[y] as f64;
        num += w * -(row[y].max(f32::MIN_POSITIVE) as f64).ln();
        den += w;
    }
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// torch: F.cross_entropy(torch.tensor([[1.,2.,3.],[1.,0.,-1.]]), torch.tensor([2,0]),
    ///        weight=torch.tensor([2.,1.,0.5]))  → 0.4076059639453888
    #[test]
    fn matches_torch_weighted_mean() -> Result<()> {
        let logits = Tensor::new(&[[1f32, 2., 3.], [1., 0., -1.]], &Device::Cpu)?;
        let loss =
            weighted_cross_entropy(&logits, &[2, 0], &[2.0, 1.0, 0.5])?.to_scalar::<f32>()?;
        assert!((loss - 0.407_605_96).abs() < 1e-6, "{loss}");
        let probs = candle_nn::ops::softmax_last_dim(&logits)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let host = weighted_cross_entropy_host(&probs, 3, &[2, 0], &[2.0, 1.0, 0.5]);
        assert!((host - 0.407_605_96).abs() < 1e-6, "{host}");
        Ok(())
    }

    #[test]
    fn the_weights_change_the_gradient() -> Result<()> {
        let var = candle_core::Var::new(&[[0.5f32, -0.2, 0.1], [0.3, 0.3, -0.6]], &Device::Cpu)?;
        let grad = |w: &[f32]| -> Result<Vec<Vec<f32>>> {
            let g = weighted_cross_entropy(var.as_tensor(), &[0, 2], w)?.backward()?;
            g.get(var.as_tensor()).unwrap().to_vec2::<f32>()
        };
        let plain = grad(&[1.0, 1.0, 1.0])?;
        let weighted = grad(&[1.0, 1.0, 4.0])?;
        assert_ne!(plain, weighted);
        // Row 1 (label 2) counts 4× as much: its share of the gradient grows from 1/2 to 4/5.
        assert!((weighted[1][2] / plain[1][2] - 1.6).abs() < 1e-5);
        Ok(())
    }

    /// torch: F.cross_entropy(x, torch.tensor([2,0]), weight=torch.tensor([2.,1.,0.5]),
    ///        label_smoothing=0.1) with x as above in float64 → 0.4982219246814179, and
    ///        x.grad after backward.
    #[test]
    fn label_smoothing_matches_torch() -> Result<()> {
        let x = candle_core::Var::new(&[[1f64, 2., 3.], [1., 0., -1.]], &Device::Cpu)?;
        let loss = training_loss(x.as_tensor(), &[2, 0], &[2.0, 1.0, 0.5], 0.1)?;
        assert!((loss.to_scalar::<f64>()? - 0.498_221_924_681_417_9).abs() < 1e-7);
        let grad = loss
            .backward()?
            .get(x.as_tensor())
            .unwrap()
            .to_vec2::<f64>()?;
        let want = [
            [
                -0.006_259_736_748_047_1,
                0.042_138_453_439_087_46,
                -0.035_878_716_691_040_4,
            ],
            [
                -0.236_648_600_572_636_6,
                0.174_291_827_808_678_2,
                0.062_356_772_763_958_33,
            ],
        ];
        for (g, w) in grad.iter().flatten().zip(want.iter().flatten()) {
            assert!((g - w).abs() < 1e-7, "{grad:?}");
        }
        // ε = 0 is the plain weighted loss, through the fused kernel in f32.
        let x32 = x.as_tensor().to_dtype(DType::F32)?;
        let plain = training_loss(&x32, &[2, 0], &[2.0, 1.0, 0.5], 0.0)?.to_scalar::<f32>()?;
        assert!((plain - 0.407_605_96).abs() < 1e-6);
        Ok(())
    }
}
