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
    let (batch, classes) = logits.dims2()?;
    // The per-row coefficient w_y / Σw sits at the label's column, so the loss is one
    // multiply-and-sum of the log-probabilities.
    let total: f64 = labels.iter().map(|&y| weights[y] as f64).sum();
    let mut coef = vec![0f32; batch * classes];
    for (i, &y) in labels.iter().enumerate() {
        coef[i * classes + y] = (weights[y] as f64 / total) as f32;
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
}
