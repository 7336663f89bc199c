//! The gRPC health check a `grpc` probe makes: one unary call of
//! `grpc.health.v1.Health/Check` over HTTP/2 without TLS (what kubelet
//! does), passing when the server answers `SERVING`.
//!
//! Written against RFC 9113 (HTTP/2), RFC 7541 (HPACK) and gRPC's
//! PROTOCOL-HTTP2 and health/v1 documents, and only the part one call
//! needs: headers are sent as HPACK literals (no table, no Huffman) and the
//! server's header blocks are skipped, not decoded, since the answer is in
//! the DATA frame and a failure shows as none. Why not the `h2` crate: the
//! agent must stay under 4 MB for small devices, and an HTTP/2 stack (h2,
//! http, hpack tables) would cost it several hundred kilobytes for a probe.
//! The probe is tested against tonic's own health service
//! (`images/hello-grpc`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// What a health check found, when it did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhealthy {
    /// No connection, a reset, a timeout, a malformed answer.
    Transport(String),
    /// The server answered with a status other than SERVING.
    Status(u64),
    /// The call ended without an answer (e.g. `grpc-status` NOT_FOUND for
    /// an unknown service).
    NoAnswer,
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unhealthy::Transport(e) => write!(f, "gRPC health check failed: {e}"),
            Unhealthy::Status(2) => f.write_str("gRPC health status NOT_SERVING"),
            Unhealthy::Status(3) => f.write_str("gRPC health status SERVICE_UNKNOWN"),
            Unhealthy::Status(s) => write!(f, "gRPC health status {s}"),
            Unhealthy::NoAnswer => f.write_str("gRPC health check ended without an answer (unknown service?)"),
        }
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
/// The largest frame accepted: the default SETTINGS_MAX_FRAME_SIZE.
const MAX_FRAME: usize = 16_384;
/// `SERVING` in `grpc.health.v1.HealthCheckResponse.ServingStatus`.
const SERVING: u64 = 1;

/// Asks `127.0.0.1:port` whether `service` (empty: the server) is serving.
pub fn check(port: u16, service: &str, timeout: Duration) -> Result<(), Unhealthy> {
    let transport = |e: std::io::Error| Unhealthy::Transport(e.to_string());
    let deadline = Instant::now() + timeout;
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout).map_err(transport)?;
    stream.set_nodelay(true).map_err(transport)?;
    stream.set_write_timeout(Some(timeout)).map_err(transport)?;
    stream.write_all(&request(port, service)).map_err(transport)?;
    let mut answer = Vec::new();
    loop {
        let (kind, flags, stream_id, payload) =
            read_frame(&mut ByDeadline { stream: &stream, deadline }).map_err(transport)?;
        match kind {
            SETTINGS if flags & ACK == 0 => stream.write_all(&frame(SETTINGS, ACK, 0, &[])).map_err(transport)?,
            PING if flags & ACK == 0 => stream.write_all(&frame(PING, ACK, 0, &payload)).map_err(transport)?,
            GOAWAY => return Err(Unhealthy::Transport("the server closed the connection (GOAWAY)".into())),
            RST_STREAM if stream_id == 1 => return Err(Unhealthy::Transport("the server reset the call".into())),
            DATA if stream_id == 1 => {
                answer.extend_from_slice(unpadded(flags, &payload).map_err(transport)?);
                if flags & END_STREAM != 0 {
                    break;
                }
            }
            HEADERS if stream_id == 1 && flags & END_STREAM != 0 => break,
            _ => {}
        }
    }
    match serving_status(&answer) {
        Some(SERVING) => Ok(()),
        Some(status) => Err(Unhealthy::Status(status)),
        None => Err(Unhealthy::NoAnswer),
    }
}

/// The client's bytes: preface, empty SETTINGS, the call's HEADERS and its
/// one DATA frame (ending the stream).
fn request(port: u16, service: &str) -> Vec<u8> {
    let mut headers = vec![0x83, 0x86]; // :method POST, :scheme http (static table 3, 6)
    literal_indexed_name(&mut headers, 4, "/grpc.health.v1.Health/Check"); // :path
    literal_indexed_name(&mut headers, 1, &format!("127.0.0.1:{port}")); // :authority
    literal_indexed_name(&mut headers, 31, "application/grpc"); // content-type
    literal_new_name(&mut headers, "te", "trailers");
    literal_indexed_name(&mut headers, 58, "flotilla-probe"); // user-agent
    // HealthCheckRequest { service = 1 }: an empty service is an empty message.
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, END_HEADERS, 1, &headers));
    out.extend(frame(DATA, END_STREAM, 1, &body));
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads that all end by one deadline: a server trickling bytes cannot hold
/// the probe (and the agent's loop it runs on) past its timeout.
struct ByDeadline<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for ByDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

