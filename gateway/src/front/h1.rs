//! A lean HTTP/1.1 server for the request nearly every caller sends: `POST` with a
//! `Content-Length` body. hyper's HTTP/1 server spent about 10k of the 27k instructions of a
//! gateway-tier hit (a dispatcher, a body channel, a header map and a response encoder of its
//! own); this one parses with `httparse` (as hyper does),
//! reads the body within `body_timeout_ms` (answering `Expect: 100-continue` first), calls the
//! request path with the body in hand, and writes the answer in one `write`. A body late past
//! its deadline is handed on empty and marked [`LateBody`]: the request path answers 408 and the
//! connection closes.
//!
//! Anything else goes to hyper, with the bytes read so far handed back ([`Handoff`], read again
//! through [`Rewind`]): other methods (`GET /healthz`, CORS preflights, WebSocket upgrades),
//! HTTP/1.0, chunked bodies, other expectations, a body over 64 KiB (hyper's path checks the
//! caller's key before reading it, and answers 413 unread past `max_body_bytes`), and any head
//! hyper would refuse (it answers with the right error). From then on hyper serves the
//! connection, so every rule it keeps still holds there, and the request path
//! ([`super::entry`]) is the same code for both.
//!
//! Between requests the connection holds no buffer: it waits for the socket to be readable
//! first, so an idle keep-alive connection does not keep the 8 KiB read buffer hyper's does.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::conns::Activity;
use super::heads::{range, Few, Read, Span, FEW_MAX};
use super::respond::Resp;

/// Most headers a request may have on this path; more goes to hyper (its limit is 100).
const MAX_HEADERS: usize = 32;
/// A head not complete within this many bytes goes to hyper (it allows more, and answers 431
/// past its own bound).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Read size while a request comes in.
const READ_CHUNK: usize = 4096;
/// The largest body read here. The body is read before the request path checks the caller's
/// key, chain and content type; a larger one goes to hyper's path, which checks those first and
/// drains at most this much from a refused request.
const MAX_BODY: usize = 64 * 1024;
/// A read buffer left holding more than this after a request (a large body's) is not kept for
/// the next one.
const MAX_KEPT_BUFFER: usize = 16 * 1024;
/// A whole request (head and body) up to this size is copied out of the read buffer; a larger
/// one is split off it without a copy.
const COPY_REQUEST_MAX: usize = 2 * 1024;
/// A body up to this size is copied behind the head and both go out in one `write`; a larger
/// one goes out in a second.
const COPY_BODY_MAX: usize = 16 * 1024;
/// The most an answer's head takes beside its headers: the status line (the longest reason is
/// 31 bytes), `content-length`, `connection: close`, `date` and the blank line (142 bytes).
const HEAD_FIXED_MAX: usize = 160;

/// What the connection is left with when hyper takes over: the socket and the bytes read but
/// not served, starting at a request's first byte.
pub struct Handoff {
    pub stream: TcpStream,
    pub read: BytesMut,
}

/// Marks a request whose body did not arrive within `body_timeout_ms` (its body is empty).
#[derive(Debug, Clone, Copy)]
pub struct LateBody;

/// What the lean server allows a request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `max_body_bytes`: a larger declared body goes to hyper's path, which refuses it unread.
    pub max_body: usize,
    /// `body_timeout_ms`: from a request's head to the end of its body.
    pub body_timeout: Duration,
}

/// Shared between the connection's future and whoever may ask it to close
/// ([`super::sniff::Sniffed`]).
#[derive(Default)]
pub struct Closing {
    /// Asked to close: the request being read or served is answered with `connection: close`
    /// and no further one is read.
    asked: AtomicBool,
    /// Waiting for a request's first byte: nothing to finish, so it can be dropped at once.
    idle: AtomicBool,
}

impl Closing {
    /// Asks the connection to close; returns whether it is between requests (safe to drop).
    pub fn ask(&self) -> bool {
        self.asked.store(true, Ordering::Relaxed);
        self.idle.load(Ordering::Relaxed)
    }

    pub fn asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed)
    }
}

