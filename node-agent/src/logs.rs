//! Bounded container logs: each replica's stdout and stderr go to one file;
//! past a size it is copied to `<file>.1` (older `.1` becomes `.2`, and so
//! on up to a count) and truncated in place. The container keeps writing
//! through its O_APPEND descriptor, so nothing is lost but the oldest
//! rotation, and a chatty workload cannot fill the device's storage.
//!
//! [`read`] answers `flotilla logs`: the most recent output across the
//! rotations, or (following) what was written since an offset.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use firmware_proto::bounded::truncated;
use firmware_proto::{LOG_CHUNK_MAX, LogChunk, LogEnd, LogRequest, NodeId, decode_signed};

use crate::signed::Verifier;
use crate::workload::Paths;

/// Limits for one replica's logs.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Rotate when the live file is larger than this.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { max_bytes: 1 << 20, keep: 2 }
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Rotates `path` if it grew past the limit. Returns whether it rotated.
pub fn rotate_if_needed(path: &Path, limits: LogLimits) -> std::io::Result<bool> {
    let size = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if size <= limits.max_bytes {
        return Ok(false);
    }
    if limits.keep == 0 {
        std::fs::OpenOptions::new().write(true).open(path)?.set_len(0)?;
        return Ok(true);
    }
    for n in (1..limits.keep).rev() {
        let from = rotated(path, n);
        if from.exists() {
            std::fs::rename(&from, rotated(path, n + 1))?;
        }
    }
    std::fs::copy(path, rotated(path, 1))?;
    std::fs::OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// What a log request gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAnswer {
    /// Container output.
    pub data: Vec<u8>,
    /// Offset in the live file after the output: where a follow-up starts.
    pub next_offset: u64,
}

/// Reads the output in `path` (a replica's live log) for a request.
///
/// - `offset: None`: the last `max_bytes` across the rotated files and the
///   live one, then only the last `tail_lines` lines (0: all of them).
/// - `offset: Some(o)`: what was written to the live file from `o` on. If
///   the live file is shorter than `o` it was rotated since: the rest of
///   `<file>.1` from `o` comes first, then the live file from its start.
///
/// Returns `Ok(None)` when the replica never wrote output on this node.
pub fn read(path: &Path, offset: Option<u64>, tail_lines: u32, max_bytes: u32) -> std::io::Result<Option<LogAnswer>> {
    let max = u64::from(max_bytes);
    let live_len = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(offset) = offset else {
        let mut data = tail_across_rotations(path, live_len, max)?;
        keep_last_lines(&mut data, tail_lines);
        return Ok(Some(LogAnswer { data, next_offset: live_len }));
    };
    let mut data = Vec::new();
    let mut from_live = offset;
    if offset > live_len {
        // Rotated since the previous answer: finish the old file first.
        from_live = 0;
        let older = rotated(path, 1);
        if let Ok(len) = std::fs::metadata(&older).map(|m| m.len())
            && len > offset
        {
            data = read_range(&older, offset, (len - offset).min(max))?;
        }
    }
    let room = max - data.len() as u64;
    let end = live_len.min(from_live + room);
    data.extend(read_range(path, from_live, end - from_live)?);
    Ok(Some(LogAnswer { data, next_offset: end }))
}

/// Most output one answer carries, whatever the request asks: three
/// files of the default limits, and a bound on what a request can cost.
pub const ANSWER_MAX_BYTES: u32 = 3 << 20;

/// Answers the controller's log requests (`nodes/{id}/logreq`).
pub struct LogService {
    node_id: NodeId,
    verify: Verifier,
    paths: Paths,
}

impl LogService {
    /// Answers for `node_id`'s replicas, whose logs are under `paths`;
    /// requests must verify with `verify` (the controller's key).
    pub fn new(node_id: NodeId, verify: Verifier, paths: Paths) -> Self {
        LogService { node_id, verify, paths }
    }

    /// The chunks answering a request frame, or why it is refused. Every
    /// request that checks out gets an answer, an error included, so the
    /// controller never waits out its timeout for a replica that is not here.
    pub fn answer(&self, frame: &[u8]) -> Result<Vec<LogChunk>, String> {
        let (request, _) = crate::signed::check(frame, decode_signed::<LogRequest>, &self.verify, &self.node_id)
            .map_err(|refusal| refusal.describe("log request"))?;
        let path = match &request.container {
            Some(container) => self.paths.log(&crate::pod::unit_id(request.replica.as_str(), container.as_str())),
            None => match self.only_log_of(request.replica.as_str()) {
                Ok(path) => path,
                Err(reason) => {
                    let end = LogEnd { next_offset: 0, error: Some(truncated(&reason)) };
                    return Ok(chunks(request.request_id, &[], end));
                }
            },
        };
        let max_bytes = request.max_bytes.min(ANSWER_MAX_BYTES);
        let (data, end) = match read(&path, request.offset, request.tail_lines, max_bytes) {
            Ok(Some(answer)) => (answer.data, LogEnd { next_offset: answer.next_offset, error: None }),
            Ok(None) => {
                let who = match &request.container {
                    Some(container) => format!("container {container} of {}", request.replica),
                    None => request.replica.to_string(),
                };
                let reason = format!("no output recorded for {who} on {}", self.node_id);
                (Vec::new(), LogEnd { next_offset: 0, error: Some(truncated(&reason)) })
            }
            Err(e) => {
                let reason = format!("reading {}: {e}", path.display());
                (Vec::new(), LogEnd { next_offset: request.offset.unwrap_or(0), error: Some(truncated(&reason)) })
            }
        };
        Ok(chunks(request.request_id, &data, end))
    }
}

