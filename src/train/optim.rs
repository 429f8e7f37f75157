//! AdamW as PyTorch and the transformers Trainer run it: decoupled weight decay (not on biases
//! or LayerNorm weights), bias-corrected moments, a linear warm-up/decay schedule, and global
//! gradient-norm clipping. Its moments are ours to save, so an interrupted run resumes exactly.

use candle_core::backprop::GradStore;
use std::sync::Mutex;

use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Result, Tensor, Var};
use rayon::prelude::*;

use crate::model::NamedParam;

/// Hyperparameters of AdamW.
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    /// Peak learning rate; [`AdamW::step`] is given the schedule's value for each step.
    pub lr: f64,
    /// Decay rate of the first-moment (mean) estimate.
    pub beta1: f64,
    /// Decay rate of the second-moment (uncentred variance) estimate.
    pub beta2: f64,
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// Decoupled weight-decay coefficient (not applied to biases or LayerNorm weights).
    pub weight_decay: f64,
}

/// PyTorch's betas and epsilon; learning rate and weight decay from [`crate::train::Hyper`]'s
/// defaults (their one home).
impl Default for AdamWConfig {
    fn default() -> Self {
        let hyper = crate::train::Hyper::default();
        Self {
            lr: hyper.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: hyper.weight_decay,
        }
    }
}

/// Whether weight decay applies to a parameter: not to biases nor LayerNorm weights
/// (the transformers Trainer's rule).
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm."))
}

/// One parameter with its optimizer state: the two moments stacked as (2, numel), so the CPU
/// path can update both in place in one pass.
struct Slot {
    name: String,
    var: Var,
    moments: Tensor,
    decay: bool,
    /// Factor on the learning rate (layer-wise decay; 1 by default).
    lr_scale: f64,
}

/// AdamW over named parameters.
pub struct AdamW {
    slots: Vec<Slot>,
    config: AdamWConfig,
    step: usize,
}

impl AdamW {
    /// An optimizer over `params` with zeroed moments, at step 0.
    pub fn new(params: &[NamedParam], config: AdamWConfig) -> Result<Self> {
        let slots = params
            .iter()
            .map(|p| {
                Ok(Slot {
                    name: p.name.clone(),
                    var: p.var.clone(),
                    moments: Tensor::zeros((2, p.var.elem_count()), DType::F32, p.var.device())?,
                    decay: decays(&p.name),
                    lr_scale: 1.0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            config,
            step: 0,
        })
    }

    /// Names of the parameters weight decay applies to.
    pub fn decayed(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|s| s.decay)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// Give each parameter its factor on the learning rate (as a PyTorch parameter group with
    /// its own `lr` under the same schedule: weight decay scales with it).
    pub fn scale_lr(&mut self, scales: &[f64]) {
        for (slot, &s) in self.slots.iter_mut().zip(scales) {
            slot.lr_scale = s;
        }
    }

    /// The parameters' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// Each parameter's factor on the learning rate, by name.
    pub fn lr_scales(&self) -> Vec<(&str, f64)> {
        self.slots
            .iter()
            .map(|s| (s.name.as_str(), s.lr_scale))
            .collect()
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Clip the gradients to a global L2 norm of `max_norm` (as
    /// `torch.nn.utils.clip_grad_norm_`; 0 = no clipping, as the reference skips that call) and
    /// apply one update with learning rate `lr` (the schedule's value for this step). The clip
    /// factor is folded into the update rather than written back into the gradients. Returns
    /// the norm before clipping. Parameters without a gradient (none, in a correct model) are
    /// left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64, max_norm: f64) -> Result<f64> {
        let norm = grad_norm(grads, self.slots.iter().map(|s| &s.var))?;
        let scale = if max_norm > 0.0 {
            (max_norm / (norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let update = Update {
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            grad_scale: scale as f32,
            lr: lr as f32,
            weight_decay: 0.0,
            bias1: (1.0 - c.beta1.powi(t)) as f32,
            bias2_sqrt: (1.0 - c.beta2.powi(t)).sqrt() as f32,
            eps: c.eps as f32,
        };
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let update = Update {
                lr: (lr * slot.lr_scale) as f32,
                weight_decay: if slot.decay {
                    c.weight_decay as f32
                } else {
                    0.0
                },
                ..update
            };
            if slot.var.device().is_cpu()
                && slot.var.dtype() == DType::F32
                && !crate::kernels::composed_ops_on()
            {
                let g = g.to_dtype(DType::F32)?.contiguous()?;
                slot.var.as_tensor().inplace_op2(
                    &g,
                    &FusedUpdate {
                        u: update,
                        moments: &slot.moments,
                    },
                )?;
            } else {
                slot.moments = update.composed(&slot.var, &slot.moments, g)?;
            }
        }
        Ok(norm)
    }

    /// The moments by parameter name, for saving: (`m.NAME`, `v.NAME`).
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.slots.len());
        for s in &self.slots {
            let shape = s.var.shape();
            out.push((format!("m.{}", s.name), s.moments.get(0)?.reshape(shape)?));
            out.push((format!("v.{}", s.name), s.moments.get(1)?.reshape(shape)?));
        }
        Ok(out)
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
                t.to_device(slot.var.device())?
                    .to_dtype(DType::F32)?
                    .flatten_all()
            };
            slot.moments = Tensor::stack(
                &[
                    get(format!("m.{}", slot.name))?,
                    get(format!("v.{}", slot.name))?,
                ],
                0,
            )?;
        }
        self.step = step;
        Ok(())
    }
}

/// The scalars of one AdamW update of one parameter.
#[derive(Debug, Clone, Copy)]
struct Update {
    beta1: f32,
    beta2: f32,
    grad_scale: f32,
    lr: f32,
    weight_decay: f32,
    bias1: f32,
    bias2_sqrt: f32,
    eps: f32,
}

impl Update {
    /// torch.optim.AdamW: p *= 1 - lr·wd; p -= lr/bias1 · m / (sqrt(v)/sqrt(bias2) + eps).
    fn param(&self, p: f32, m: f32, v: f32) -> f32 {
        p * (1.0 - self.lr * self.weight_decay)
            - (self.lr / self.bias1) * m / (v.sqrt() / self.bias2_sqrt + self.eps)
    }

