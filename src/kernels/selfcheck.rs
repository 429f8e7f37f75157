//! First-use self-check of catbert's own GPU kernels. The first time a process would run one
//! of them on a device other than the CPU, it runs the kernel on a small seeded input beside
//! its CPU twin (the same op's CPU code); beyond the tolerance (or on an error) the kernel is
//! not used for the rest of the process — its caller takes candle's composed ops (for softmax +
//! top-k: the CPU twin, on the host) — and the
//! mismatch is kept as one line for the front end to show and for `catbert.json`
//! ([`fallbacks`]). On the CPU nothing is checked: the CPU code is the twin.
//!
//! Test hook: `CATBERT_KERNEL_CHECK=inject:NAME` (NAME = `weighted_cross_entropy`,
//! `softmax_top_k`, `bias_gelu` or `all`) checks on the CPU too and adds 1 to that kernel's
//! result, so the fallback path can be tested without a GPU.

use std::sync::{Mutex, OnceLock};

use candle_core::{Device, Result, Tensor};

/// catbert's own GPU kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Fused class-weighted cross-entropy with its gradient.
    WeightedCrossEntropy,
    /// Softmax and top-k per row.
    SoftmaxTopK,
    /// gelu(x + bias) and its backward pass.
    BiasGelu,
}

impl Kernel {
    #[cfg(test)]
    const ALL: [Kernel; 3] = [
        Kernel::WeightedCrossEntropy,
        Kernel::SoftmaxTopK,
        Kernel::BiasGelu,
    ];

    /// The kernel's name in messages and in the test hook.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::WeightedCrossEntropy => "weighted_cross_entropy",
            Kernel::SoftmaxTopK => "softmax_top_k",
            Kernel::BiasGelu => "bias_gelu",
        }
    }

    /// What runs instead once the kernel has failed its check.
    fn replacement(self) -> &'static str {
        match self {
            Kernel::SoftmaxTopK => "its CPU twin runs on the host instead",
            _ => "candle's composed ops are used instead",
        }
    }

    /// Largest absolute difference from the CPU twin that passes (f32 kernels on values of
    /// order 1: far above rounding, far below a wrong result).
    fn tolerance(self) -> f32 {
        1e-4
    }
}

static VERDICTS: [OnceLock<bool>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
static FALLBACKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The kernel the test hook injects a mismatch into, if any (read once: `kernel_ok` sits on
/// the hot path of every forward pass).
fn injected() -> Option<&'static str> {
    static HOOK: OnceLock<Option<String>> = OnceLock::new();
    HOOK.get_or_init(|| {
        std::env::var("CATBERT_KERNEL_CHECK")
            .ok()
            .and_then(|v| v.strip_prefix("inject:").map(str::to_string))
    })
    .as_deref()
}

/// Whether `kernel` may run on `device`; the first call on a non-CPU device checks it.
pub(crate) fn kernel_ok(kernel: Kernel, device: &Device) -> bool {
    if device.is_cpu() && injected().is_none() {
        return true;
    }
    let cell = &VERDICTS[kernel as usize];
    if let Some(&ok) = cell.get() {
        return ok;
    }
    match verdict(kernel, device) {
        Some(ok) => *cell.get_or_init(|| ok),
        // Out of memory during the check says nothing about the kernel: the composed ops run
        // this once and the check runs again next time.
        None => false,
    }
}

/// The check's verdict, or `None` when it could not run for want of device memory.
fn verdict(kernel: Kernel, device: &Device) -> Option<bool> {
    let inject = injected().is_some_and(|n| n == kernel.name() || n == "all");
    let line = match off_by(kernel, device, inject) {
        Ok(worst) if worst <= kernel.tolerance() => return Some(true),
        Err(e) if crate::error::is_out_of_memory(&e) => return None,
        Ok(worst) => format!(
            "catbert's {} kernel is off by {worst:.2e} from its CPU twin on {} (tolerance {:.0e}): {}",
            kernel.name(),
            describe(device),
            kernel.tolerance(),
            kernel.replacement()
        ),
        Err(e) => format!(
            "catbert's {} kernel failed its self-check on {} ({e}): {}",
            kernel.name(),
            describe(device),
            kernel.replacement()
        ),
    };
    FALLBACKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(line);
    Some(false)
}

fn describe(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "the CPU",
        Device::Cuda(_) => "the GPU",
        _ => "this device",
    }
}