/// Serves requests on `stream` with `handler` until the peer closes, the connection is asked to
/// close, or a request needs hyper (`Ok(Some(handoff))`). Each request is in flight on
/// `activity` from its head until its answer is ready, as hyper's service marks it.
pub async fn serve<F, Fut>(
    mut stream: TcpStream,
    handler: F,
    activity: Arc<Activity>,
    closing: Arc<Closing>,
    limits: Limits,
) -> io::Result<Option<Handoff>>
where
    F: Fn(Request<Lean>) -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let mut buf = BytesMut::new();
    let mut head = Head::default();
    loop {
        loop {
            if buf.is_empty() {
                // Between requests: hold no buffer while waiting.
                buf = BytesMut::new();
                closing.idle.store(true, Ordering::Relaxed);
                if closing.asked() {
                    return Ok(None);
                }
                stream.readable().await?;
                closing.idle.store(false, Ordering::Relaxed);
            } else {
                match parse(&buf, limits.max_body.min(MAX_BODY), &mut head) {
                    Parsed::Partial if buf.len() < MAX_HEAD_BYTES => {}
                    Parsed::Partial | Parsed::Hyper => {
                        tracing::debug!("request handed to hyper's HTTP/1 server");
                        return Ok(Some(Handoff { stream, read: buf }));
                    }
                    Parsed::Request => break,
                }
            }
            buf.reserve(READ_CHUNK);
            // `read_buf`, not `try_read_buf`: a read that leaves room in the buffer marks the
            // socket drained, so the next wait goes to epoll instead of to a read that fails.
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(None);
            }
        }
        let in_flight = activity.start();
        let whole = head.len + head.body_len;
        // `None`: the peer left mid-body, no one to answer.
        let Some(late) = read_body(&mut stream, &mut buf, &head, limits.body_timeout).await? else {
            return Ok(None);
        };
        let (raw, req) = if late {
            // The rest of the body may still come: this connection cannot be read on.
            let raw = std::mem::take(&mut buf).freeze();
            let req = head.request(&raw, 0).map(|mut req| {
                req.extensions_mut().insert(LateBody);
                req
            });
            (raw, req)
        } else {
            let raw = if whole <= COPY_REQUEST_MAX {
                // A copy the request's own size: the read buffer is not pinned while the
                // request is served (a node's answer can take a while), so it is freed, or
                // read into, at once and comes back warm from the allocator's thread cache.
                let raw = Bytes::copy_from_slice(&buf[..whole]);
                buf.advance(whole);
                if buf.is_empty() {
                    buf = BytesMut::new();
                }
                raw
            } else {
                let raw = buf.split_to(whole).freeze();
                if buf.capacity() > MAX_KEPT_BUFFER {
                    // What is left shares a large body's allocation: keep a copy instead.
                    buf = BytesMut::from(&buf[..]);
                }
                raw
            };
            let req = head.request(&raw, head.body_len);
            (raw, req)
        };
        let Some(req) = req else {
            // A path httparse takes and `Uri` does not (`<`, `"`, ...): hyper answers it (400),
            // from the request's first byte.
            drop(in_flight);
            let mut read = BytesMut::from(&raw[..]);
            read.extend_from_slice(&buf);
            return Ok(Some(Handoff { stream, read }));
        };
        let resp = handler(req).await;
        drop(in_flight);
        let close = late || head.close || closing.asked() || asks_close(resp.headers());
        write_response(&mut stream, resp, close).await?;
        if close {
            let _ = stream.shutdown().await;
            return Ok(None);
        }
    }
}

/// Reads the rest of `head`'s body into `buf` (answering `Expect: 100-continue` first) within
/// `timeout`: whether it came late (`Some(true)`), or `None` when the peer closed first.
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    head: &Head,
    timeout: Duration,
) -> io::Result<Option<bool>> {
    let whole = head.len + head.body_len;
    if buf.len() >= whole {
        return Ok(Some(false));
    }
    let deadline = Instant::now() + timeout;
    if head.expect_continue {
        // Within the body's deadline: a peer that reads nothing cannot hold the connection in
        // flight (and so open) with it.
        let go_on = b"HTTP/1.1 100 Continue\r\n\r\n";
        match tokio::time::timeout_at(deadline, stream.write_all(go_on)).await {
            Ok(written) => written?,
            Err(_) => return Ok(Some(true)),
        }
    }
    // At most MAX_BODY and a head: `parse` sends larger bodies to hyper.
    buf.reserve(whole - buf.len());
    while buf.len() < whole {
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(0)) => return Ok(None),
            Ok(read) => read?,
            Err(_) => return Ok(Some(true)),
        };
    }
    Ok(Some(false))
}

/// What a buffer starting at a request's first byte holds.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request for hyper (see the module docs).
    Hyper,
    /// A whole head for this path.
    Request,
}

/// A request this path read: its body, whole, and the headers the request path reads
/// ([`Few`]); no header map is built.
#[derive(Debug)]
pub struct Lean {
    pub body: Full<Bytes>,
    /// Boxed: the request is held several times over in the connection's future, whose size an
    /// idle connection pays for; inline, `Few` made that +0.5 KiB per connection.
    pub heads: Box<Few>,
}

