//! AdamW as PyTorch and the transformers Trainer run it: decoupled weight decay (not on biases
//! or LayerNorm weights), bias-corrected moments, a linear warm-up/decay schedule, and global
//! gradient-norm clipping. Its moments are ours to save, so an interrupted run resumes exactly.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

use crate::model::NamedParam;

/// Hyperparameters of AdamW.
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 5e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Whether weight decay applies to a parameter: not to biases nor LayerNorm weights
/// (the transformers Trainer's rule).
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm."))
}

/// One parameter with its optimizer state.
struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// AdamW over named parameters.
pub struct AdamW {
    slots: Vec<Slot>,
    config: AdamWConfig,
    step: usize,
}

impl AdamW {
    pub fn new(params: &[NamedParam], config: AdamWConfig) -> Result<Self> {
        let slots = params
            .iter()
            .map(|p| {
                Ok(Slot {
                    name: p.name.clone(),
                    var: p.var.clone(),
                    m: p.var.zeros_like()?,
                    v: p.var.zeros_like()?,
                    decay: decays(&p.name),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            config,
            step: 0,
        })
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Apply one update with learning rate `lr` (the schedule's value for this step).
    /// Parameters without a gradient (none, in a correct model) are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            slot.m = ((&slot.m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            slot.v = ((&slot.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            // torch.optim.AdamW: p *= 1 - lr*wd; p -= lr/bias1 * m / (sqrt(v)/sqrt(bias2) + eps)
            let theta = slot.var.as_tensor();
            let theta = if slot.decay && c.weight_decay != 0.0 {
                (theta * (1.0 - lr * c.weight_decay))?
            } else {
                theta.clone()
            };
            let denom = ((slot.v.sqrt()? / bias2_sqrt)? + c.eps)?;
            let update = (slot.m.div(&denom)? * (lr / bias1))?;
            slot.var.set(&(theta - update)?)?;
        }
        Ok(())
    }

    /// The moments by parameter name, for saving: (`m.NAME`, `v.NAME`).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .flat_map(|s| {
                [
                    (format!("m.{}", s.name), s.m.clone()),
                    (format!("v.{}", s.name), s.v.clone()),
                ]
            })
            .collect()
    }

    /// Restore moments and the step count saved by [`AdamW::state_tensors`].
    pub fn load_state(
        &mut self,
        tensors: &std::collections::HashMap<String, Tensor>,
        step: usize,
    ) -> Result<()> {
        for slot in &mut self.slots {
            let get = |key: String| -> Result<Tensor> {
                let t = tensors.get(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state lacks {key}"))
                })?;
                t.to_device(slot.var.device())?.to_dtype(slot.var.dtype())
            };
            slot.m = get(format!("m.{}", slot.name))?;
            slot.v = get(format!("v.{}", slot.name))?;
        }
        self.step = step;
        Ok(())
    }
}

/// Linear warm-up from 0 to 1 over `warmup` steps, then linear decay to 0 at `total`
/// (transformers' `get_linear_schedule_with_warmup`). `step` counts steps already taken.
pub fn linear_schedule(step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    ((total.saturating_sub(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64).max(0.0)
}

/// Scale gradients so their global L2 norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, params: &[NamedParam], max_norm: f64) -> Result<f64> {
    let mut sq = Vec::with_capacity(params.len());
    for p in params {
        if let Some(g) = grads.get(p.var.as_tensor()) {
            sq.push(g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?);
        }
    }
    if sq.is_empty() {
        return Ok(0.0);
    }
    let total = Tensor::stack(&sq, 0)?.sum_all()?.to_scalar::<f64>()?.sqrt();
    if max_norm > 0.0 {
        let coef = max_norm / (total + 1e-6);
        if coef < 1.0 {
            for p in params {
                if let Some(g) = grads.remove(p.var.as_tensor()) {
                    grads.insert(p.var.as_tensor(), (g * coef)?);
                }
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert_eq!(linear_schedule(0, 10, 100), 0.0);
        assert_eq!(linear_schedule(5, 10, 100), 0.5);
        assert_eq!(linear_schedule(10, 10, 100), 1.0);
        assert_eq!(linear_schedule(55, 10, 100), 0.5);
        assert_eq!(linear_schedule(100, 10, 100), 0.0);
        assert_eq!(linear_schedule(0, 0, 4), 1.0);
    }

    #[test]
    fn no_decay_on_biases_and_layer_norm() {
        assert!(decays("bert.encoder.layer.0.attention.self.query.weight"));
        assert!(decays("classifier.weight"));
        assert!(!decays("classifier.bias"));
        assert!(!decays("bert.embeddings.LayerNorm.weight"));
    }

    /// One AdamW step by hand: m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g², so the step is
    /// lr · g/(|g| + eps) = lr · sign(g), after the weight decay factor (1 - lr·wd).
    #[test]
    fn first_step_moves_by_lr_times_sign() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[1.0f64, -2.0], &dev)?)?;
        let params = vec![NamedParam {
            name: "w.weight".into(),
            var: var.clone(),
        }];
        let loss = (var.as_tensor() * &Tensor::new(&[3.0f64, -0.5], &dev)?)?.sum_all()?;
        let grads = loss.backward()?;
        let mut opt = AdamW::new(
            &params,
            AdamWConfig {
                lr: 0.1,
                weight_decay: 0.5,
                ..Default::default()
            },
        )?;
        opt.step(&grads, 0.1)?;
        let got = var.to_vec1::<f64>()?;
        let want = [1.0 * (1.0 - 0.05) - 0.1, -2.0 * (1.0 - 0.05) + 0.1];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-7, "{got:?} vs {want:?}");
        }
        Ok(())
    }

    #[test]
    fn clipping_scales_to_the_max_norm() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[0.0f64, 0.0], &dev)?)?;
        let params = vec![NamedParam {
            name: "w".into(),
            var: var.clone(),
        }];
        let loss = (var.as_tensor() * &Tensor::new(&[3.0f64, 4.0], &dev)?)?.sum_all()?;
        let mut grads = loss.backward()?;
        let norm = clip_grad_norm(&mut grads, &params, 1.0)?;
        assert!((norm - 5.0).abs() < 1e-12);
        let g = grads.get(var.as_tensor()).unwrap().to_vec1::<f64>()?;
        assert!(
            (g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6,
            "{g:?}"
        );
        Ok(())
    }
}
