//! The platforms an image can be built for: Linux on amd64 or arm64.
//!
//! Flotilla's devices are 64-bit ARM boards and x86_64 gateways; the names
//! follow the OCI platform convention (Go's `GOARCH`), and the parser also
//! takes the Rust/kernel spellings (`x86_64`, `aarch64`) people type.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Arch as OciArch, Os, Platform as OciPlatform};

/// A CPU architecture Flotilla builds images for (the OS is always Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    /// x86_64, OCI `amd64`.
    Amd64,
    /// 64-bit ARM, OCI `arm64`.
    Arm64,
}

/// Why a platform name was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown platform {0:?}: expected amd64, arm64 (or x86_64, aarch64), optionally as linux/<arch>")]
pub struct UnknownPlatform(pub String);

impl Arch {
    /// Every architecture, in the order images list them.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The OCI (`GOARCH`) name: `amd64` or `arm64`.
    pub fn oci_name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The ELF `e_machine` value of binaries for this architecture.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => 62,  // EM_X86_64
            Arch::Arm64 => 183, // EM_AARCH64
        }
    }

    /// The oci-spec architecture value.
    pub fn to_oci(self) -> OciArch {
        match self {
            Arch::Amd64 => OciArch::Amd64,
            Arch::Arm64 => OciArch::ARM64,
        }
    }

    /// The architecture an oci-spec value names, if it is one of ours.
    pub fn from_oci(arch: &OciArch) -> Option<Arch> {
        match arch {
            OciArch::Amd64 => Some(Arch::Amd64),
            OciArch::ARM64 => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The OCI platform descriptor (`os: linux`, `architecture: ...`).
    pub fn to_oci_platform(self) -> OciPlatform {
        let mut platform = OciPlatform::default();
        platform.set_os(Os::Linux);
        platform.set_architecture(self.to_oci());
        platform
    }
}

impl FromStr for Arch {
    type Err = UnknownPlatform;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let arch = s.strip_prefix("linux/").unwrap_or(s);
        match arch {
            "amd64" | "x86_64" => Ok(Arch::Amd64),
            "arm64" | "aarch64" | "arm64/v8" => Ok(Arch::Arm64),
            _ => Err(UnknownPlatform(s.to_owned())),
        }
    }
}

impl fmt::Display for Arch {
    /// Formats as the OCI platform string, e.g. `linux/arm64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "linux/{}", self.oci_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oci_rust_and_platform_spellings() {
        for (input, arch) in [
            ("amd64", Arch::Amd64),
            ("x86_64", Arch::Amd64),
            ("linux/amd64", Arch::Amd64),
            ("arm64", Arch::Arm64),
            ("aarch64", Arch::Arm64),
            ("linux/arm64", Arch::Arm64),
            ("linux/arm64/v8", Arch::Arm64),
        ] {
            assert_eq!(input.parse::<Arch>(), Ok(arch), "{input}");
        }
    }

    #[test]
    fn rejects_other_architectures_and_oses() {
        for input in ["arm", "armv7", "windows/amd64", "", "linux/"] {
            assert!(input.parse::<Arch>().is_err(), "{input}");
        }
    }

    #[test]
    fn round_trips_through_oci_names() {
        for arch in Arch::ALL {
            assert_eq!(Arch::from_oci(&arch.to_oci()), Some(arch));
            assert_eq!(arch.to_string().parse::<Arch>(), Ok(arch));
        }
    }
}