    /// The same update from tensor ops (any device); returns the new moments.
    fn composed(&self, var: &Var, moments: &Tensor, g: &Tensor) -> Result<Tensor> {
        let g = (g.to_dtype(DType::F32)?.flatten_all()? * self.grad_scale as f64)?;
        let m = ((moments.get(0)? * self.beta1 as f64)? + (&g * (1.0 - self.beta1 as f64))?)?;
        let v = ((moments.get(1)? * self.beta2 as f64)? + (g.sqr()? * (1.0 - self.beta2 as f64))?)?;
        let theta = (var.flatten_all()?.to_dtype(DType::F32)?
            * (1.0 - (self.lr * self.weight_decay) as f64))?;
        let denom = ((v.sqrt()? / self.bias2_sqrt as f64)? + self.eps as f64)?;
        let step = (m.div(&denom)? * (self.lr / self.bias1) as f64)?;
        var.set(
            &(theta - step)?
                .reshape(var.shape())?
                .to_dtype(var.dtype())?,
        )?;
        Tensor::stack(&[m, v], 0)
    }
}

/// Contiguous f32 data of a CPU storage.
fn f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(d), Some((a, b))) => Ok(&mut d[a..b]),
        _ => candle_core::bail!("AdamW: expected a contiguous f32 CPU tensor"),
    }
}

/// Chunk size for the parallel in-place updates (large enough to amortise task overhead).
const CHUNK: usize = 1 << 15;

/// One AdamW pass over a parameter, in place and in parallel: with g scaled by the clip
/// factor, m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g², then the parameter from the new
/// moments — each element read and written once (the parameter's storage is held by this op,
/// the (2, n) moments' by the inner one).
struct FusedUpdate<'a> {
    u: Update,
    moments: &'a Tensor,
}

impl InplaceOp2 for FusedUpdate<'_> {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let param = f32_mut(s1, l1)?;
        let grad = crate::kernels::f32_slice(s2, l2, "gradient")?;
        self.moments.inplace_op1(&MomentsAndParam {
            u: self.u,
            param: Mutex::new(Some(param)),
            grad,
        })
    }
}

/// The inner half of [`FusedUpdate`]: holds the moments, updates both.
struct MomentsAndParam<'a> {
    u: Update,
    param: Mutex<Option<&'a mut [f32]>>,
    grad: &'a [f32],
}