/// Kernels that failed their self-check in this process, one line each (empty when all passed).
pub fn fallbacks() -> Vec<String> {
    FALLBACKS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Seeded values in [-2, 2).
fn seeded(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let h = i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503);
            (h % 4000) as f32 / 1000.0 - 2.0
        })
        .collect()
}

/// Largest absolute difference between the kernel on `device` and its CPU twin.
fn off_by(kernel: Kernel, device: &Device, inject: bool) -> Result<f32> {
    let cpu = Device::Cpu;
    let run = |dev: &Device| -> Result<Vec<f32>> {
        match kernel {
            Kernel::WeightedCrossEntropy => {
                let (rows, classes) = (7, 13);
                let labels: Vec<u32> = (0..rows as u32).map(|r| (r * 5) % classes as u32).collect();
                let weights = seeded(classes, 3)
                    .iter()
                    .map(|w| w.abs() + 0.1)
                    .collect::<Vec<_>>();
                let total: f32 = labels.iter().map(|&y| weights[y as usize]).sum();
                let logits = Tensor::from_vec(seeded(rows * classes, 1), (rows, classes), dev)?;
                let out = logits.apply_op3_no_bwd(
                    &Tensor::new(labels.as_slice(), dev)?,
                    &Tensor::new(weights.as_slice(), dev)?,
                    &super::WeightedCrossEntropy {
                        total_weight: total,
                    },
                )?;
                out.flatten_all()?.to_vec1::<f32>()
            }
            Kernel::SoftmaxTopK => {
                let logits = Tensor::from_vec(seeded(9 * 11, 2), (9, 11), dev)?;
                let out = logits.apply_op1_no_bwd(&super::SoftmaxTopK { k: 5 })?;
                out.flatten_all()?.to_vec1::<f32>()
            }
            Kernel::BiasGelu => {
                let (rows, d) = (6, 37);
                let x = Tensor::from_vec(seeded(rows * d, 4), (rows, d), dev)?;
                let bias = Tensor::from_vec(seeded(d, 5), d, dev)?;
                let dy = Tensor::from_vec(seeded(rows * d, 6), (rows, d), dev)?;
                let mut out = x
                    .apply_op2_no_bwd(&bias, &super::BiasGelu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                out.extend(
                    x.apply_op3_no_bwd(&bias, &dy, &super::BiasGeluBackward)?
                        .flatten_all()?
                        .to_vec1::<f32>()?,
                );
                Ok(out)
            }
        }
    };
    let mut got = run(device)?;
    if inject {
        got.iter_mut().for_each(|v| *v += 1.0);
    }
    let want = run(&cpu)?;
    if got.len() != want.len() {
        candle_core::bail!("{} values instead of {}", got.len(), want.len())
    }
    Ok(got
        .iter()
        .zip(&want)
        .map(|(a, b)| {
            if a.is_nan() != b.is_nan() {
                f32::INFINITY
            } else {
                (a - b).abs()
            }
        })
        .fold(0f32, f32::max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_matches_its_twin_and_an_injected_mismatch_is_caught() {
        for kernel in Kernel::ALL {
            // On the CPU the kernel is its own twin: zero difference.
            assert_eq!(
                off_by(kernel, &Device::Cpu, false).unwrap(),
                0.0,
                "{kernel:?}"
            );
            let off = off_by(kernel, &Device::Cpu, true).unwrap();
            assert!(
                off > kernel.tolerance(),
                "{kernel:?}: injected mismatch {off}"
            );
        }
    }
}
