//! Compiles kernels/*.cu to PTX with nvcc, only for the `cuda` feature (CPU builds need no CUDA
//! toolkit). The target architecture comes from CUDA_COMPUTE_CAP (default 80: PTX that the
//! driver JIT-compiles for any GPU of compute capability 8.0 or newer).

fn main() {
    println!("cargo:rerun-if-changed=kernels/catbert.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out =
        std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("catbert.ptx");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let status = std::process::Command::new("nvcc")
        .args(["--ptx", "-O3"])
        .arg(format!("-arch=compute_{cap}"))
        .arg("kernels/catbert.cu")
        .arg("-o")
        .arg(&out)
        .status()
        .expect("nvcc not found: run `eval \"$(scripts/setup-cuda.sh)\"` first");
    assert!(status.success(), "nvcc failed on kernels/catbert.cu");
}
