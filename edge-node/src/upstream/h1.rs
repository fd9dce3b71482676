//! A lean HTTP/1.1 client for plain-HTTP upstreams (a full node beside the edge node, the usual
//! layout). Every cache miss pays for this hop, and hyper-util's pooled client spent about a
//! quarter of the node's instructions on it: a connection task per socket, a channel and a
//! wake-up between it and the caller, and SipHash over the pool key twice per request. Here the
//! caller's own future writes the request and reads the answer on a pooled socket.
//!
//! What it keeps from hyper-util's rules: a pooled socket is checked for a close by the server
//! before reuse, and a request is retried on a fresh socket only when a reused one closed before
//! any byte of the answer arrived (the server's keep-alive timeout racing our reuse), and only
//! when the caller says the request is safe to send twice.

use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest response head (status line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("connection closed before the response was complete")]
    Closed,
    #[error("malformed HTTP response: {0}")]
    Malformed(&'static str),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

/// One upstream's socket pool and fixed request head.
pub struct Pool {
    /// `host` (brackets stripped) and port, for `TcpStream::connect`.
    host: String,
    port: u16,
    /// `POST <path> HTTP/1.1`, `Host`, `Content-Type` and the start of `Content-Length`.
    head: Vec<u8>,
    idle: parking_lot::Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    max_body: usize,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

/// An answer's status and whole body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Pool {
    /// For an `http://` URL with a host (checked at config load).
    pub fn new(url: &http::Uri, max_idle: usize, idle_timeout: Duration, max_body: usize) -> Self {
        let host = url.host().unwrap_or("localhost");
        let port = url.port_u16().unwrap_or(80);
        let target = url.path_and_query().map_or("/", |p| p.as_str());
        let mut head = Vec::with_capacity(96 + host.len() + target.len());
        head.extend_from_slice(b"POST ");
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        head.extend_from_slice(host.as_bytes());
        // As hyper-util does: the port only when it is not the scheme's default.
        if port != 80 {
            head.push(b':');
            head.extend_from_slice(daemon::text::decimal(port.into(), &mut [0; 20]).as_bytes());
        }
        head.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
        Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            head,
            idle: parking_lot::Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            max_body,
        }
    }

    /// POSTs `body` and reads the whole answer. `idempotent`: the request may be sent again
    /// when a reused socket turns out to have been closed by the server.
    pub async fn post(&self, body: &[u8], idempotent: bool) -> Result<Response, H1Error> {
        let mut req = Vec::with_capacity(self.head.len() + 24 + body.len());
        req.extend_from_slice(&self.head);
        req.extend_from_slice(daemon::text::decimal(body.len() as u64, &mut [0; 20]).as_bytes());
        req.extend_from_slice(b"\r\n\r\n");
        req.extend_from_slice(body);
        if let Some(mut conn) = self.checkout() {
            match conn.exchange(&req, self.max_body).await {
                Ok((resp, reusable)) => return Ok(self.done(conn, resp, reusable)),
                Err(Failure { error, answered }) => {
                    if answered || !idempotent {
                        return Err(error);
                    }
                }
            }
        }
        let mut conn = Conn {
            io: TcpStream::connect((self.host.as_str(), self.port)).await?,
            buf: BytesMut::with_capacity(8 * 1024),
        };
        // JSON-RPC requests are small and must not wait on Nagle.
        conn.io.set_nodelay(true)?;
        match conn.exchange(&req, self.max_body).await {
            Ok((resp, reusable)) => Ok(self.done(conn, resp, reusable)),
            Err(f) => Err(f.error),
        }
    }

    fn done(&self, conn: Conn, resp: Response, reusable: bool) -> Response {
        if reusable {
            self.checkin(conn);
        }
        resp
    }

    /// The most recently used idle socket the server has not closed.
    fn checkout(&self) -> Option<Conn> {
        loop {
            let idle = self.idle.lock().pop()?;
            if idle.since.elapsed() >= self.idle_timeout {
                // Older ones sit below it and are staler still.
                self.idle.lock().clear();
                return None;
            }
            // A readable idle socket is one the server closed (or sent stray bytes on): either
            // way not one to send on. This read is the one hyper's idle connection task makes.
            match idle.conn.io.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(idle.conn),
                _ => continue,
            }
        }
    }

    fn checkin(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.idle.lock();
        // Oldest first: drop the expired prefix so sockets left over from a burst go away.
        let expired = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) >= self.idle_timeout)
            .count();
        idle.drain(..expired);
        if idle.len() < self.max_idle {
            idle.push(Idle { conn, since: now });
        }
    }

    #[cfg(test)]
    fn idle_len(&self) -> usize {
        self.idle.lock().len()
    }
}

/// A failed exchange, and whether any byte of the answer had arrived (then the server may have
/// acted on the request, and it is not sent again).
struct Failure {
    error: H1Error,
    answered: bool,
}

impl From<H1Error> for Failure {
    fn from(error: H1Error) -> Self {
        Failure {
            error,
            answered: true,
        }
    }
}

