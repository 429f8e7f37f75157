//! Unit tests of the parent module.
use super::*;
use candle_core::{Device, Var};

fn random(shape: (usize, usize), seed: u64) -> Tensor {
    let mut rng = crate::rng::Rng::new(seed);
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| rng.normal() as f32 * 2.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn fast_erf_is_within_1e6_of_libm() {
    let worst = (-80_000..=80_000)
        .map(|i| i as f32 * 1e-4)
        .map(|x| (erf(x) - libm::erff(x)).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-6, "max |erf error| {worst}");
}

#[test]
fn fused_cross_entropy_matches_the_composed_loss_and_gradient() {
    let x = Var::from_tensor(&random((7, 5), 1)).unwrap();
    let labels = [0u32, 4, 2, 2, 1, 3, 4];
    let weights = [1.5f32, 0.5, 1.0, 2.0, 3.0];
    let fused = weighted_cross_entropy(x.as_tensor(), &labels, &weights).unwrap();
    let labels_usize: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let composed =
        crate::train::loss::weighted_cross_entropy_composed(x.as_tensor(), &labels_usize, &weights)
            .unwrap();
    assert!(max_diff(&fused, &composed) < 1e-6);
    let g1 = fused
        .backward()
        .unwrap()
        .get(x.as_tensor())
        .unwrap()
        .clone();
    let g2 = composed
        .backward()
        .unwrap()
        .get(x.as_tensor())
        .unwrap()
        .clone();
    assert!(max_diff(&g1, &g2) < 1e-6, "{g1} vs {g2}");
}

#[test]
fn softmax_top_k_matches_softmax_then_sort_with_ties_by_index() {
    let mut x = random((9, 6), 2).to_vec2::<f32>().unwrap();
    x[3] = vec![1.0, 2.0, 2.0, 0.5, 2.0, -1.0];
    let t = Tensor::new(x.clone(), &Device::Cpu).unwrap();
    let (ids, probs) = softmax_top_k(&t, 4).unwrap();
    let p = candle_nn::ops::softmax_last_dim(&t)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let want = crate::infer::top_k(&p.concat(), 6, 4);
    assert_eq!(ids, want.classes);
    assert_eq!(&ids[12..16], &[1, 2, 4, 0]);
    for (a, b) in probs.iter().zip(&want.probs) {
        assert!((a - b).abs() < 1e-6);
    }
}

/// Forward values and gradients of `fused` and `composed` on the same inputs agree.
fn same_values_and_grads(vars: &[&Var], fused: &Tensor, composed: &Tensor, probe: &Tensor) {
    assert!(
        max_diff(fused, composed) < 1e-5,
        "forward differs by {}",
        max_diff(fused, composed)
    );
    let g1 = (fused * probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g2 = (composed * probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for v in vars {
        let d = max_diff(
            g1.get(v.as_tensor()).unwrap(),
            g2.get(v.as_tensor()).unwrap(),
        );
        assert!(d < 1e-4, "gradient differs by {d}");
    }
}

#[test]
fn fused_layer_norm_softmax_and_bias_add_match_candle_composed() {
    let x = Var::from_tensor(&random((130, 16), 6).reshape((10, 13, 16)).unwrap()).unwrap();
    let g = Var::from_tensor(&random((1, 16), 7).squeeze(0).unwrap()).unwrap();
    let b = Var::from_tensor(&random((1, 16), 8).squeeze(0).unwrap()).unwrap();
    let probe = random((130, 16), 9).reshape((10, 13, 16)).unwrap();
    let (xt, gt, bt) = (x.as_tensor(), g.as_tensor(), b.as_tensor());

    let composed_ln = {
        let mean = xt.mean_keepdim(D::Minus1).unwrap();
        let c = xt.broadcast_sub(&mean).unwrap();
        let var = c.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let n = c
            .broadcast_div(&(var + 1e-12).unwrap().sqrt().unwrap())
            .unwrap();
        n.broadcast_mul(gt).unwrap().broadcast_add(bt).unwrap()
    };
    same_values_and_grads(
        &[&x, &g, &b],
        &layer_norm(xt, gt, bt, 1e-12).unwrap(),
        &composed_ln,
        &probe,
    );
    same_values_and_grads(
        &[&x],
        &softmax(xt).unwrap(),
        &candle_nn::ops::softmax(xt, D::Minus1).unwrap(),
        &probe,
    );
    same_values_and_grads(
        &[&x, &b],
        &bias_add(xt, bt).unwrap(),
        &xt.broadcast_add(bt).unwrap(),
        &probe,
    );
}

#[test]
fn varlen_attention_matches_per_sequence_matmuls_with_dropout_forward_and_backward() {
    let (heads, d) = (4, 8);
    let starts = [0usize, 7, 10, 15];
    let tokens = starts[3];
    let var = |seed| Var::from_tensor(&random((tokens, heads * d), seed)).unwrap();
    let (q, k, v) = (var(11), var(12), var(13));
    let mut rng = crate::rng::Rng::new(14);
    let keep: Vec<f32> = (0..varlen_attention_keep_len(heads, &starts))
        .map(|_| if rng.next_f32() < 0.8 { 1.25 } else { 0.0 })
        .collect();
    let fused = varlen_attention(
        q.as_tensor(),
        k.as_tensor(),
        v.as_tensor(),
        &starts,
        heads,
        Some(keep.clone()),
    )
    .unwrap();

    let mut parts = Vec::new();
    let mut at = 0;
    for w in starts.windows(2) {
        let (a, len) = (w[0], w[1] - w[0]);
        let split = |t: &Var| {
            t.as_tensor()
                .narrow(0, a, len)
                .unwrap()
                .reshape((len, heads, d))
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (qs, ks, vs) = (split(&q), split(&k), split(&v));
        let scores = (qs.matmul(&ks.t().unwrap()).unwrap() * (1.0 / (d as f64).sqrt())).unwrap();
        let n = heads * len * len;
        let m =
            Tensor::from_vec(keep[at..at + n].to_vec(), (heads, len, len), &Device::Cpu).unwrap();
        at += n;
        let probs = (candle_nn::ops::softmax(&scores, D::Minus1).unwrap() * m).unwrap();
        parts.push(
            probs
                .matmul(&vs)
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .reshape((len, heads * d))
                .unwrap(),
        );
    }
    let composed = Tensor::cat(&parts, 0).unwrap();
    same_values_and_grads(
        &[&q, &k, &v],
        &fused,
        &composed,
        &random((tokens, heads * d), 15),
    );
}

#[test]
fn bias_gelu_matches_add_then_gelu_forward_and_backward() {
    let x = Var::from_tensor(&random((6, 8), 3)).unwrap();
    let b = Var::from_tensor(&random((1, 8), 4).squeeze(0).unwrap()).unwrap();
    let fused = bias_gelu(x.as_tensor(), b.as_tensor()).unwrap();
    let composed = x
        .as_tensor()
        .broadcast_add(b.as_tensor())
        .unwrap()
        .gelu_erf()
        .unwrap();
    assert!(max_diff(&fused, &composed) < 1e-6);
    let probe = random((6, 8), 5);
    let g1 = (&fused * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g2 = (&composed * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for v in [&x, &b] {
        let d = max_diff(
            g1.get(v.as_tensor()).unwrap(),
            g2.get(v.as_tensor()).unwrap(),
        );
        assert!(d < 1e-5, "gradient differs by {d}");
    }
}