impl InplaceOp1 for MomentsAndParam<'_> {
    fn name(&self) -> &'static str {
        "adamw-moments"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let u = self.u;
        let Some(p) = self
            .param
            .lock()
            .map_err(|_| candle_core::Error::Msg("AdamW: poisoned".into()))?
            .take()
        else {
            candle_core::bail!("AdamW: the parameter was already updated")
        };
        let (g, mv) = (self.grad, f32_mut(s, l)?);
        let (m, v) = mv.split_at_mut(g.len());
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| {
                for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                    let g = g * u.grad_scale;
                    *m = u.beta1 * *m + (1.0 - u.beta1) * g;
                    *v = u.beta2 * *v + (1.0 - u.beta2) * g * g;
                    *p = u.param(*p, *m, *v);
                }
            });
        Ok(())
    }
}

/// Global L2 norm of the gradients of `vars`. On the CPU, f32 gradients are summed in f64
/// partial sums per chunk, added in order (no squared copy of each gradient; the same value
/// whatever the thread count).
pub fn grad_norm<'a>(grads: &GradStore, vars: impl Iterator<Item = &'a Var>) -> Result<f64> {
    let mut total = 0f64;
    let mut sq = Vec::new();
    for var in vars {
        let Some(g) = grads.get(var.as_tensor()) else {
            continue;
        };
        if g.device().is_cpu() && g.dtype() == DType::F32 && g.is_contiguous() {
            let (storage, layout) = g.storage_and_layout();
            let candle_core::Storage::Cpu(storage) = &*storage else {
                unreachable!("a CPU tensor")
            };
            let values = crate::kernels::f32_slice(storage, layout, "gradient")?;
            let parts: Vec<f64> = values
                .par_chunks(CHUNK)
                .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
                .collect();
            total += parts.iter().sum::<f64>();
        } else {
            sq.push(
                g.to_dtype(DType::F32)?
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?,
            );
        }
    }
    if !sq.is_empty() {
        total += Tensor::stack(&sq, 0)?.sum_all()?.to_scalar::<f64>()?;
    }
    Ok(total.sqrt())
}

/// Linear warm-up from 0 to 1 over `warmup` steps, then linear decay to 0 at `total`
/// (transformers' `get_linear_schedule_with_warmup`). `step` counts steps already taken.
pub fn linear_schedule(step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    ((total.saturating_sub(step)) as f64 / (total.saturating_sub(warmup)).max(1) as f64).max(0.0)
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
    /// lr · g/(|g| + eps) = lr · sign(g), after the weight decay factor (1 - lr·wd). Checked on
    /// the fused CPU path (f32) and the composed path (f64).
    #[test]
    fn first_step_moves_by_lr_times_sign() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            let dev = candle_core::Device::Cpu;
            let var = Var::from_tensor(&Tensor::new(&[1.0f64, -2.0], &dev)?.to_dtype(dtype)?)?;
            let params = vec![NamedParam {
                name: "w.weight".into(),
                var: var.clone(),
            }];
            let x = Tensor::new(&[3.0f64, -0.5], &dev)?.to_dtype(dtype)?;
            let grads = (var.as_tensor() * &x)?.sum_all()?.backward()?;
            let config = AdamWConfig {
                lr: 0.1,
                weight_decay: 0.5,
                ..Default::default()
            };
            let mut opt = AdamW::new(&params, config)?;
            opt.step(&grads, 0.1, 0.0)?;
            let got = var.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let want = [1.0 * (1.0 - 0.05) - 0.1, -2.0 * (1.0 - 0.05) + 0.1];
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{dtype:?}: {got:?} vs {want:?}");
            }
        }
        Ok(())
    }

    /// Gradient (3, 4) has norm 5; clipped to 1 it is (0.6, 0.8), so m = 0.1·(0.6, 0.8).
    #[test]
    fn clipping_scales_the_gradient_to_the_max_norm() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[0.0f32, 0.0], &dev)?)?;
        let params = vec![NamedParam {
            name: "w".into(),
            var: var.clone(),
        }];
        let grads = (var.as_tensor() * &Tensor::new(&[3.0f32, 4.0], &dev)?)?
            .sum_all()?
            .backward()?;
        let mut opt = AdamW::new(&params, AdamWConfig::default())?;
        let norm = opt.step(&grads, 0.1, 1.0)?;
        assert!((norm - 5.0).abs() < 1e-6);
        let m = opt.state_tensors()?[0].1.to_vec1::<f32>()?;
        assert!(
            (m[0] - 0.06).abs() < 1e-6 && (m[1] - 0.08).abs() < 1e-6,
            "{m:?}"
        );
        Ok(())
    }
}
