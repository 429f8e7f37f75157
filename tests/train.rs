//! Training numerics: every parameter gets a gradient, finite differences agree with backprop,
//! class weights matter, and optimizer steps match PyTorch's AdamW.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use catbert::checkpoint::Checkpoint;
use catbert::data::batch::TokenBatch;
use catbert::model::{BertClassifier, Mode, ParamStore};
use catbert::rng::Rng;
use catbert::train::loss::weighted_cross_entropy;
use catbert::train::optim::{linear_schedule, AdamW, AdamWConfig};
use common::*;

const TEXTS: [&str; 4] = [
    "organic whole milk",
    "paper towels 6 pack",
    "sparkling water",
    "aged cheddar cheese block",
];
const LABELS: [usize; 4] = [0, 1, 2, 0];

/// The tiny oracle model in f64, trainable, with a fresh 3-class head.
fn tiny_f64() -> (BertClassifier, catbert::model::ModelParams, TokenBatch) {
    let ckpt = Checkpoint::open(&oracle().join("tiny")).unwrap();
    let mut tensors = ckpt.read_tensors().unwrap();
    tensors.retain(|k, _| !k.starts_with("classifier."));
    let store = ParamStore::new(tensors, &Device::Cpu, DType::F64, true, 7);
    let model = BertClassifier::load(&store, &ckpt.config, 3).unwrap();
    let (params, _) = store.finish();
    let ids = ckpt.text_encoder(64).unwrap().encode_all(&TEXTS).unwrap();
    let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    (model, params, TokenBatch::new(&rows, 0))
}

/// Loss with dropout on, using a copy of `rng` so every call draws the same masks.
fn loss_with(model: &BertClassifier, batch: &TokenBatch, rng: &Rng, weights: &[f32]) -> Tensor {
    let mut rng = rng.clone();
    let logits = model
        .forward(batch, &mut Mode::Train { rng: &mut rng })
        .unwrap();
    weighted_cross_entropy(&logits, &LABELS, weights).unwrap()
}

