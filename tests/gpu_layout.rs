//! The GPU's code path, run on the CPU: padded batches with an attention mask and candle's
//! composed ops (`kernels::use_composed_ops`, the op mix a GPU runs) train the tiny model to
//! the same losses and gradients as the CPU default (packed batches, fused CPU ops) over
//! several AdamW steps; and bf16 compute over f32 master weights, in that layout, stays within
//! bf16 accuracy of it. What is left for a GPU to prove is candle's CUDA backend and our three
//! kernels (tests/gpu_kernels.rs, and their first-use self-check).

mod common;

use candle_core::{DType, Device};
use catbert::model::{BertClassifier, Mode, ParamStore};
use catbert::rng::Rng;
use catbert::train::loss::weighted_cross_entropy;
use catbert::train::optim::{AdamW, AdamWConfig};
use common::*;

const TEXTS: [&str; 6] = [
    "Organic whole milk, 1 gallon",
    "Paper towels",
    "Sparkling water lemon 12 x 355 ml cans",
    "Basmati rice 5 kg",
    "Dish soap",
    "Frozen mixed berries family pack 1.5 kg",
];
const LABELS: [usize; 6] = [0, 1, 2, 0, 1, 2];
const STEPS: usize = 5;

/// The losses of `STEPS` AdamW steps on the same batch and the last step's gradients, from
/// the tiny checkpoint with dropout off, in one layout and compute dtype.
fn train(gpu_layout: bool, compute: DType) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    let (ckpt, config, batch) = tiny_without_dropout(&TEXTS);
    let store = ParamStore::new(
        ckpt.read_tensors().unwrap(),
        &Device::Cpu,
        DType::F32,
        true,
        7,
    )
    .with_compute_dtype(compute);
    let mut model = BertClassifier::load(&store, &config, 3).unwrap();
    let (params, _) = store.finish();
    model.set_packing(!gpu_layout);
    catbert::kernels::use_composed_ops(gpu_layout);
    let mut opt = AdamW::new(
        &params.vars,
        AdamWConfig {
            lr: 1e-3,
            weight_decay: 0.01,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    let (mut losses, mut last) = (Vec::new(), Vec::new());
    for _ in 0..STEPS {
        let mut rng = Rng::new(3);
        let logits = model
            .forward(&batch, &mut Mode::Train { rng: &mut rng })
            .unwrap();
        assert_eq!(logits.dtype(), compute);
        let loss = weighted_cross_entropy(&logits, &LABELS, &[1.5, 0.5, 2.0]).unwrap();
        let value = loss
            .to_dtype(DType::F32)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let grads = loss.backward().unwrap();
        last = params
            .vars
            .iter()
            .map(|p| {
                let g = grads
                    .get(p.var.as_tensor())
                    .expect("every parameter has a gradient");
                assert_eq!(
                    g.dtype(),
                    DType::F32,
                    "{}: master weights get f32 gradients",
                    p.name
                );
                (p.name.clone(), g.flatten_all().unwrap().to_vec1().unwrap())
            })
            .collect();
        opt.step(&grads, 1e-3, 1.0).unwrap();
        losses.push(value);
    }
    catbert::kernels::use_composed_ops(false);
    (losses, last)
}

#[test]
fn the_gpu_layout_trains_like_the_cpu_default() {
    let (cpu_losses, cpu_grads) = train(false, DType::F32);
    let (gpu_losses, gpu_grads) = train(true, DType::F32);
    eprintln!("losses: cpu {cpu_losses:?}\n        gpu layout {gpu_losses:?}");
    assert!(
        cpu_losses[STEPS - 1] < cpu_losses[0],
        "not learning: {cpu_losses:?}"
    );
    for (step, (a, b)) in cpu_losses.iter().zip(&gpu_losses).enumerate() {
        assert!(
            (a - b).abs() < 1e-5 * a.abs().max(1.0),
            "step {step}: {a} vs {b}"
        );
    }
    assert_eq!(cpu_grads.len(), gpu_grads.len());
    // Not bit for bit: another path was taken (padding, composed ops), rounding differs.
    assert_ne!(
        cpu_grads, gpu_grads,
        "the GPU layout ran the CPU default's path"
    );
    for ((name, a), (_, b)) in cpu_grads.iter().zip(&gpu_grads) {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        assert!(
            worst_diff(a, b) / scale < 1e-4,
            "{name}: gradients differ by {}",
            worst_diff(a, b)
        );
    }

    // bf16 compute over f32 master weights, in the GPU layout: within bf16 accuracy.
    let (half_losses, _) = train(true, DType::BF16);
    eprintln!("        bf16 {half_losses:?}");
    for (step, (a, b)) in gpu_losses.iter().zip(&half_losses).enumerate() {
        assert!(
            (a - b).abs() < 0.03 * a.abs().max(1.0),
            "step {step}: f32 {a} vs bf16 {b}"
        );
    }
}
