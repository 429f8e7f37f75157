//! Our CUDA kernels against their CPU twins on fresh random inputs (a new seed every run).
//! Compiled only with the `cuda` feature; each test passes with a "skipped" line when no GPU
//! is usable.
#![cfg(feature = "cuda")]

use candle_core::{Device, Tensor, Var};
use catbert::kernels::{bias_gelu, softmax_top_k, weighted_cross_entropy};
use catbert::rng::Rng;

fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipped: no usable GPU ({e})");
            None
        }
    }
}

fn fresh_rng() -> Rng {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    Rng::new(seed)
}

fn random(rng: &mut Rng, shape: (usize, usize)) -> Tensor {
    let v: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| rng.normal() as f32 * 3.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let b = b.to_device(&Device::Cpu).unwrap();
    (a.to_device(&Device::Cpu).unwrap() - b)
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
fn weighted_cross_entropy_gpu_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = fresh_rng();
    let (rows, classes) = (257, 37);
    let x = random(&mut rng, (rows, classes));
    let labels: Vec<u32> = (0..rows).map(|_| rng.below(classes) as u32).collect();
    let weights: Vec<f32> = (0..classes).map(|_| 0.2 + rng.next_f32() * 3.0).collect();
    let run = |d: &Device| {
        let v = Var::from_tensor(&x.to_device(d).unwrap()).unwrap();
        let loss = weighted_cross_entropy(v.as_tensor(), &labels, &weights).unwrap();
        let g = loss.backward().unwrap().get(v.as_tensor()).unwrap().clone();
        (loss, g)
    };
    let (l_cpu, g_cpu) = run(&Device::Cpu);
    let (l_gpu, g_gpu) = run(&dev);
    assert!(max_diff(&l_cpu, &l_gpu) < 1e-4);
    assert!(max_diff(&g_cpu, &g_gpu) < 1e-6);
}

#[test]
fn softmax_top_k_gpu_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = fresh_rng();
    let x = random(&mut rng, (1000, 23));
    let (c_cpu, p_cpu) = softmax_top_k(&x, 5).unwrap();
    let (c_gpu, p_gpu) = softmax_top_k(&x.to_device(&dev).unwrap(), 5).unwrap();
    assert_eq!(c_cpu, c_gpu);
    let worst = p_cpu
        .iter()
        .zip(&p_gpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-6, "{worst}");
}

#[test]
fn bias_gelu_gpu_matches_cpu_forward_and_backward() {
    let Some(dev) = gpu() else { return };
    let mut rng = fresh_rng();
    let x = random(&mut rng, (300, 96));
    let b = random(&mut rng, (1, 96)).squeeze(0).unwrap();
    let probe = random(&mut rng, (300, 96));
    let run = |d: &Device| {
        let xv = Var::from_tensor(&x.to_device(d).unwrap()).unwrap();
        let bv = Var::from_tensor(&b.to_device(d).unwrap()).unwrap();
        let y = bias_gelu(xv.as_tensor(), bv.as_tensor()).unwrap();
        let g = (&y * &probe.to_device(d).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (
            y,
            g.get(xv.as_tensor()).unwrap().clone(),
            g.get(bv.as_tensor()).unwrap().clone(),
        )
    };
    let (y1, dx1, db1) = run(&Device::Cpu);
    let (y2, dx2, db2) = run(&dev);
    assert!(max_diff(&y1, &y2) < 1e-5);
    assert!(max_diff(&dx1, &dx2) < 1e-5);
    assert!(max_diff(&db1, &db2) < 1e-3);
}