/// How the body of a response is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl Conn {
    /// Sends `req`; returns the answer and whether the socket may carry another request.
    async fn exchange(&mut self, req: &[u8], max_body: usize) -> Result<(Response, bool), Failure> {
        self.buf.clear();
        if let Err(e) = self.io.write_all(req).await {
            return Err(Failure {
                error: e.into(),
                answered: false,
            });
        }
        loop {
            let (status, framing, mut reusable, head_len) = match self.parse_head()? {
                Some(h) => h,
                None if self.buf.len() >= MAX_HEAD_BYTES => {
                    return Err(H1Error::Malformed("response head too large").into())
                }
                None => {
                    let before = self.buf.len();
                    match self.fill(4096).await {
                        Ok(()) => continue,
                        Err(error) => {
                            return Err(Failure {
                                error,
                                answered: before > 0,
                            })
                        }
                    }
                }
            };
            self.buf.advance(head_len);
            // 1xx answers are interim: the real one follows on the same socket.
            if (100..200).contains(&status) {
                continue;
            }
            let body = match framing {
                _ if status == 204 || status == 304 => Bytes::new(),
                Framing::Length(n) => {
                    if n > max_body {
                        return Err(H1Error::TooLarge(max_body).into());
                    }
                    while self.buf.len() < n {
                        self.fill(n).await?;
                    }
                    self.buf.split_to(n).freeze()
                }
                Framing::Chunked => self.read_chunked(max_body).await?,
                Framing::UntilClose => {
                    reusable = false;
                    loop {
                        if self.buf.len() > max_body {
                            return Err(H1Error::TooLarge(max_body).into());
                        }
                        match self.fill(max_body + 1).await {
                            Ok(()) => {}
                            Err(H1Error::Closed) => break,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    self.buf.split().freeze()
                }
            };
            // Bytes past the answer were never asked for: the socket's framing is unknown.
            let reusable = reusable && self.buf.is_empty();
            return Ok((Response { status, body }, reusable));
        }
    }

    /// The status, framing, keep-alive and head length, once the whole head is buffered.
    #[allow(clippy::type_complexity)]
    fn parse_head(&self) -> Result<Option<(u16, Framing, bool, usize)>, H1Error> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(H1Error::Malformed("unparseable status line or headers")),
        };
        let status = resp.code.unwrap_or(0);
        // HTTP/1.0 keeps the socket only on request; we never ask.
        let mut reusable = resp.version == Some(1);
        let mut length: Option<usize> = None;
        let mut chunked = false;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<usize>().ok())
                    .ok_or(H1Error::Malformed("invalid content-length"))?;
                if length.is_some_and(|m| m != n) {
                    return Err(H1Error::Malformed("conflicting content-length headers"));
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Only `chunked` as the last coding delimits the body; we ask for no other.
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(H1Error::Malformed("unsupported transfer-encoding"));
                }
                chunked = true;
            } else if h.name.eq_ignore_ascii_case("connection")
                && h.value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                reusable = false;
            }
        }
        let framing = match (chunked, length) {
            // RFC 9112 6.3: transfer-encoding wins, and the socket is not reused after.
            (true, Some(_)) => {
                reusable = false;
                Framing::Chunked
            }
            (true, None) => Framing::Chunked,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::UntilClose,
        };
        Ok(Some((status, framing, reusable, head_len)))
    }

    async fn read_chunked(&mut self, max_body: usize) -> Result<Bytes, H1Error> {
        let mut body = BytesMut::new();
        loop {
            let (used, size) = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete(c)) => break c,
                    Ok(httparse::Status::Partial) if self.buf.len() < 1024 => {
                        self.fill(4096).await?;
                    }
                    _ => return Err(H1Error::Malformed("invalid chunk size line")),
                }
            };
            self.buf.advance(used);
            if size == 0 {
                break;
            }
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > max_body - body.len() {
                return Err(H1Error::TooLarge(max_body));
            }
            while self.buf.len() < size + 2 {
                self.fill(size + 2).await?;
            }
            body.extend_from_slice(&self.buf[..size]);
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(H1Error::Malformed("chunk not followed by CRLF"));
            }
            self.buf.advance(size + 2);
        }
        // Trailer fields, if any, then the empty line.
        loop {
            match memchr::memmem::find(&self.buf, b"\r\n") {
                Some(0) => {
                    self.buf.advance(2);
                    return Ok(body.freeze());
                }
                Some(n) => self.buf.advance(n + 2),
                None if self.buf.len() < MAX_HEAD_BYTES => self.fill(4096).await?,
                None => return Err(H1Error::Malformed("trailer too long")),
            }
        }
    }

    /// One read, with room for what is still `want`ed (between 4 and 64 KiB).
    async fn fill(&mut self, want: usize) -> Result<(), H1Error> {
        self.buf
            .reserve(want.saturating_sub(self.buf.len()).clamp(4096, 64 * 1024));
        match self.io.read_buf(&mut self.buf).await? {
            0 => Err(H1Error::Closed),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
