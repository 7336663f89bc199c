//! The compact document profile's decoder where it is meant to run: a
//! Cortex-M4 with no allocator (QEMU's mps2-an386). It decodes the golden
//! desired document (`tests/golden/desired-document.hex`, the bytes
//! `tests/golden.rs` pins), and refuses the same document claiming one
//! replica more than the profile holds with a typed error. The exit status
//! says which (semihosting).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use firmware_proto::{DecodeError, MessageKind, decode_desired_frame};

const GOLDEN: &str = include_str!("../../tests/golden/desired-document.hex");
/// Where the golden frame's replica count is: version, kind, the node id
/// (1 + 11 bytes) and the generation (1 byte) come first.
const REPLICA_COUNT_AT: usize = 15;

fn unhex(text: &str, out: &mut [u8]) -> usize {
    let digit = |b: u8| match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => 0,
    };
    let bytes = text.trim().as_bytes();
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = digit(pair[0]) << 4 | digit(pair[1]);
    }
    bytes.len() / 2
}

#[entry]
fn main() -> ! {
    let mut buf = [0u8; 1024];
    let len = unhex(GOLDEN, &mut buf);
    let frame = &buf[..len];
    let golden_ok = match decode_desired_frame(frame) {
        Ok(decoded) => {
            let view = decoded.frame;
            let first = view.replicas().next();
            let id_ok = first.as_ref().is_some_and(|r| r.id.as_str() == "sensor-1a2b-0");
            hprintln!(
                "compact decoder: golden document for {} generation {}: {} replica(s), {} config object(s), first {:?}",
                view.node_id,
                view.generation,
                view.replica_count(),
                view.config().count(),
                first.as_ref().map(|r| r.id.as_str())
            );
            view.replica_count() == 1 && id_ok
        }
        Err(e) => {
            hprintln!("compact decoder: golden document refused: {}", e);
            false
        }
    };
    let mut over = buf;
    over[REPLICA_COUNT_AT] = firmware_proto::MAX_REPLICAS as u8 + 1;
    let refused = match decode_desired_frame(&over[..len]) {
        Err(e @ DecodeError::Malformed { kind: MessageKind::Desired, .. }) => {
            hprintln!("compact decoder: {} replicas refused: {}", firmware_proto::MAX_REPLICAS + 1, e);
            true
        }
        other => {
            hprintln!(
                "compact decoder: an oversize document was not refused: {:?}",
                other.map(|d| d.frame.replica_count())
            );
            false
        }
    };
    debug::exit(if golden_ok && refused { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    #[allow(clippy::empty_loop)]
    loop {}
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("compact decoder: panicked: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    #[allow(clippy::empty_loop)]
    loop {}
}