#[test]
fn every_parameter_gets_a_finite_nonzero_gradient_and_finite_differences_agree() {
    let (model, params, batch) = tiny_f64();
    let rng = Rng::new(5);
    let weights = [1.5f32, 0.5, 2.0];
    let grads = loss_with(&model, &batch, &rng, &weights)
        .backward()
        .unwrap();
    assert_eq!(params.vars.len(), 5 + 16 * 2 + 2 + 2);
    for p in &params.vars {
        let g = grads
            .get(p.var.as_tensor())
            .unwrap_or_else(|| panic!("{} has no gradient", p.name));
        let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{}: non-finite gradient",
            p.name
        );
        assert!(g.iter().any(|&x| x != 0.0), "{}: zero gradient", p.name);
    }

    // Central differences on a few entries of parameters spread over the network.
    let h = 1e-6;
    let mut checked = 0;
    for p in params.vars.iter().filter(|p| {
        [
            "word_embeddings",
            "embeddings.LayerNorm.weight",
            "layer.0.attention.self.query.weight",
            "layer.1.output.LayerNorm.bias",
            "layer.1.intermediate.dense.weight",
            "pooler.dense.weight",
            "classifier.weight",
        ]
        .iter()
        .any(|k| p.name.contains(k))
    }) {
        let analytic = grads
            .get(p.var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let original = p
            .var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        // The entries with the largest gradient (a used embedding row, for the embedding table).
        let mut order: Vec<usize> = (0..analytic.len()).collect();
        order.sort_by(|&a, &b| analytic[b].abs().total_cmp(&analytic[a].abs()));
        for &i in order.iter().take(3) {
            let eval_at = |delta: f64| {
                let mut v = original.clone();
                v[i] += delta;
                p.var
                    .set(&Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                loss_with(&model, &batch, &rng, &weights)
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let numeric = (eval_at(h) - eval_at(-h)) / (2.0 * h);
            p.var
                .set(&Tensor::from_vec(original.clone(), p.var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let rel = (numeric - analytic[i]).abs() / analytic[i].abs().max(1e-8);
            assert!(
                rel < 1e-5,
                "{}[{i}]: numeric {numeric} vs backprop {}",
                p.name,
                analytic[i]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 7 * 3);
}

#[test]
fn class_weights_change_the_gradient_of_the_model() {
    let (model, params, batch) = tiny_f64();
    let rng = Rng::new(1);
    let head = params
        .vars
        .iter()
        .find(|p| p.name == "classifier.weight")
        .unwrap();
    let grad = |w: &[f32]| {
        let g = loss_with(&model, &batch, &rng, w).backward().unwrap();
        g.get(head.var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    let plain = grad(&[1.0, 1.0, 1.0]);
    let weighted = grad(&[1.0, 1.0, 5.0]);
    let diff: f64 = plain
        .iter()
        .zip(&weighted)
        .map(|(a, b)| (a - b).abs())
        .sum();
    assert!(diff > 1e-3, "weights barely change the gradient: {diff}");
}

/// Three steps on one batch against transformers + torch.optim.AdamW + LambdaLR +
/// clip_grad_norm_ (scripts/make-oracle.py, `train-step/`).
#[test]
fn optimizer_steps_match_pytorch_adamw() {
    let dir = oracle().join("train-step");
    let expected = read_json(&dir.join("expected.json"));
    let ckpt = Checkpoint::open(&dir.join("initial")).unwrap();
    let labels: Vec<usize> = expected["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let weights: Vec<f32> = expected["class_weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let names: Vec<String> = (0..5).map(|i| format!("class_{i}")).collect();
    let loaded = ckpt
        .load_for_training(&Device::Cpu, DType::F32, DType::F32, &names, 0, None)
        .unwrap();
    assert!(loaded.report.missing.is_empty());
    let ids = ints2(&expected["input_ids"]);
    assert_eq!(
        ckpt.text_encoder(64)
            .unwrap()
            .encode_all(&strings(&expected["texts"]))
            .unwrap(),
        ids
    );
    let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = TokenBatch::new(&rows, 0);

    let base_lr = expected["lr"].as_f64().unwrap();
    let (warmup, total) = (
        expected["warmup"].as_u64().unwrap() as usize,
        expected["total_steps"].as_u64().unwrap() as usize,
    );
    let max_norm = expected["max_grad_norm"].as_f64().unwrap();
    let config = AdamWConfig {
        lr: base_lr,
        weight_decay: expected["weight_decay"].as_f64().unwrap(),
        ..Default::default()
    };
    let mut opt = AdamW::new(&loaded.params.vars, config).unwrap();
    let mut rng = Rng::new(0);
    for step in 0..expected["steps"].as_u64().unwrap() as usize {
        let lr = base_lr * linear_schedule(opt.steps(), warmup, total);
        assert!((lr - expected["lrs"][step].as_f64().unwrap()).abs() < 1e-12);
        let logits = loaded
            .model
            .forward(&batch, &mut Mode::Train { rng: &mut rng })
            .unwrap();
        let loss = weighted_cross_entropy(&logits, &labels, &weights).unwrap();
        let want_loss = expected["losses"][step].as_f64().unwrap();
        let got_loss = loss.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (got_loss - want_loss).abs() < 1e-5,
            "step {step}: loss {got_loss} vs {want_loss}"
        );
        let grads = loss.backward().unwrap();
        if step == 0 {
            let want = candle_core::safetensors::load(dir.join("grads0.safetensors"), &Device::Cpu)
                .unwrap();
            assert_close(
                &loaded
                    .params
                    .vars
                    .iter()
                    .map(|p| {
                        (
                            p.name.clone(),
                            grads.get(p.var.as_tensor()).unwrap().clone(),
                        )
                    })
                    .collect(),
                &want,
                1e-5,
                "step-1 gradient",
            );
        }
        let norm = opt.step(&grads, lr, max_norm).unwrap();
        let want_norm = expected["grad_norms"][step].as_f64().unwrap();
        assert!(
            (norm - want_norm).abs() < 1e-4 * want_norm.max(1.0),
            "step {step}: grad norm {norm} vs {want_norm}"
        );
    }
    let mut want =
        candle_core::safetensors::load(dir.join("final.safetensors"), &Device::Cpu).unwrap();
    let got: HashMap<String, Tensor> = loaded
        .params
        .vars
        .iter()
        .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
        .collect();
    // Attention key biases have an exact gradient of zero (softmax ignores a shift), so theirs is
    // rounding noise that Adam's normalisation blows up towards ±lr: compared apart, loosely.
    let key_biases: HashMap<String, Tensor> = want
        .iter()
        .filter(|(n, _)| n.ends_with("attention.self.key.bias"))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    want.retain(|n, _| !key_biases.contains_key(n));
    assert_close(&got, &want, 1e-5, "parameters after 3 steps");
    assert_close(
        &got,
        &key_biases,
        5e-5,
        "attention key biases after 3 steps",
    );
}

fn assert_close(
    got: &HashMap<String, Tensor>,
    want: &HashMap<String, Tensor>,
    tol: f32,
    what: &str,
) {
    let mut worst = (0f32, String::new());
    for (name, w) in want.iter().filter(|(n, _)| !n.ends_with("position_ids")) {
        let g = got
            .get(name)
            .unwrap_or_else(|| panic!("{what}: we lack {name}"));
        let d = (g.to_dtype(DType::F32).unwrap() - w.to_dtype(DType::F32).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        if d > worst.0 {
            worst = (d, name.clone());
        }
    }
    eprintln!("{what}: max |diff| {:e} ({})", worst.0, worst.1);
    assert!(
        worst.0 < tol,
        "{what}: max |diff| {} at {}",
        worst.0,
        worst.1
    );
}

/// Mixed precision: bf16 compute over f32 master weights gives the f32 loss to bf16 accuracy,
/// and its gradients reach the f32 parameters.
#[test]
fn bf16_compute_with_f32_master_weights() {
    let ckpt = Checkpoint::open(&oracle().join("tiny")).unwrap();
    let names: Vec<String> = (0..7).map(|i| format!("class_{i}")).collect();
    let ids = ckpt.text_encoder(64).unwrap().encode_all(&TEXTS).unwrap();
    let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = TokenBatch::new(&rows, 0);
    let loss_of = |compute: DType| {
        let mut loaded = ckpt
            .load_for_training(&Device::Cpu, DType::F32, compute, &names, 0, None)
            .unwrap();
        // bf16 runs padded; f32 must too, to draw the same dropout masks.
        loaded.model.set_packing(false);
        let logits = loaded
            .model
            .forward(
                &batch,
                &mut Mode::Train {
                    rng: &mut Rng::new(3),
                },
            )
            .unwrap();
        assert_eq!(logits.dtype(), compute);
        let loss = weighted_cross_entropy(&logits, &LABELS, &[1.0; 7]).unwrap();
        let grads = loss.backward().unwrap();
        let head = loaded
            .params
            .vars
            .iter()
            .find(|p| p.name == "classifier.weight")
            .unwrap();
        let g = grads.get(head.var.as_tensor()).unwrap();
        assert_eq!(g.dtype(), DType::F32, "master weights get f32 gradients");
        loss.to_scalar::<f32>().unwrap()
    };
    let (full, half) = (loss_of(DType::F32), loss_of(DType::BF16));
    assert!(
        (full - half).abs() < 0.02 * full.abs().max(1.0),
        "f32 {full} vs bf16 {half}"
    );
}

/// Packed batches (no padding, the CPU default) give the same logits and the same gradient for
/// every parameter as padded batches with an attention mask.
#[test]
fn packed_and_padded_batches_agree_on_logits_and_gradients() {
    // Dropout off: both layouts then compute the same function.
    let (ckpt, config, batch) = tiny_without_dropout(&TEXTS);
    let run = |packing: bool| {
        let store = ParamStore::new(
            ckpt.read_tensors().unwrap(),
            &Device::Cpu,
            DType::F32,
            true,
            7,
        );
        let mut model = BertClassifier::load(&store, &config, 3).unwrap();
        model.set_packing(packing);
        let (params, _) = store.finish();
        let eval = model.forward(&batch, &mut Mode::Eval).unwrap();
        let mut rng = Rng::new(3);
        let logits = model
            .forward(&batch, &mut Mode::Train { rng: &mut rng })
            .unwrap();
        let grads = weighted_cross_entropy(&logits, &LABELS, &[1.5, 0.5, 2.0])
            .unwrap()
            .backward()
            .unwrap();
        let grads: Vec<(String, Vec<f32>)> = params
            .vars
            .iter()
            .map(|p| {
                let g = grads.get(p.var.as_tensor()).unwrap();
                (p.name.clone(), g.flatten_all().unwrap().to_vec1().unwrap())
            })
            .collect();
        (eval.flatten_all().unwrap().to_vec1::<f32>().unwrap(), grads)
    };
    let (packed_logits, packed_grads) = run(true);
    let (padded_logits, padded_grads) = run(false);
    let worst = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(worst(&packed_logits, &padded_logits) < 1e-5);
    assert_eq!(packed_grads.len(), padded_grads.len());
    for ((name, a), (_, b)) in packed_grads.iter().zip(&padded_grads) {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        assert!(
            worst(a, b) / scale < 1e-4,
            "{name}: gradients differ by {}",
            worst(a, b)
        );
    }
}

/// The word-embedding gradient kept in one buffer across steps (the training loop's CPU
/// default) trains exactly as candle's fresh dense gradient: three AdamW steps on batches
/// touching different rows leave every parameter bit for bit the same.
#[test]
fn kept_word_gradient_trains_exactly_as_the_dense_one() {
    let ckpt = Checkpoint::open(&oracle().join("tiny")).unwrap();
    let ids = ckpt.text_encoder(64).unwrap().encode_all(&TEXTS).unwrap();
    let run = |keep: bool| {
        let store = ParamStore::new(
            ckpt.read_tensors().unwrap(),
            &Device::Cpu,
            DType::F32,
            true,
            7,
        );
        let model = BertClassifier::load(&store, &ckpt.config, 3).unwrap();
        assert_eq!(model.keep_word_gradient(keep), keep);
        let (params, _) = store.finish();
        let mut opt = AdamW::new(&params.vars, AdamWConfig::default()).unwrap();
        let mut rng = Rng::new(11);
        for rows in [&[0usize, 1, 2, 3][..], &[0, 1], &[2, 3]] {
            let texts: Vec<&[u32]> = rows.iter().map(|&r| ids[r].as_slice()).collect();
            let labels: Vec<usize> = rows.iter().map(|&r| LABELS[r]).collect();
            let logits = model
                .forward(
                    &TokenBatch::new(&texts, 0),
                    &mut Mode::Train { rng: &mut rng },
                )
                .unwrap();
            let loss = weighted_cross_entropy(&logits, &labels, &[1.5, 0.5, 2.0]).unwrap();
            let mut grads = loss.backward().unwrap();
            model.finish_gradients(&mut grads).unwrap();
            opt.step(&grads, 1e-3, 1.0).unwrap();
        }
        params
            .vars
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.var.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let (kept, dense) = (run(true), run(false));
    for ((name, a), (_, b)) in kept.iter().zip(&dense) {
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} differs"
        );
    }
}
