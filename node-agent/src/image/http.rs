//! A small HTTP/1.1 client for registry pulls and enrolment, on
//! `std::net::TcpStream` (and rustls for `https://`, trusting the fleet
//! CA: see [`crate::tls`]) with `httparse` for response heads: GET and
//! POST, one request per connection, bodies framed by `Content-Length`,
//! chunked or the end of the connection, redirects, connect and per-read
//! timeouts.
//!
//! Why not a client crate: ureq 3 without TLS added 242 KB to a static
//! aarch64 test binary, this one with httparse about 5 KB, and the agent's
//! binary budget is tight. Not supported: proxies, keep-alive, timeouts on
//! name resolution.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;

use super::registry::Timeouts;

/// Response heads larger than this are refused.
const HEAD_LIMIT: usize = 64 * 1024;
/// Redirects followed before giving up.
const REDIRECTS_MAX: usize = 5;

/// A response: status, headers, and the body to read.
pub struct Response {
    /// Status code.
    pub status: u16,
    headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
}

impl Response {
    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How the end of a body is known.
#[derive(Debug)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked: bytes left in the current chunk; `None` before the first.
    Chunked { left: Option<u64>, done: bool },
    /// Until the server closes the connection.
    Close,
}

/// A response body; reading it past a cut connection is an
/// `UnexpectedEof` error when the framing says more was due.
pub struct Body {
    stream: BufReader<Connection>,
    framing: Framing,
}

/// A connection to a server, plain or TLS.
enum Connection {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Connection::Plain(stream) => stream.read(buf),
            Connection::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Connection::Plain(stream) => stream.write(buf),
            Connection::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Connection::Plain(stream) => stream.flush(),
            Connection::Tls(stream) => stream.flush(),
        }
    }
}

/// What `https://` URLs are trusted with; `None`: they are refused.
pub type Tls<'a> = Option<&'a Arc<rustls::ClientConfig>>;

fn eof(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("connection closed {what}"))
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

impl Body {
    /// A `\r\n`-terminated line of a chunked body.
    fn line(&mut self) -> std::io::Result<String> {
        let mut line = Vec::new();
        (&mut self.stream).take(1024).read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\n") {
            return Err(eof("inside a chunk header"));
        }
        Ok(String::from_utf8_lossy(&line).trim().to_owned())
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.framing {
            Framing::Close => self.stream.read(buf),
            Framing::Length(0) => Ok(0),
            Framing::Length(left) => {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.stream.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(eof(&format!("with {left} body bytes still due")));
                }
                self.framing = Framing::Length(left - n as u64);
                Ok(n)
            }
            Framing::Chunked { done: true, .. } => Ok(0),
            Framing::Chunked { left: Some(left), .. } if left > 0 => {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.stream.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(eof("inside a chunk"));
                }
                self.framing = Framing::Chunked { left: Some(left - n as u64), done: false };
                Ok(n)
            }
            Framing::Chunked { left, .. } => {
                if left.is_some() {
                    // The CRLF after a chunk's data.
                    let end = self.line()?;
                    if !end.is_empty() {
                        return Err(invalid(format!("chunk not followed by CRLF: {end:?}")));
                    }
                }
                let size_line = self.line()?;
                let hex = size_line.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(hex, 16).map_err(|_| invalid(format!("bad chunk size {hex:?}")))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !self.line()?.is_empty() {}
                    self.framing = Framing::Chunked { left: Some(0), done: true };
                    return Ok(0);
                }
                self.framing = Framing::Chunked { left: Some(size), done: false };
                self.read(buf)
            }
        }
    }
}

/// `http://host:port/path` split into address and path.
/// `(scheme, host[:port], path)` of an `http://` or `https://` URL.
fn split_url(url: &str) -> std::io::Result<(&str, &str, &str)> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
        .ok_or_else(|| invalid(format!("not an http:// or https:// URL: {url}")))?;
    Ok(match rest.find('/') {
        Some(slash) => (scheme, &rest[..slash], &rest[slash..]),
        None => (scheme, rest, "/"),
    })
}

/// GETs `url` (`http://...`) with extra request headers, following
/// redirects. Any status is a response; only transport problems are errors.
pub fn get(url: &str, headers: &[(&str, &str)], timeouts: Timeouts, tls: Tls) -> std::io::Result<Response> {
    let mut url = url.to_owned();
    for _ in 0..=REDIRECTS_MAX {
        let response = send_once("GET", &url, headers, &[], timeouts, tls)?;
        let location = match response.status {
            301 | 302 | 303 | 307 | 308 => response.header("location").map(str::to_owned),
            _ => None,
        };
        match location {
            None => return Ok(response),
            Some(location) if location.starts_with('/') => {
                let (scheme, host, _) = split_url(&url)?;
                url = format!("{scheme}://{host}{location}");
            }
            Some(location) => url = location,
        }
    }
    Err(invalid(format!("more than {REDIRECTS_MAX} redirects")))
}

/// POSTs `body` to `url` (no redirects): the agent's enrolment request.
pub fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeouts: Timeouts,
    tls: Tls,
) -> std::io::Result<Response> {
    send_once("POST", url, headers, body, timeouts, tls)
}