fn read_frame(stream: &mut impl Read) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head)?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("a frame of {len} bytes, over the {MAX_FRAME} allowed")));
    }
    let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload)?;
    Ok((head[3], head[4], stream_id, payload))
}

/// A DATA frame's payload without its padding.
fn unpadded(flags: u8, payload: &[u8]) -> std::io::Result<&[u8]> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let pad = usize::from(*payload.first().ok_or_else(|| std::io::Error::other("empty padded frame"))?);
    payload
        .get(1..payload.len().saturating_sub(pad))
        .filter(|_| pad < payload.len())
        .ok_or_else(|| std::io::Error::other("padding longer than the frame"))
}

/// The status in a gRPC-framed `HealthCheckResponse`, if there is one
/// (field 1, a varint; absent means 0, UNKNOWN).
fn serving_status(data: &[u8]) -> Option<u64> {
    let (&compressed, rest) = data.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    let mut message = rest.get(4..4 + len)?;
    let mut status = 0;
    while let Some((&tag, rest)) = message.split_first() {
        let (value, rest) = read_varint(rest)?;
        match tag {
            0x08 => status = value,
            // Another varint field: skipped. Anything else is not a
            // HealthCheckResponse.
            t if t & 7 == 0 => {}
            _ => return None,
        }
        message = rest;
    }
    Some(status)
}

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 5.1), `first` holding
/// the bits above the prefix.
fn integer(out: &mut Vec<u8>, first: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

fn string(out: &mut Vec<u8>, text: &str) {
    integer(out, 0, 7, text.len()); // H = 0: not Huffman-coded
    out.extend_from_slice(text.as_bytes());
}

/// "Literal Header Field without Indexing, indexed name" (RFC 7541 6.2.2).
fn literal_indexed_name(out: &mut Vec<u8>, index: usize, value: &str) {
    integer(out, 0, 4, index);
    string(out, value);
}

/// "Literal Header Field without Indexing, new name".
fn literal_new_name(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    string(out, name);
    string(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_framed_as_http2_with_literal_headers() {
        let bytes = request(50051, "orders.v1.Orders");
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let (kind, flags, id, _) = read_frame(&mut rest).unwrap();
        assert_eq!((kind, flags, id), (SETTINGS, 0, 0));
        let (kind, flags, id, headers) = read_frame(&mut rest).unwrap();
        assert_eq!((kind, flags, id), (HEADERS, END_HEADERS, 1));
        assert_eq!(&headers[..2], &[0x83, 0x86]);
        // :path, literal with the static table's name 4.
        assert_eq!(headers[2], 0x04);
        assert_eq!(headers[3] as usize, "/grpc.health.v1.Health/Check".len());
        // content-type (31): a 4-bit prefix of 15, then 16.
        let at = headers.windows(2).position(|w| w == [0x0f, 0x10]).expect("content-type");
        assert_eq!(&headers[at + 3..at + 3 + 16], b"application/grpc");
        let (kind, flags, id, data) = read_frame(&mut rest).unwrap();
        assert_eq!((kind, flags, id), (DATA, END_STREAM, 1));
        assert_eq!(&data[..5], &[0, 0, 0, 0, 18], "uncompressed, 18 bytes of message");
        assert_eq!(&data[5..7], &[0x0a, 16]);
        assert!(rest.is_empty());
    }

    #[test]
    fn the_answer_is_read_from_the_grpc_message_and_nothing_else() {
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(SERVING));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0), "an empty message is UNKNOWN");
        assert_eq!(serving_status(&[]), None);
        assert_eq!(serving_status(&[1, 0, 0, 0, 2, 0x08, 1]), None, "compressed: not understood");
        assert_eq!(serving_status(&[0, 0, 0, 0, 9, 0x08]), None, "cut short");
        assert_eq!(unpadded(PADDED, &[2, 7, 8, 0, 0]).unwrap(), &[7, 8]);
        assert!(unpadded(PADDED, &[9, 1]).is_err());
    }

    #[test]
    fn hpack_integers_continue_past_their_prefix() {
        let mut out = Vec::new();
        integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10], "RFC 7541 C.1.2");
        let mut out = Vec::new();
        integer(&mut out, 0, 5, 10);
        assert_eq!(out, [10], "RFC 7541 C.1.1");
    }

    #[test]
    fn a_server_trickling_bytes_cannot_hold_the_probe_past_its_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // A frame header, one byte every 100 ms: each read succeeds.
            for byte in [0u8, 0, 9, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0] {
                std::thread::sleep(Duration::from_millis(100));
                if stream.write_all(&[byte]).is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        assert!(matches!(check(port, "", Duration::from_millis(500)), Err(Unhealthy::Transport(_))));
        assert!(started.elapsed() < Duration::from_millis(900), "{:?}", started.elapsed());
    }

    #[test]
    fn nothing_listening_is_a_transport_failure() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(matches!(check(port, "", Duration::from_millis(500)), Err(Unhealthy::Transport(_))));
    }
}
