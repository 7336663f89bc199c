//! Just enough HTTP/1.1 for health checks and demo pages: read a request
//! head, write a complete response, close the connection.
//!
//! Bodies of requests are never read (only GET and HEAD are served), and
//! every response says `Connection: close`, which HTTP/1.1 allows and which
//! probes (one request per connection) expect anyway.

use std::fmt;
use std::io::{self, BufRead, Write};

/// Longest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;

/// The parts of a request that routing looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path, without the query string.
    pub path: String,
}

/// Why a request could not be read.
#[derive(Debug)]
pub enum RequestError {
    /// The client closed the connection before sending a request.
    Closed,
    /// The head is longer than [`MAX_HEAD`].
    TooLarge,
    /// The request line is not `METHOD TARGET HTTP/x.y`.
    Malformed(String),
    /// Reading failed (a timeout, a reset).
    Io(io::Error),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Closed => write!(f, "connection closed before a request"),
            RequestError::TooLarge => write!(f, "request head larger than {MAX_HEAD} bytes"),
            RequestError::Malformed(line) => write!(f, "malformed request line {line:?}"),
            RequestError::Io(error) => write!(f, "reading the request: {error}"),
        }
    }
}

impl std::error::Error for RequestError {}

/// Reads a request head (up to the empty line) and parses its request line.
pub fn read_request(reader: &mut impl BufRead) -> Result<Request, RequestError> {
    let mut head_len = 0;
    let mut request_line = None;
    loop {
        let mut line = Vec::new();
        // Bounded read: a client must not make the server buffer without end.
        let limit = (MAX_HEAD - head_len + 1) as u64;
        let read = io::Read::take(&mut *reader, limit).read_until(b'\n', &mut line).map_err(RequestError::Io)?;
        head_len += read;
        if head_len > MAX_HEAD {
            return Err(RequestError::TooLarge);
        }
        if read == 0 {
            return Err(match request_line {
                None => RequestError::Closed,
                Some(_) => RequestError::Malformed("request head ended early".to_owned()),
            });
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        match &request_line {
            None => request_line = Some(text.to_owned()),
            Some(_) if text.is_empty() => break,
            Some(_) => {} // a header: not needed
        }
    }
    parse_request_line(request_line.as_deref().unwrap_or_default())
}

/// Parses `METHOD TARGET HTTP/1.x`.
fn parse_request_line(line: &str) -> Result<Request, RequestError> {
    let malformed = || RequestError::Malformed(line.to_owned());
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(malformed());
    }
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(malformed());
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok(Request { method: method.to_owned(), path: path.to_owned() })
}

/// A complete response with a plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers (name, value).
    pub headers: Vec<(&'static str, String)>,
    /// The body (always text/plain).
    pub body: String,
}

impl Response {
    /// A response with this status and body.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response { status, headers: Vec::new(), body: body.into() }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Writes the response; with `include_body` false (HEAD) only the head.
    pub fn write_to(&self, writer: &mut impl Write, include_body: bool) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        writer.write_all(head.as_bytes())?;
        if include_body {
            writer.write_all(self.body.as_bytes())?;
        }
        writer.flush()
    }
}

/// Reason phrase of the status codes this server sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Request, RequestError> {
        read_request(&mut &bytes[..])
    }

    #[test]
    fn reads_request_line_and_skips_headers_and_query() {
        let request = parse(b"GET /healthz?verbose=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: probe\r\n\r\n").unwrap();
        assert_eq!(request, Request { method: "GET".into(), path: "/healthz".into() });
        // Bare \n line ends are accepted too.
        assert_eq!(parse(b"HEAD / HTTP/1.0\n\n").unwrap().method, "HEAD");
    }

    #[test]
    fn rejects_malformed_truncated_and_oversized_heads() {
        assert!(matches!(parse(b""), Err(RequestError::Closed)));
        assert!(matches!(parse(b"GET /\r\n\r\n"), Err(RequestError::Malformed(_))));
        assert!(matches!(parse(b"get / HTTP/1.1\r\n\r\n"), Err(RequestError::Malformed(_))));
        assert!(matches!(parse(b"GET x HTTP/1.1\r\n\r\n"), Err(RequestError::Malformed(_))));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Err(RequestError::Malformed(_))));
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        huge.extend(b"\r\n\r\n");
        assert!(matches!(parse(&huge), Err(RequestError::TooLarge)));
    }

    #[test]
    fn writes_status_length_and_optional_body() {
        let response = Response::text(405, "no\n").with_header("Allow", "GET, HEAD");
        let mut out = Vec::new();
        response.write_to(&mut out, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{text}");
        assert!(text.contains("Content-Length: 3\r\n") && text.contains("Allow: GET, HEAD\r\n"));
        assert!(text.ends_with("\r\n\r\nno\n"), "{text}");

        let mut head_only = Vec::new();
        response.write_to(&mut head_only, false).unwrap();
        assert!(String::from_utf8(head_only).unwrap().ends_with("\r\n\r\n"));
    }
}