fn send_once(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeouts: Timeouts,
    tls: Tls,
) -> std::io::Result<Response> {
    let (scheme, host, path) = split_url(url)?;
    let tls = match (scheme, tls) {
        ("https", Some(config)) => Some(config.clone()),
        ("https", None) => {
            return Err(invalid(format!("{url}: https:// here needs the fleet CA, which this device does not have")));
        }
        _ => None,
    };
    let mut last_error = None;
    let mut connected = None;
    for address in host.to_socket_addrs()? {
        match TcpStream::connect_timeout(&address, timeouts.connect) {
            Ok(stream) => {
                connected = Some(stream);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let stream =
        connected.ok_or_else(|| last_error.unwrap_or_else(|| invalid(format!("{host} resolves to no address"))))?;
    stream.set_read_timeout(Some(timeouts.read))?;
    stream.set_write_timeout(Some(timeouts.read))?;
    let mut stream = match tls {
        Some(config) => {
            // The name checked in the certificate: the host without its port.
            let name =
                host.rsplit_once(':').map_or(host, |(name, _)| name).trim_start_matches('[').trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(name.to_owned())
                .map_err(|e| invalid(format!("{host}: not a name for TLS: {e}")))?;
            let connection = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
            let mut tls = rustls::StreamOwned::new(connection, stream);
            // The handshake now, so that its failure reads as one.
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("TLS with {host}: {}", crate::tls::explain(&e)))
                })?;
            }
            Connection::Tls(Box::new(tls))
        }
        None => Connection::Plain(stream),
    };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: flotilla-agent/{}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;

    let mut stream = BufReader::with_capacity(64 * 1024, stream);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let before = head.len();
        (&mut stream).take((HEAD_LIMIT + 1 - before) as u64).read_until(b'\n', &mut head)?;
        if head.len() == before {
            return Err(eof("before the end of the response head"));
        }
        if head.len() > HEAD_LIMIT {
            return Err(invalid(format!("response head over {HEAD_LIMIT} bytes")));
        }
    }
    let mut parsed_headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut parsed_headers);
    parsed.parse(&head).map_err(|e| invalid(format!("bad response head: {e}")))?;
    let status = parsed.code.unwrap_or(0);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).trim().to_owned()))
        .collect();
    let find = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    let framing = if find("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
        Framing::Chunked { left: None, done: false }
    } else if let Some(length) = find("content-length") {
        Framing::Length(length.parse().map_err(|_| invalid(format!("bad Content-Length {length:?}")))?)
    } else {
        Framing::Close
    };
    Ok(Response { status, headers, body: Body { stream, framing } })
}

/// Reads a whole body, refusing more than `limit` bytes.
pub fn read_limited(body: &mut Body, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    body.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(invalid(format!("body over {limit} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;

    /// A server that answers each connection with the next canned response
    /// and returns the requests it got.
    fn serve(responses: Vec<&'static [u8]>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for response in responses {
                let (mut stream, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut byte = [0];
                while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                    request.push(byte[0]);
                }
                requests.push(String::from_utf8(request).unwrap());
                stream.write_all(response).unwrap();
            }
            requests
        });
        (format!("http://{address}"), server)
    }

    fn timeouts() -> Timeouts {
        Timeouts { connect: Duration::from_secs(2), read: Duration::from_secs(2) }
    }

    #[test]
    fn length_chunked_and_redirected_bodies_are_read_whole() {
        let (base, server) = serve(vec![
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /moved\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 3-4/5\r\nContent-Length: 2\r\n\r\nlo",
        ]);
        let mut response = get(&format!("{base}/v2/x"), &[("Accept", "a/b")], timeouts(), None).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(read_limited(&mut response.body, 100).unwrap(), b"hello world");
        let mut response = get(&format!("{base}/blob"), &[("Range", "bytes=3-")], timeouts(), None).unwrap();
        assert_eq!((response.status, response.header("content-range")), (206, Some("bytes 3-4/5")));
        assert_eq!(read_limited(&mut response.body, 100).unwrap(), b"lo");
        let requests = server.join().unwrap();
        assert!(requests[0].starts_with("GET /v2/x HTTP/1.1\r\n") && requests[0].contains("Accept: a/b\r\n"));
        assert!(requests[1].starts_with("GET /moved HTTP/1.1\r\n"), "{}", requests[1]);
        assert!(requests[2].contains("Range: bytes=3-\r\n"));
    }

    #[test]
    fn a_body_cut_short_is_an_error_and_limits_hold() {
        let (base, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nhal",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        ]);
        let mut cut = get(&base, &[], timeouts(), None).unwrap();
        let error = read_limited(&mut cut.body, 100).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
        let mut cut = get(&base, &[], timeouts(), None).unwrap();
        assert_eq!(read_limited(&mut cut.body, 100).unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
        let mut big = get(&base, &[], timeouts(), None).unwrap();
        assert!(read_limited(&mut big.body, 4).is_err());
        server.join().unwrap();
        let error = get("https://reg:5000/v2/", &[], timeouts(), None).err().unwrap().to_string();
        assert!(error.contains("needs the fleet CA"), "{error}");
    }
}
