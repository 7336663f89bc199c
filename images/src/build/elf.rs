//! A look at a binary's ELF header before it goes into an image.
//!
//! The classic multi-arch mistake is the amd64 binary in the arm64 image:
//! it builds fine and fails only on the device, as "exec format error".
//! Reading the header's machine field catches it at build time. A binary
//! that asks for a dynamic loader is worth a warning too: a `--binary`
//! image contains nothing but the binary.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::platform::Arch;

use super::BuildError;

/// What the header says about a binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    /// An ELF executable for the expected architecture.
    Elf {
        /// Whether it names a dynamic loader (`PT_INTERP`), i.e. is not static.
        dynamic: bool,
    },
    /// A script (`#!`): architecture-independent.
    Script,
}

/// `e_ident` magic.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// `EI_CLASS` value of 64-bit ELF.
const ELFCLASS64: u8 = 2;
/// `EI_DATA` value of little-endian ELF (both our architectures).
const ELFDATA2LSB: u8 = 1;
/// Program header type of the dynamic loader path.
const PT_INTERP: u32 = 3;
/// More program headers than this is not a binary we built.
const MAX_PROGRAM_HEADERS: u16 = 256;

/// Checks that `path` is a script or a 64-bit little-endian ELF executable
/// for `arch`.
pub fn inspect_binary(path: &Path, arch: Arch) -> Result<BinaryKind, BuildError> {
    let io_error = |source| BuildError::Source { path: path.to_owned(), source };
    let mut file = File::open(path).map_err(io_error)?;
    let mut header = [0u8; 64];
    let len = read_up_to(&mut file, &mut header).map_err(io_error)?;
    let header = &header[..len];

    if header.starts_with(b"#!") {
        return Ok(BinaryKind::Script);
    }
    let not_executable =
        |reason: &str| BuildError::NotAnExecutable { path: path.to_owned(), reason: reason.to_owned() };
    if len < 64 || !header.starts_with(ELF_MAGIC) {
        return Err(not_executable("it is neither an ELF binary nor a #! script"));
    }
    if header[4] != ELFCLASS64 || header[5] != ELFDATA2LSB {
        return Err(not_executable("it is not a 64-bit little-endian ELF binary"));
    }
    let machine = u16_at(header, 18);
    if machine != arch.elf_machine() {
        return Err(BuildError::WrongArchitecture {
            path: path.to_owned(),
            expected: arch,
            found: machine_name(machine),
        });
    }
    let dynamic = has_interpreter(&mut file, header).map_err(io_error)?;
    Ok(BinaryKind::Elf { dynamic })
}

/// Whether any program header is `PT_INTERP`.
fn has_interpreter(file: &mut File, header: &[u8]) -> std::io::Result<bool> {
    let table_offset = u64::from_le_bytes(header[32..40].try_into().unwrap_or_default());
    let entry_size = u16_at(header, 54);
    let entries = u16_at(header, 56).min(MAX_PROGRAM_HEADERS);
    let mut entry = [0u8; 4];
    for index in 0..u64::from(entries) {
        let Some(offset) = table_offset.checked_add(index * u64::from(entry_size)) else {
            return Ok(false);
        };
        file.seek(SeekFrom::Start(offset))?;
        if read_up_to(file, &mut entry)? < entry.len() {
            return Ok(false);
        }
        if u32::from_le_bytes(entry) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            read => filled += read,
        }
    }
    Ok(filled)
}

/// A little-endian u16 at `at` (the caller has checked the length).
fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// A readable name for an ELF machine number.
fn machine_name(machine: u16) -> String {
    match Arch::ALL.iter().find(|arch| arch.elf_machine() == machine) {
        Some(arch) => arch.to_string(),
        None => match machine {
            3 => "x86 (32-bit)".to_owned(),
            40 => "arm (32-bit)".to_owned(),
            243 => "riscv".to_owned(),
            other => format!("ELF machine {other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The test binary itself: an x86_64 ELF on the machines tests run on.
    fn this_binary() -> PathBuf {
        std::env::current_exe().unwrap()
    }

    #[test]
    fn own_test_binary_is_an_amd64_elf() {
        let kind = inspect_binary(&this_binary(), Arch::Amd64).unwrap();
        assert!(matches!(kind, BinaryKind::Elf { .. }), "{kind:?}");
    }

    #[test]
    fn wrong_architecture_names_both() {
        let error = inspect_binary(&this_binary(), Arch::Arm64).unwrap_err().to_string();
        assert!(error.contains("linux/arm64") && error.contains("linux/amd64"), "{error}");
    }

    #[test]
    fn scripts_pass_and_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(inspect_binary(&script, Arch::Arm64).unwrap(), BinaryKind::Script);

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        let error = inspect_binary(&text, Arch::Amd64).unwrap_err().to_string();
        assert!(error.contains("neither an ELF binary nor a #! script"), "{error}");
    }

    #[test]
    fn dynamic_binaries_are_recognised() {
        // Debian's /bin/ls is dynamically linked; busybox-static is static.
        let ls = inspect_binary(Path::new("/bin/ls"), Arch::Amd64).unwrap();
        assert_eq!(ls, BinaryKind::Elf { dynamic: true });
        let busybox = inspect_binary(Path::new("/bin/busybox"), Arch::Amd64).unwrap();
        assert_eq!(busybox, BinaryKind::Elf { dynamic: false });
    }
}
