//! GPU launches of `kernels/catbert.cu` (PTX compiled by build.rs).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/catbert.ptx"));
const MODULE: &str = "catbert";
const ROW_THREADS: u32 = 128;

fn contiguous<'a, T: candle_core::cuda_backend::CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, T>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: expected a contiguous tensor")
    };
    Ok(s.as_cuda_slice::<T>()?.slice(start..end))
}

pub fn weighted_cross_entropy(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
    total_weight: f32,
) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device().clone();
    let (rows, classes) = l1.shape().dims2()?;
    let logits = contiguous::<f32>(s1, l1, "logits")?;
    let labels = contiguous::<u32>(s2, l2, "labels")?;
    let weights = contiguous::<f32>(s3, l3, "weights")?;
    // SAFETY: every element is written by the kernel.
    let out = unsafe { dev.alloc::<f32>(rows * (classes + 1))? };
    let func = dev.get_or_load_custom_func("weighted_ce_fwd_bwd_f32", MODULE, PTX)?;
    let cfg = LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (ROW_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let classes_i = classes as i32;
    let mut b = func.builder();
    b.arg(&logits)
        .arg(&labels)
        .arg(&weights)
        .arg(&total_weight)
        .arg(&classes_i)
        .arg(&out);
    // SAFETY: argument types and sizes match the kernel's signature.
    unsafe { b.launch(cfg) }.w()?;
    Ok((
        CudaStorage::wrap_cuda_slice(out, dev),
        Shape::from((rows, classes + 1)),
    ))
}

pub fn softmax_top_k(s: &CudaStorage, l: &Layout, k: usize) -> Result<(CudaStorage, Shape)> {
    let dev = s.device().clone();
    let (rows, classes) = l.shape().dims2()?;
    let logits = contiguous::<f32>(s, l, "logits")?;
    // SAFETY: every element is written by the kernel.
    let out = unsafe { dev.alloc::<f32>(rows * 2 * k)? };
    let func = dev.get_or_load_custom_func("softmax_topk_f32", MODULE, PTX)?;
    let cfg = LaunchConfig {
        grid_dim: ((rows as u32).div_ceil(ROW_THREADS), 1, 1),
        block_dim: (ROW_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let (rows_i, classes_i, k_i) = (rows as i32, classes as i32, k as i32);
    let mut b = func.builder();
    b.arg(&logits)
        .arg(&rows_i)
        .arg(&classes_i)
        .arg(&k_i)
        .arg(&out);
    // SAFETY: argument types and sizes match the kernel's signature.
    unsafe { b.launch(cfg) }.w()?;
    Ok((
        CudaStorage::wrap_cuda_slice(out, dev),
        Shape::from((rows, 2 * k)),
    ))
}

/// gelu(x + bias), or with `dy` its backward dy · gelu'(x + bias).
pub fn bias_gelu(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    dy: Option<(&CudaStorage, &Layout)>,
) -> Result<(CudaStorage, Shape)> {
    let dev = s1.device().clone();
    let x = contiguous::<f32>(s1, l1, "x")?;
    let bias = contiguous::<f32>(s2, l2, "bias")?;
    let n = l1.shape().elem_count();
    let d = l2.shape().elem_count() as i32;
    // SAFETY: every element is written by the kernel.
    let out = unsafe { dev.alloc::<f32>(n)? };
    let cfg = LaunchConfig::for_num_elems(n as u32);
    let n_arg = n;
    match dy {
        None => {
            let func = dev.get_or_load_custom_func("bias_gelu_f32", MODULE, PTX)?;
            let mut b = func.builder();
            b.arg(&x).arg(&bias).arg(&n_arg).arg(&d).arg(&out);
            // SAFETY: argument types and sizes match the kernel's signature.
            unsafe { b.launch(cfg) }.w()?;
        }
        Some((s3, l3)) => {
            let dy = contiguous::<f32>(s3, l3, "dy")?;
            let func = dev.get_or_load_custom_func("bias_gelu_bwd_f32", MODULE, PTX)?;
            let mut b = func.builder();
            b.arg(&x).arg(&bias).arg(&dy).arg(&n_arg).arg(&d).arg(&out);
            // SAFETY: argument types and sizes match the kernel's signature.
            unsafe { b.launch(cfg) }.w()?;
        }
    }
    Ok((CudaStorage::wrap_cuda_slice(out, dev), l1.shape().clone()))
}
