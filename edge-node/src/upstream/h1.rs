//! A lean HTTP/1.1 client for plain-HTTP upstreams (a full node beside the edge node, the usual
//! layout). Every cache miss pays for this hop, and hyper-util's pooled client spent about a
//! quarter of the node's instructions on it: a connection task per socket, a channel and a
//! wake-up between it and the caller, and SipHash over the pool key twice per request. Here the
//! caller's own future writes the request and reads the answer on a pooled socket.
//!
//! What it keeps from hyper-util's rules: a pooled socket is checked for a close by the server
//! before reuse, and a request is retried on a fresh socket only when a reused one closed before
//! any byte of the answer arrived (the server's keep-alive timeout racing our reuse), and only
//! when the caller says the request is safe to send twice. Idle sockets are dropped after the
//! idle timeout by [`Pool::prune`] (run by a reaper task) and on use.

use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest response head (status line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// A pooled socket's buffer above this is dropped, not kept: one large answer must not pin its
/// buffer for the socket's life.
const MAX_KEPT_BUFFER: usize = 64 * 1024;
const BUFFER: usize = 8 * 1024;

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
    /// Some byte of the current exchange's answer has arrived.
    answered: bool,
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
        let path = url.path();
        let mut head = Vec::with_capacity(128 + host.len() + path.len());
        head.extend_from_slice(b"POST ");
        // `http://host?k=1` has an empty path; the request target is `/?k=1`.
        head.extend_from_slice(if path.is_empty() {
            b"/"
        } else {
            path.as_bytes()
        });
        if let Some(q) = url.query() {
            head.push(b'?');
            head.extend_from_slice(q.as_bytes());
        }
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

    /// POSTs `body` and reads the whole answer. `idempotent` says whether the request may be
    /// sent again when a reused socket turns out to have been closed by the server (asked only
    /// then).
    pub async fn post(
        &self,
        body: &[u8],
        idempotent: impl FnOnce() -> bool,
    ) -> Result<Response, H1Error> {
        let mut req = Vec::with_capacity(self.head.len() + 24 + body.len());
        req.extend_from_slice(&self.head);
        req.extend_from_slice(daemon::text::decimal(body.len() as u64, &mut [0; 20]).as_bytes());
        req.extend_from_slice(b"\r\n\r\n");
        req.extend_from_slice(body);
        if let Some(mut conn) = self.checkout() {
            match conn.exchange(&req, self.max_body).await {
                Ok((resp, reusable)) => return Ok(self.done(conn, resp, reusable)),
                Err(Failure { error, answered }) => {
                    if answered || !idempotent() {
                        return Err(error);
                    }
                }
            }
        }
        let mut conn = Conn {
            io: TcpStream::connect((self.host.as_str(), self.port)).await?,
            buf: BytesMut::with_capacity(BUFFER),
            answered: false,
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
                // Older ones sit below it and are staler still. Closed outside the lock.
                drop(std::mem::take(&mut *self.idle.lock()));
                return None;
            }
            // A readable idle socket is one the server closed (or sent stray bytes on): either
            // way not one to send on. Asked of the kernel, not of tokio's readiness, which
            // knows of a close only once the reactor has turned since. This is the read
            // hyper's idle connection task makes.
            let mut probe = [MaybeUninit::<u8>::uninit()];
            match socket2::SockRef::from(&idle.conn.io).peek(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(idle.conn),
                _ => continue,
            }
        }
    }

    fn checkin(&self, mut conn: Conn) {
        if conn.buf.capacity() > MAX_KEPT_BUFFER {
            conn.buf = BytesMut::with_capacity(BUFFER);
        }
        let mut idle = self.idle.lock();
        let now = Instant::now();
        // Oldest first: drop the expired prefix so sockets left over from a burst go away.
        let expired = self.expired(&idle, now);
        let gone: Vec<Idle> = idle.drain(..expired).collect();
        let refused = if idle.len() < self.max_idle {
            idle.push(Idle { conn, since: now });
            None
        } else {
            Some(conn)
        };
        drop(idle);
        drop((gone, refused));
    }

    /// How many of the oldest idle sockets are past the idle timeout at `now`.
    fn expired(&self, idle: &[Idle], now: Instant) -> usize {
        idle.iter()
            .take_while(|i| now.duration_since(i.since) >= self.idle_timeout)
            .count()
    }

    /// Closes the sockets idle past the timeout (the server may be holding them open too).
    pub fn prune(&self) {
        let mut idle = self.idle.lock();
        let expired = self.expired(&idle, Instant::now());
        let gone: Vec<Idle> = idle.drain(..expired).collect();
        drop(idle);
        drop(gone);
    }

    /// How long sockets may stay idle.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
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
        self.answered = false;
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
                None => match self.fill(4096).await {
                    Ok(()) => continue,
                    Err(error) => {
                        return Err(Failure {
                            error,
                            answered: self.answered,
                        })
                    }
                },
            };
            self.buf.advance(head_len);
            // 1xx answers are interim: the real one follows on the same socket. Not 101: we
            // never ask to switch protocols.
            if status == 101 {
                return Err(H1Error::Malformed("unasked protocol switch").into());
            }
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
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD_BYTES => n,
            Ok(httparse::Status::Complete(_)) => {
                return Err(H1Error::Malformed("response head too large"))
            }
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
                // We send no `TE`, so `chunked`, once, is the only coding a server may use.
                for coding in h.value.split(|&b| b == b',') {
                    if chunked || !coding.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                        return Err(H1Error::Malformed("unsupported transfer-encoding"));
                    }
                    chunked = true;
                }
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
                // httparse reads an empty line as size 0, the last chunk: a size has a digit.
                if self.buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                    return Err(H1Error::Malformed("invalid chunk size line"));
                }
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
        // Trailer fields, if any, then the empty line; all of them within the head's limit.
        let mut trailer = 0;
        loop {
            match memchr::memmem::find(&self.buf, b"\r\n") {
                Some(0) => {
                    self.buf.advance(2);
                    return Ok(body.freeze());
                }
                Some(n) if trailer + n < MAX_HEAD_BYTES => {
                    trailer += n + 2;
                    self.buf.advance(n + 2);
                }
                None if trailer + self.buf.len() < MAX_HEAD_BYTES => self.fill(4096).await?,
                _ => return Err(H1Error::Malformed("trailer too long")),
            }
        }
    }

    /// One read, with room for what is still `want`ed (between 4 and 64 KiB).
    async fn fill(&mut self, want: usize) -> Result<(), H1Error> {
        self.buf
            .reserve(want.saturating_sub(self.buf.len()).clamp(4096, 64 * 1024));
        match self.io.read_buf(&mut self.buf).await? {
            0 => Err(H1Error::Closed),
            _ => {
                self.answered = true;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
