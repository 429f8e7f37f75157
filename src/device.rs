//! Where tensors live. Knows CPU and CUDA, nothing about models.

use candle_core::Device;

use crate::error::{Error, Result};

/// `--device` as the user wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA when a GPU is usable, else CPU.
    Auto,
    Cpu,
    Cuda(usize),
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

/// The device picked, plus a notice for the user when `auto` fell back to the CPU.
pub struct Selected {
    pub device: Device,
    pub notice: Option<String>,
}

impl Selected {
    /// A short description for logs and `catbert.json`.
    pub fn describe(&self) -> String {
        match &self.device {
            Device::Cpu => format!("cpu ({} threads)", candle_core::utils::get_num_threads()),
            Device::Cuda(_) => "cuda".to_string(),
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
    Err(Error::Device(
        "this catbert was built without CUDA support (rebuild with --features cuda)".to_string(),
    ))
}

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
        assert_eq!(
            err,
            "this catbert was built without CUDA support (rebuild with --features cuda)"
        );
    }
}
