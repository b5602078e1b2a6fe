//! The `--device` argument of every binary: `cpu`, `cuda[:N]`, `metal[:N]`.
//!
//! Parsing is candle-free (and always built); opening the device needs the
//! `candle` feature, and a GPU device needs the matching backend feature
//! (`cuda`, `metal`). A build without it refuses with a bad-input error
//! (exit 2) that says how to rebuild, before any work starts.

use crate::exit::bad_input;
use std::fmt;

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    /// CUDA device ordinal (`cuda:N`; `cuda` is `cuda:0`).
    Cuda(usize),
    /// Metal device ordinal (`metal:N`; `metal` is `metal:0`).
    Metal(usize),
}

/// The help text of a `--device` flag.
pub const DEVICE_HELP: &str = "cpu, cuda:N (a build with --features cuda) or metal:N (--features metal, macOS)";

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        let (kind, ordinal) = match t.split_once(':') {
            Some((k, n)) => {
                let n: usize = n.parse().map_err(|_| format!("'{s}': the device number after ':' must be a non-negative integer"))?;
                (k.to_string(), Some(n))
            }
            None => (t.clone(), None),
        };
        match (kind.as_str(), ordinal) {
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("cpu", Some(_)) => Err(format!("'{s}': cpu takes no device number")),
            ("cuda" | "gpu", n) => Ok(DeviceSpec::Cuda(n.unwrap_or(0))),
            ("metal", n) => Ok(DeviceSpec::Metal(n.unwrap_or(0))),
            _ => Err(format!("'{s}': expected {DEVICE_HELP}")),
        }
    }
}

impl DeviceSpec {
    /// Parse a `--device` value; a bad value is a bad-input error (exit 2).
    pub fn parse(s: &str) -> anyhow::Result<DeviceSpec> {
        s.parse().map_err(|e| bad_input(format!("--device {e}")))
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self, DeviceSpec::Cpu)
    }

    /// The cargo feature this device needs, if any.
    pub fn feature(&self) -> Option<&'static str> {
        match self {
            DeviceSpec::Cpu => None,
            DeviceSpec::Cuda(_) => Some("cuda"),
            DeviceSpec::Metal(_) => Some("metal"),
        }
    }

    /// Whether this build can open the device at all (the backend is compiled in).
    pub fn compiled_in(&self) -> bool {
        match self {
            DeviceSpec::Cpu => true,
            DeviceSpec::Cuda(_) => cfg!(feature = "cuda"),
            DeviceSpec::Metal(_) => cfg!(feature = "metal"),
        }
    }

    /// Refuse a device whose backend this build lacks (exit 2, with the rebuild hint).
    pub fn check_compiled_in(&self) -> anyhow::Result<()> {
        match self.feature() {
            Some(feat) if !self.compiled_in() => Err(bad_input(format!("--device {self}: built without the `{feat}` feature; rebuild with --features {feat}"))),
            _ => Ok(()),
        }
    }

    /// Open the device. A missing driver or device is a bad-input error too:
    /// the command line asked for hardware this machine does not have.
    #[cfg(feature = "candle")]
    pub fn open(&self) -> anyhow::Result<candle_core::Device> {
        self.check_compiled_in()?;
        match *self {
            DeviceSpec::Cpu => Ok(candle_core::Device::Cpu),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(n) => candle_core::Device::new_cuda(n).map_err(|e| bad_input(format!("--device cuda:{n}: cannot open the CUDA device (no GPU, no driver, or no such ordinal): {e}"))),
            #[cfg(feature = "metal")]
            DeviceSpec::Metal(n) => candle_core::Device::new_metal(n).map_err(|e| bad_input(format!("--device metal:{n}: cannot open the Metal device: {e}"))),
            #[allow(unreachable_patterns)]
            _ => unreachable!("check_compiled_in refused {self}"),
        }
    }
}

/// Whether a CUDA device can be opened here (false in a build without `cuda`).
/// GPU tests use it to skip, saying so, on machines without one.
#[cfg(feature = "candle")]
pub fn cuda_available() -> bool {
    #[cfg(feature = "cuda")]
    {
        // cuda_is_available() only says the feature is on; opening device 0 needs the driver.
        candle_core::utils::cuda_is_available() && candle_core::Device::new_cuda(0).is_ok()
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::DeviceSpec;

    #[test]
    fn parses_every_form() {
        let p = |s: &str| s.parse::<DeviceSpec>();
        assert_eq!(p("cpu"), Ok(DeviceSpec::Cpu));
        assert_eq!(p("CPU"), Ok(DeviceSpec::Cpu));
        assert_eq!(p("cuda"), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(p("cuda:3"), Ok(DeviceSpec::Cuda(3)));
        assert_eq!(p("metal:1"), Ok(DeviceSpec::Metal(1)));
        assert!(p("cuda:x").is_err());
        assert!(p("cuda:-1").is_err());
        assert!(p("cpu:0").is_err());
        assert!(p("tpu").is_err());
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn a_missing_backend_says_how_to_rebuild() {
        let e = DeviceSpec::Cuda(0).check_compiled_in();
        if cfg!(feature = "cuda") {
            assert!(e.is_ok());
        } else {
            let e = e.unwrap_err();
            assert_eq!(crate::exit::code_for(&e), crate::exit::BAD_INPUT);
            assert!(e.to_string().contains("built without the `cuda` feature; rebuild with --features cuda"), "{e}");
        }
        assert!(DeviceSpec::Cpu.check_compiled_in().is_ok());
    }
}
