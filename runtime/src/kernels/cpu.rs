//! Run-time CPU feature detection: one binary picks its kernels on the machine it runs on.

/// Detected CPU features relevant to the kernels, e.g. `["avx2", "fma", "f16c", ...]`.
pub fn cpu_features() -> Vec<&'static str> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        macro_rules! probe {
            ($($f:tt),*) => {$(
                if has!($f) {
                    out.push($f);
                }
            )*};
        }
        let vnni = has!("avx2") && avx_vnni_cpuid();
        probe!(
            "sse4.1",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni"
        );
        if vnni {
            out.push("avxvnni");
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($f) {
                    out.push($f);
                }
            )*};
        }
        probe!("neon", "dotprod", "i8mm", "fp16");
    }
    out
}

/// Kernel levels, best last. `EOSTOK_KERNELS=scalar|avx2|avx-vnni` (aarch64:
/// `scalar|neon|dotprod|i8mm`) caps the level (for `--info`
/// comparisons and for testing the lower variants on a machine that has the higher ones);
/// unset or `auto` uses the best the CPU has. Read once per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the x86 levels, elsewhere
pub(crate) enum Level {
    Scalar,
    /// AVX2 + FMA + F16C: the baseline of every x86 SIMD kernel here (Haswell / Zen 1 on).
    Avx2,
    /// AVX-VNNI (`vpdpbusd` on ymm: Alder Lake, Sapphire Rapids, Zen 5): fuses the u8×i8
    /// `maddubs` + `madd` pair into one instruction.
    AvxVnni,
    /// aarch64 baseline Advanced SIMD (every ARMv8-A core, e.g. Cortex-A72 in the Pi 4): f32
    /// FMA, f16 conversion, i8 dots by widening multiplies (`smull` + `sadalp`).
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// Plus `sdot` (ARMv8.2 DotProd: Cortex-A76 in the Pi 5, A78AE in the Jetson Orin).
    #[cfg(target_arch = "aarch64")]
    NeonDotprod,
    /// Plus `smmla` (ARMv8.6 I8MM: Neoverse V1/N2, Cortex-A710 on) for 2×2 row tiles when
    /// batch > 1.
    #[cfg(target_arch = "aarch64")]
    NeonI8mm,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(not(target_arch = "aarch64"))]
        let cap = match std::env::var("EOSTOK_KERNELS").as_deref() {
            Ok("scalar") => Level::Scalar,
            Ok("avx2") => Level::Avx2,
            _ => Level::AvxVnni,
        };
        // aarch64: `scalar|neon|dotprod|i8mm` (the x86 names mean nothing here).
        #[cfg(target_arch = "aarch64")]
        let cap = match std::env::var("EOSTOK_KERNELS").as_deref() {
            Ok("scalar") => Level::Scalar,
            Ok("neon") => Level::Neon,
            Ok("dotprod") => Level::NeonDotprod,
            _ => Level::NeonI8mm,
        };
        detected().min(cap)
    })
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::AvxVnni => "avx2+avx-vnni",
            #[cfg(target_arch = "aarch64")]
            Level::Neon => "neon",
            #[cfg(target_arch = "aarch64")]
            Level::NeonDotprod => "neon+dotprod",
            #[cfg(target_arch = "aarch64")]
            Level::NeonI8mm => "neon+dotprod+i8mm",
        }
    }
}

/// The kernel level in use, for `--info`: e.g. `"neon+dotprod"`, or
/// `"neon (best here: neon+dotprod+i8mm; EOSTOK_KERNELS=neon)"` when capped.
pub fn kernel_level() -> String {
    let (used, best) = (level(), detected());
    #[cfg(target_arch = "x86_64")]
    let gemm = if has_avx512() { "+avx512 gemm" } else { "" };
    #[cfg(not(target_arch = "x86_64"))]
    let gemm = "";
    if used == best {
        format!("{}{gemm}", used.name())
    } else {
        let cap = std::env::var("EOSTOK_KERNELS").unwrap_or_default();
        format!("{} (best here: {}; EOSTOK_KERNELS={cap})", used.name(), best.name())
    }
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") && has!("f16c") {
            return if avx_vnni_cpuid() {
                Level::AvxVnni
            } else {
                Level::Avx2
            };
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        if has!("neon") {
            return if has!("dotprod") && has!("i8mm") {
                Level::NeonI8mm
            } else if has!("dotprod") {
                Level::NeonDotprod
            } else {
                Level::Neon
            };
        }
    }
    Level::Scalar
}

/// AVX-VNNI: CPUID.(EAX=7, ECX=1):EAX bit 4, read by hand because
/// `is_x86_feature_detected!("avxvnni")` needs Rust 1.89 (the MSRV was 1.85 when written).
/// The OS's YMM state support is covered by the AVX2 check that always precedes this.
#[cfg(target_arch = "x86_64")]
fn avx_vnni_cpuid() -> bool {
    use std::arch::x86_64::{__cpuid_count, __get_cpuid_max};
    // `unsafe` for Rust < 1.87, where these were unsafe fns.
    #[allow(unused_unsafe)]
    unsafe {
        __get_cpuid_max(0).0 >= 7
            && __cpuid_count(7, 0).eax >= 1
            && __cpuid_count(7, 1).eax & (1 << 4) != 0
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2() -> bool {
    level() >= Level::Avx2
}

#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx_vnni() -> bool {
    level() >= Level::AvxVnni
}

/// AVX-512F, for the blocked GEMM's 16-lane tile (Skylake-SP, Ice Lake, Sapphire Rapids,
/// Zen 4 on). Not a level of its own, since AVX-512 CPUs differ in VNNI: it rides on the
/// AVX2 level and `EOSTOK_KERNELS=avx-vnni` (or lower) turns it off. Read once.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let capped = matches!(
            std::env::var("EOSTOK_KERNELS").as_deref(),
            Ok("scalar" | "avx2" | "avx-vnni")
        );
        !capped && has_avx2() && std::arch::is_x86_feature_detected!("avx512f")
    })
}

#[cfg(target_arch = "aarch64")]
#[inline]
pub(crate) fn has_neon() -> bool {
    level() >= Level::Neon
}

#[cfg(target_arch = "aarch64")]
#[inline]
pub(crate) fn has_dotprod() -> bool {
    level() >= Level::NeonDotprod
}

#[cfg(target_arch = "aarch64")]
#[inline]
pub(crate) fn has_i8mm() -> bool {
    level() >= Level::NeonI8mm
}
