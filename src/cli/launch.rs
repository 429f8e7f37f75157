//! One `catbert` command on every machine. A CUDA build cannot even start where there is no
//! GPU driver (it links libcuda.so.1), so the default build is CPU-only, and the GPU build is
//! installed beside it as `catbert-cuda`. When a run may use a GPU (`--device auto|cuda`), the
//! CPU build hands the whole command over to `catbert-cuda` if that binary is there and the
//! driver loads; otherwise it runs on the CPU itself.

use std::ffi::CString;
use std::path::PathBuf;

use crate::device::DeviceChoice;

/// Set in the environment to keep the CPU build from handing over (tests, debugging).
pub const NO_HANDOVER: &str = "CATBERT_NO_GPU_HANDOVER";

/// The GPU build to hand over to, if this is the CPU build, the run may use a GPU, the GPU
/// build is installed, and the CUDA driver can be loaded.
pub fn gpu_build_for(choice: DeviceChoice) -> Option<PathBuf> {
    if cfg!(feature = "cuda")
        || std::env::var_os(NO_HANDOVER).is_some()
        || choice == DeviceChoice::Cpu
    {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let gpu = exe.with_file_name("catbert-cuda");
    (gpu.is_file() && driver_loads()).then_some(gpu)
}

/// Whether the CUDA driver library can be loaded (a GPU machine).
fn driver_loads() -> bool {
    let name = CString::new("libcuda.so.1").expect("no NUL");
    // SAFETY: dlopen/dlclose with a valid C string; the handle is closed at once.
    unsafe {
        let handle = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            return false;
        }
        libc::dlclose(handle);
    }
    true
}

/// Replace this process with `gpu`, same arguments. Returns only if the exec failed.
pub fn hand_over(gpu: &std::path::Path) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(gpu)
        .args(std::env::args_os().skip(1))
        .env(NO_HANDOVER, "1")
        .exec()
}
