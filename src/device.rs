//! Where tensors live. Knows CPU and CUDA, nothing about models.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// Where to run, as the user wrote it (`--device`); `Default` is `Auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA when a GPU is usable, else CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The CUDA device with this ordinal (`cuda:N`; plain `cuda` is device 0).
    Cuda(usize),
}

impl std::fmt::Display for DeviceChoice {
    /// As `--device` takes it: `auto`, `cpu`, `cuda:N`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    format!("unknown device {s:?} (expected auto, cpu, cuda or cuda:N)")
                }),
        }
    }
}

/// Numeric precision of the forward and backward passes. Checkpoints and AdamW state stay
/// fp32 either way; bf16 computes with fp32 master weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats throughout.
    Fp32,
    /// bfloat16 compute over fp32 master weights.
    Bf16,
}

impl Precision {
    /// What `--precision` resolves to: bf16 on a GPU of compute capability ≥ 8.0, fp32
    /// elsewhere; bf16 asked for on the CPU is refused (it is slower there, not faster).
    pub fn resolve(asked: Option<Precision>, device: &Device) -> Result<Precision> {
        let bf16_ok = compute_capability(device).is_some_and(|(major, _)| major >= 8);
        match asked {
            None if bf16_ok => Ok(Precision::Bf16),
            None => Ok(Precision::Fp32),
            Some(Precision::Bf16) if !bf16_ok => Err(Error::Usage(
                "`precision` bf16 needs a CUDA GPU of compute capability 8.0 or newer; use fp32 here".into(),
            )),
            Some(p) => Ok(p),
        }
    }

    /// The candle dtype the passes compute in.
    pub fn dtype(self) -> DType {
        match self {
            Precision::Fp32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }

    /// The lowercase name, as `--precision` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// (major, minor) compute capability of a CUDA device; `None` for the CPU.
#[cfg(feature = "cuda")]
pub fn compute_capability(device: &Device) -> Option<(i32, i32)> {
    use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute as A;
    let Device::Cuda(dev) = device else {
        return None;
    };
    let ctx = dev.cuda_stream().context().clone();
    let major = ctx
        .attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        .ok()?;
    let minor = ctx
        .attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
        .ok()?;
    Some((major, minor))
}

/// Always `None`: this build has no CUDA support.
#[cfg(not(feature = "cuda"))]
pub fn compute_capability(_device: &Device) -> Option<(i32, i32)> {
    None
}

/// The GPU's name, for logs and `catbert.json`.
#[cfg(feature = "cuda")]
fn gpu_name(device: &Device) -> Option<String> {
    let Device::Cuda(dev) = device else {
        return None;
    };
    dev.cuda_stream().context().name().ok()
}

#[cfg(not(feature = "cuda"))]
fn gpu_name(_device: &Device) -> Option<String> {
    None
}

/// The device picked, plus a notice for the user when `auto` fell back to the CPU.
pub struct Selected {
    /// The device tensors are placed on.
    pub device: Device,
    /// Message for the user when `auto` fell back to the CPU; `None` otherwise.
    pub notice: Option<String>,
}

impl Selected {
    /// A short description for logs and `catbert.json`.
    pub fn describe(&self) -> String {
        match &self.device {
            Device::Cpu => format!("cpu ({} threads)", candle_core::utils::get_num_threads()),
            Device::Cuda(_) => {
                let name = gpu_name(&self.device).unwrap_or_else(|| "unknown GPU".into());
                match compute_capability(&self.device) {
                    Some((major, minor)) => format!("cuda ({name}, compute {major}.{minor})"),
                    None => format!("cuda ({name})"),
                }
            }
            other => format!("{other:?}"),
        }
    }
}

/// Resolve `choice` to a device.
pub fn select(choice: DeviceChoice) -> Result<Selected> {
    match choice {
        DeviceChoice::Cpu => Ok(Selected {
            device: Device::Cpu,
            notice: None,
        }),
        DeviceChoice::Cuda(ordinal) => cuda(ordinal).map(|device| Selected {
            device,
            notice: None,
        }),
        // A CPU-only build has nothing to fall back from, so it says nothing.
        DeviceChoice::Auto if !cfg!(feature = "cuda") => Ok(Selected {
            device: Device::Cpu,
            notice: None,
        }),
        DeviceChoice::Auto => match cuda(0) {
            Ok(device) => Ok(Selected {
                device,
                notice: None,
            }),
            Err(e) => Ok(Selected {
                device: Device::Cpu,
                notice: Some(format!("no usable GPU ({e}); running on the CPU")),
            }),
        },
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal)
        .map_err(|e| Error::Device(format!("CUDA device {ordinal} is not usable: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> Result<Device> {
    // The CPU build only gets here when it did not hand over: no GPU build, or no driver.
    let gpu_build_installed = std::env::current_exe()
        .map(|exe| exe.with_file_name("catbert-cuda").is_file())
        .unwrap_or(false);
    Err(Error::Device(if gpu_build_installed {
        NO_DRIVER.to_string()
    } else {
        NO_GPU_BUILD.to_string()
    }))
}

/// Why `--device cuda` fails in the CPU build, in the user's words.
#[cfg(not(feature = "cuda"))]
const NO_GPU_BUILD: &str = "this catbert was built without CUDA support and no GPU build (catbert-cuda) is installed beside it; see scripts/build-cuda.sh";
#[cfg(not(feature = "cuda"))]
const NO_DRIVER: &str =
    "no usable GPU: the CUDA driver (libcuda.so.1) does not load on this machine";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(
            "cuda:1".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(1)
        );
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn auto_falls_back_to_cpu_and_cuda_is_an_error() {
        let s = select(DeviceChoice::Auto).unwrap();
        assert!(s.device.is_cpu());
        assert!(s.notice.is_none());
        let err = select(DeviceChoice::Cuda(0)).err().unwrap().to_string();
        assert!(
            err.starts_with("this catbert was built without CUDA support"),
            "{err}"
        );
        assert_eq!(
            Precision::resolve(None, &Device::Cpu).unwrap(),
            Precision::Fp32
        );
        assert!(Precision::resolve(Some(Precision::Bf16), &Device::Cpu).is_err());
    }
}