impl LogService {
    /// The log of a pod's only container, for a request naming none.
    fn only_log_of(&self, replica: &str) -> Result<std::path::PathBuf, String> {
        let prefix = format!("{replica}.");
        let dir = self.paths.data_dir.join("logs");
        let mut found: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| name.starts_with(&prefix) && name.ends_with(".log"))
            .filter(|name| !name[prefix.len()..name.len() - 4].contains('.'))
            .collect();
        found.sort();
        match found.as_slice() {
            [] => Err(format!("no output recorded for {replica} on {}", self.node_id)),
            [one] => Ok(dir.join(one)),
            several => {
                let names: Vec<&str> = several.iter().map(|n| &n[prefix.len()..n.len() - 4]).collect();
                Err(format!("{replica} has several containers: name one of {}", names.join(", ")))
            }
        }
    }
}

/// Splits output into chunks; the last (possibly empty) carries `end`.
fn chunks(request_id: u64, data: &[u8], end: LogEnd) -> Vec<LogChunk> {
    let mut pieces: Vec<&[u8]> = data.chunks(LOG_CHUNK_MAX).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    let last = pieces.len() - 1;
    pieces
        .into_iter()
        .enumerate()
        .map(|(index, piece)| LogChunk {
            request_id,
            index: index as u32,
            // Cannot fail: `chunks` cut at the capacity.
            data: heapless::Vec::from_slice(piece).unwrap_or_default(),
            end: (index == last).then(|| end.clone()),
        })
        .collect()
}

/// The last `max` bytes of the rotated files (oldest first) and the live file.
fn tail_across_rotations(path: &Path, live_len: u64, max: u64) -> std::io::Result<Vec<u8>> {
    let mut parts = vec![(path.to_owned(), live_len)];
    for n in 1.. {
        let older = rotated(path, n);
        match std::fs::metadata(&older) {
            Ok(meta) => parts.push((older, meta.len())),
            Err(_) => break,
        }
    }
    // Newest first: take from the end of each until `max` is reached.
    let mut pieces = Vec::new();
    let mut wanted = max;
    for (file, len) in parts {
        if wanted == 0 {
            break;
        }
        let take = len.min(wanted);
        pieces.push(read_range(&file, len - take, take)?);
        wanted -= take;
    }
    Ok(pieces.into_iter().rev().flatten().collect())
}

fn read_range(path: &Path, from: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut data = Vec::with_capacity(len as usize);
    // The file may have been truncated meanwhile: a short read is fine.
    file.take(len).read_to_end(&mut data)?;
    Ok(data)
}