impl hyper::body::Body for Lean {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A request's head, as spans of the buffer it was parsed from.
#[derive(Default)]
struct Head {
    /// The head's length, blank line included.
    len: usize,
    body_len: usize,
    path: Span,
    /// The headers the request path reads, and their values.
    reads: [(Read, Span); FEW_MAX],
    count: usize,
    /// `Connection: close`.
    close: bool,
    /// `Expect: 100-continue`.
    expect_continue: bool,
}

/// The whole request (head and `Content-Length` body) at the start of `buf`, as [`serve`] reads
/// and builds it; `None` when it is not whole or is one for hyper (benches).
pub fn request(buf: &Bytes, max_body: usize) -> Option<Request<Lean>> {
    let mut head = Head::default();
    match parse(buf, max_body, &mut head) {
        Parsed::Request if buf.len() >= head.len + head.body_len => {
            head.request(buf, head.body_len)
        }
        _ => None,
    }
}

/// Parses the head at the start of `buf` into `head`.
fn parse(buf: &[u8], max_body: usize, head: &mut Head) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // Too many headers, or a malformed head: hyper's rules and its answer.
        Err(_) => return Parsed::Hyper,
    };
    let (Some("POST"), Some(1), Some(path)) = (req.method, req.version, req.path) else {
        return Parsed::Hyper;
    };
    if !path.starts_with('/') || len > MAX_HEAD_BYTES {
        return Parsed::Hyper;
    }
    let base = buf.as_ptr() as usize;
    // Within the head, so under MAX_HEAD_BYTES (16 KiB): both fit a u16.
    let at = |s: &[u8]| ((s.as_ptr() as usize - base) as u16, s.len() as u16);
    head.len = len;
    head.body_len = 0;
    head.path = at(path.as_bytes());
    head.count = 0;
    head.close = false;
    head.expect_continue = false;
    let mut length = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if let Some(read) = Read::from_name(name) {
            if head.count == FEW_MAX {
                // More of them than a client sends: hyper's path, with its header map.
                return Parsed::Hyper;
            }
            head.reads[head.count] = (read, at(h.value));
            head.count += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Parsed::Hyper;
            }
            length = Some(decimal(h.value));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    // `upgrade`, or hop-by-hop header names: hyper's handling.
                    return Parsed::Hyper;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect")
            && h.value.eq_ignore_ascii_case(b"100-continue")
            && !head.expect_continue
        {
            head.expect_continue = true;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parsed::Hyper;
        }
    }
    match length {
        Some(Some(n)) if n <= max_body => head.body_len = n,
        // No length, a bad one, or too large (hyper's path answers 413 without reading it).
        _ => return Parsed::Hyper,
    }
    Parsed::Request
}

/// A `Content-Length` value: digits only, no sign or space, and one `usize` holds.
fn decimal(v: &[u8]) -> Option<usize> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0usize, |n, d| {
        let d = d.is_ascii_digit().then(|| usize::from(d - b'0'))?;
        n.checked_mul(10)?.checked_add(d)
    })
}

impl Head {
    /// The request, its path, header values and body (`body_len` bytes after the head) slices
    /// of `raw`.
    fn request(&self, raw: &Bytes, body_len: usize) -> Option<Request<Lean>> {
        let uri = match &raw[range(self.path)] {
            // What nearly every call asks: no parse, no reference to the buffer.
            b"/" => Uri::from_static("/"),
            _ => Uri::from_maybe_shared(raw.slice(range(self.path))).ok()?,
        };
        let mut req = Request::new(Lean {
            body: Full::new(raw.slice(self.len..self.len + body_len)),
            heads: Box::new(Few::new(raw.clone(), &self.reads[..self.count])),
        });
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        Some(req)
    }
}

/// Whether the answer asks for the connection to close.
fn asks_close(h: &HeaderMap) -> bool {
    h.get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// Writes `resp` framed by `Content-Length`, with a `Date` (as hyper adds) and, when the
/// connection closes after it, `Connection: close`.
async fn write_response(stream: &mut TcpStream, resp: Resp, close: bool) -> io::Result<()> {
    let mut out = Vec::new();
    let rest = encode(resp, close, &mut out);
    stream.write_all(&out).await?;
    if !rest.is_empty() {
        stream.write_all(&rest).await?;
    }
    Ok(())
}

/// Writes `resp`'s head into `out`, and its body too when small; returns the body left to send.
pub fn encode(resp: Resp, close: bool, out: &mut Vec<u8>) -> Bytes {
    let (parts, body) = resp.into_parts();
    let body = full_bytes(body);
    // 1xx, 204 and 304 have no body and no length (RFC 9112, section 6.3).
    let bodyless = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let copy = !bodyless && body.len() <= COPY_BODY_MAX;
    // The head's size, so `out` is allocated once: its fixed parts (status line, length, date,
    // close) fit in HEAD_FIXED_MAX, and each header takes its name, value and 4 bytes.
    let fields: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    out.reserve(HEAD_FIXED_MAX + fields + if copy { body.len() } else { 0 });
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::CONNECTION {
            continue;
        }
        dated |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !bodyless {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(daemon::text::decimal(body.len() as u64, &mut [0; 20]).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        date::now(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if copy {
        out.extend_from_slice(&body);
        Bytes::new()
    } else if bodyless {
        Bytes::new()
    } else {
        body
    }
}

/// The bytes of a `Full` body (ready at once: no waker needed).
pub(crate) fn full_bytes(body: Full<Bytes>) -> Bytes {
    let mut body = std::pin::pin!(body);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match body.as_mut().poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// The `Date` header's value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }

    pub fn now(f: impl FnOnce(&[u8])) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with_borrow_mut(|(at, text)| {
            if *at != secs {
                let s = httpdate::fmt_http_date(now);
                text.copy_from_slice(&s.as_bytes()[..29]);
                *at = secs;
            }
            f(&text[..]);
        });
    }
}

/// A socket read again from the bytes already taken from it, then as itself: how hyper gets a
/// connection the fast path has begun reading.
pub struct Rewind {
    read: Bytes,
    stream: TcpStream,
}

impl Rewind {
    pub fn new(handoff: Handoff) -> Self {
        Self {
            read: handoff.read.freeze(),
            stream: handoff.stream,
        }
    }

    /// A socket nothing was read from.
    pub fn fresh(stream: TcpStream) -> Self {
        Self {
            read: Bytes::new(),
            stream,
        }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::heads::Heads;
    use http::{HeaderName, HeaderValue};

    #[test]
    fn content_length_is_digits_that_fit() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"007"), Some(7));
        assert_eq!(decimal(b"65536"), Some(65536));
        for bad in [
            &b""[..],
            b"+5",
            b"-1",
            b"5 ",
            b" 5",
            b"1,1",
            b"0x10",
            b"99999999999999999999999",
        ] {
            assert_eq!(decimal(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_headers_the_request_path_reads_reach_it_whatever_their_case() {
        let raw =
            b"POST / HTTP/1.1\r\nHost: a\r\nUser-Agent: viem\r\nCONTENT-TYPE: application/json\r\n\
            content-encoding: identity\r\nAccept-Encoding: gzip\r\nOrigin: https://d.app\r\n\
            Authorization: Bearer b\r\nX-API-Key: k\r\nX-Forwarded-For: 1.2.3.4\r\n\
            X-Forwarded-For: 5.6.7.8\r\nForwarded: for=1.2.3.4\r\nContent-Length: 2\r\n\r\n{}";
        let req = request(&Bytes::copy_from_slice(raw), 1024).expect("served here");
        let h = Heads::Few(&req.body().heads);
        for r in Read::ALL {
            assert!(h.contains(r), "{r:?} is missing");
        }
        let xff: Vec<_> = h.get_all(Read::XForwardedFor).collect();
        assert_eq!(xff, [&b"1.2.3.4"[..], b"5.6.7.8"], "each line, in order");
        assert_eq!(h.get_str(Read::Authorization), Some("Bearer b"));
        assert!(req.headers().is_empty(), "no header map is built");
        // As many read headers as `Few` holds are served here; more go to hyper (its map).
        let with = |n: usize| {
            let mut raw = b"POST / HTTP/1.1\r\n".to_vec();
            for i in 0..n {
                raw.extend_from_slice(format!("X-Forwarded-For: 10.0.0.{i}\r\n").as_bytes());
            }
            raw.extend_from_slice(b"Content-Length: 2\r\n\r\n{}");
            request(&Bytes::from(raw), 1024)
        };
        let full = with(FEW_MAX).expect("FEW_MAX read headers are served here");
        let hops = Heads::Few(&full.body().heads).get_all(Read::XForwardedFor);
        assert_eq!(hops.count(), FEW_MAX);
        assert!(with(FEW_MAX + 1).is_none());
    }

    /// Every header the request path looks up (in the files it runs through) is read through
    /// [`Heads`] by a [`Read`], or is one this path has dealt with already: a look-up in the
    /// request's header map would find nothing here, where none is built.
    #[test]
    fn the_request_path_reads_its_headers_through_heads() {
        let sources = [
            include_str!("entry.rs"),
            include_str!("cors.rs"),
            include_str!("compress.rs"),
            include_str!("../tenants.rs"),
            include_str!("../geo/client_ip.rs"),
            include_str!("../request.rs"),
            include_str!("../request/phases.rs"),
            include_str!("../request/capable.rs"),
            include_str!("../request/slot.rs"),
            include_str!("../app.rs"),
        ];
        // `Content-Length` and `Connection` are read by `parse` here; the rest is hyper's.
        let handled = ["content-length", "connection"];
        let mut seen = std::collections::HashSet::new();
        for src in sources {
            for call in [
                ".get(",
                ".get_all(",
                ".get_str(",
                ".contains(",
                ".contains_key(",
            ] {
                for (at, _) in src.match_indices(call) {
                    let arg = &src[at + call.len()..];
                    let arg = &arg[..arg.find(')').unwrap_or(0)];
                    if let Some(at) = arg.find("Read::") {
                        seen.insert(arg[at + "Read::".len()..].trim().to_string());
                        continue;
                    }
                    if call == ".contains(" {
                        // Sets and ranges too: only a `Read` counts.
                        continue;
                    }
                    // A look-up by a literal name would slip past the scan.
                    assert!(
                        !arg.trim_start().starts_with('"'),
                        "a header read by a literal name: {arg}: use a Read"
                    );
                    let ident = arg.rsplit("::").next().unwrap_or("");
                    if ident.is_empty()
                        || !ident.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                    {
                        continue;
                    }
                    let name = ident.to_ascii_lowercase().replace('_', "-");
                    assert!(
                        handled.contains(&name.as_str()),
                        "the request path reads {name} from the header map: read it through \
                         Heads (a Read)"
                    );
                }
            }
        }
        // Each Read is looked up somewhere (so the scan finds the reads, and `Few` keeps
        // nothing no one reads).
        for r in Read::ALL {
            assert!(
                seen.contains(&format!("{r:?}")),
                "{r:?} is kept but no look-up of it was found"
            );
        }
    }

    #[test]
    fn a_whole_request_is_built_from_its_bytes_and_the_rest_is_left_to_hyper() {
        let req = request(
            &Bytes::from_static(b"POST /v1/k?x=1 HTTP/1.1\r\nHost: a\r\nX-Api-Key: k\r\nContent-Length: 2\r\n\r\n{}tail"),
            1024,
        )
        .expect("served here");
        assert_eq!(req.uri(), "/v1/k?x=1");
        assert_eq!(
            Heads::Few(&req.body().heads).get_str(Read::XApiKey),
            Some("k")
        );
        assert_eq!(full_bytes(req.into_body().body), "{}");
        for hyper in [
            // Over the body limit (here 1024), not whole yet (served once the rest comes), and
            // not a POST.
            &b"POST / HTTP/1.1\r\ncontent-length: 1025\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nab",
            b"PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"POST * HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"POST http://a/ HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            // No length, and a path `Uri` refuses.
            b"POST / HTTP/1.1\r\n\r\n",
            b"POST /a<b HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
        ] {
            let got = request(&Bytes::copy_from_slice(hyper), 1024);
            assert!(got.is_none(), "{:?}", String::from_utf8_lossy(hyper));
        }
    }

    #[test]
    fn an_answer_is_encoded_into_one_allocation() {
        // The longest reason phrase, a close and no date of its own: the most fixed head bytes.
        for (status, headers, body) in [
            (StatusCode::NETWORK_AUTHENTICATION_REQUIRED, 0, 0),
            (StatusCode::OK, 6, 40),
            (StatusCode::OK, 20, COPY_BODY_MAX),
        ] {
            let mut resp = http::Response::new(Full::new(Bytes::from(vec![b'x'; body])));
            *resp.status_mut() = status;
            for i in 0..headers {
                resp.headers_mut().insert(
                    HeaderName::from_bytes(format!("x-header-{i}").as_bytes()).unwrap(),
                    HeaderValue::from_static("a value of some length"),
                );
            }
            let fields: usize = resp
                .headers()
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum();
            let reserved = HEAD_FIXED_MAX + fields + body;
            let mut out = Vec::new();
            let rest = encode(resp, true, &mut out);
            assert!(rest.is_empty());
            // Within what `encode` reserved up front: no second allocation.
            assert!(
                out.len() <= reserved,
                "{status}: {} > {reserved}",
                out.len()
            );
        }
    }
}