/// Drops all but the last `lines` lines (a final newline ends the last
/// line, it does not start another).
fn keep_last_lines(data: &mut Vec<u8>, lines: u32) {
    if lines == 0 {
        return;
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let cut = body.iter().enumerate().rev().filter(|(_, b)| **b == b'\n').nth(lines as usize - 1).map(|(i, _)| i + 1);
    if let Some(cut) = cut {
        data.drain(..cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firmware_proto::{Name, encode_node_to_vec, encode_signed_to_vec};
    use std::io::Write;

    #[test]
    fn a_log_past_its_limit_is_rotated_and_the_writer_keeps_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.log");
        let mut writer = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let limits = LogLimits { max_bytes: 100, keep: 2 };
        for round in 0..3 {
            writer.write_all(&[b'a' + round; 150]).unwrap();
            assert!(rotate_if_needed(&path, limits).unwrap());
        }
        writer.write_all(b"after").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"after", "appends go to the start of the truncated file");
        assert_eq!(std::fs::read(rotated(&path, 1)).unwrap(), vec![b'c'; 150]);
        assert_eq!(std::fs::read(rotated(&path, 2)).unwrap(), vec![b'b'; 150]);
        assert!(!rotated(&path, 3).exists(), "only `keep` rotations are kept");
        assert!(!rotate_if_needed(&path, limits).unwrap());
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_tail_spans_rotations_and_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.log");
        write(&rotated(&path, 2), "one\ntwo\n");
        write(&rotated(&path, 1), "three\nfour\n");
        write(&path, "five\nsix\n");
        let all = read(&path, None, 0, 1 << 20).unwrap().unwrap();
        assert_eq!(all.data, b"one\ntwo\nthree\nfour\nfive\nsix\n");
        assert_eq!(all.next_offset, 9);
        let last3 = read(&path, None, 3, 1 << 20).unwrap().unwrap();
        assert_eq!(last3.data, b"four\nfive\nsix\n");
        let bytes = read(&path, None, 0, 12).unwrap().unwrap();
        assert_eq!(bytes.data, b"ur\nfive\nsix\n", "a byte limit may cut a line");
        let more_lines_than_there_are = read(&path, None, 100, 1 << 20).unwrap().unwrap();
        assert_eq!(more_lines_than_there_are.data, all.data);
    }

    #[test]
    fn following_continues_at_the_offset_even_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.log");
        let mut writer = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        writer.write_all(b"a\nb\n").unwrap();
        let first = read(&path, None, 0, 1024).unwrap().unwrap();
        writer.write_all(b"c\n").unwrap();
        let next = read(&path, Some(first.next_offset), 0, 1024).unwrap().unwrap();
        assert_eq!(next.data, b"c\n");
        assert_eq!(read(&path, Some(next.next_offset), 0, 1024).unwrap().unwrap().data, b"");
        writer.write_all(b"d\n").unwrap();
        rotate_if_needed(&path, LogLimits { max_bytes: 1, keep: 2 }).unwrap();
        writer.write_all(b"e\n").unwrap();
        let after = read(&path, Some(next.next_offset), 0, 1024).unwrap().unwrap();
        assert_eq!(after.data, b"d\ne\n", "the rest of the rotated file, then the new one");
        assert_eq!(after.next_offset, 2);
    }

    fn service(dir: &Path) -> (LogService, ed25519_dalek::SigningKey) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let paths = Paths { data_dir: dir.to_owned() };
        let service = LogService::new(Name::new("edge-1").unwrap(), crate::run::verifier(key.verifying_key()), paths);
        (service, key)
    }

    fn signed(request: &LogRequest, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
        use ed25519_dalek::Signer;
        encode_signed_to_vec(request, |bytes| firmware_proto::Bytes(key.sign(bytes).to_bytes())).unwrap()
    }

    fn request(node: &str, replica: &str) -> LogRequest {
        LogRequest {
            node_id: Name::new(node).unwrap(),
            request_id: 9,
            replica: Name::new(replica).unwrap(),
            offset: None,
            tail_lines: 0,
            max_bytes: 1 << 20,
            container: None,
        }
    }

    #[test]
    fn a_signed_request_is_answered_in_chunks_that_reassemble() {
        let dir = tempfile::tempdir().unwrap();
        let (service, key) = service(dir.path());
        let output: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        std::fs::write(dir.path().join("logs/web-1.web.log"), &output).unwrap();
        // The pod's only container, named or not.
        let named = LogRequest { container: Some(Name::new("web").unwrap()), ..request("edge-1", "web-1") };
        assert_eq!(service.answer(&signed(&named, &key)).unwrap().len(), 3);
        let chunks = service.answer(&signed(&request("edge-1", "web-1"), &key)).unwrap();
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().enumerate().all(|(i, c)| c.index == i as u32 && c.request_id == 9));
        assert!(chunks[..2].iter().all(|c| c.end.is_none()));
        assert_eq!(chunks[2].end, Some(LogEnd { next_offset: 10_000, error: None }));
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
        assert_eq!(joined, output);
        // Every chunk fits a node frame.
        for chunk in chunks {
            encode_node_to_vec(&chunk, 1, |_| firmware_proto::Bytes([0; 16])).unwrap();
        }
    }

    #[test]
    fn forged_misaddressed_and_unknown_requests_are_refused_or_answered_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (service, key) = service(dir.path());
        let other_key = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let forged = service.answer(&signed(&request("edge-1", "web-1"), &other_key)).unwrap_err();
        assert!(forged.contains("signature"), "{forged}");
        let elsewhere = service.answer(&signed(&request("edge-2", "web-1"), &key)).unwrap_err();
        assert!(elsewhere.contains("edge-2"), "{elsewhere}");
        assert!(service.answer(b"\x01\x06garbage").unwrap_err().contains("malformed"));
        let unknown = service.answer(&signed(&request("edge-1", "nobody"), &key)).unwrap();
        let end = unknown[0].end.clone().unwrap();
        assert!(end.error.unwrap().contains("no output recorded for nobody"));
        // A pod of several containers: the request must name one.
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        for container in ["app", "proxy"] {
            std::fs::write(dir.path().join(format!("logs/two-0.{container}.log")), "x\n").unwrap();
        }
        let answer = service.answer(&signed(&request("edge-1", "two-0"), &key)).unwrap();
        let error = answer[0].end.clone().unwrap().error.unwrap();
        assert_eq!(error.as_str(), "two-0 has several containers: name one of app, proxy");
    }

    #[test]
    fn a_replica_without_output_has_no_log() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(&dir.path().join("nobody.log"), None, 10, 1024).unwrap(), None);
    }
}
