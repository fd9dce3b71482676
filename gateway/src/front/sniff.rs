//! Which protocol a new client connection speaks, told by peeking at its first bytes, so that
//! HTTP/1.1 (nearly every caller) goes straight to hyper's HTTP/1 server.
//!
//! hyper-util's `auto` server reads a connection's first bytes itself to tell HTTP/1.1 from
//! the h2c preface, then hands them back through a rewinding reader. hyper's HTTP/1 read buffer
//! then takes the first request in two reads and doubles from 8 to 16 KiB, and every idle
//! keep-alive connection keeps that buffer: a third of what one cost in all
//! (`loadtests/idle.py`). A peek consumes nothing: first bytes that cannot start the h2c
//! preface go to the HTTP/1 server; the preface, or a part of it too short to tell, goes to
//! `auto`, which reads the bytes again and serves h2c (or HTTP/1.1 after all).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::{HttpService, Service};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::ReadBuf;
use tokio::net::TcpStream;

use super::respond::Resp;

type BoxError = Box<dyn StdError + Send + Sync>;

/// What an h2c client with prior knowledge sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection [`super::conns::Conn::drive`] runs and can ask to finish its current requests
/// and close.
pub trait Graceful: Future {
    fn close_gracefully(self: Pin<&mut Self>);
}

impl<I, S, E> Graceful for auto::UpgradeableConnection<'_, I, S, E>
where
    S: HttpService<Incoming>,
    Self: GracefulConnection,
{
    fn close_gracefully(self: Pin<&mut Self>) {
        GracefulConnection::graceful_shutdown(self);
    }
}

impl<I, S> Graceful for http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming>,
    S::Error: Into<BoxError>,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn close_gracefully(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// hyper's servers as the gateway runs them: HTTP/1.1 with upgrades (WebSocket), and `auto`
/// for h2c. The header and idle deadlines are `Conn::drive`'s, the same for both protocols.
/// Hyper's own h1 header timer (on by default) is off: it starts when a connection waits for
/// its next request, so it would close idle keep-alive connections at `header_timeout`. No h2
/// keep-alive pings either: a dead peer's connection is idle, and closed as such.
pub struct Servers {
    http1: http1::Builder,
    auto: auto::Builder<TokioExecutor>,
}

impl Servers {
    pub fn new() -> Arc<Self> {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true);
        Arc::new(Self {
            http1,
            auto: auto_builder(),
        })
    }
}

/// The `auto` server (HTTP/1.1 and h2c told apart by reading), configured as [`Servers`] says.
pub fn auto_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    builder
}

type Http1<S> = http1::UpgradeableConnection<TokioIo<TcpStream>, S>;
type Auto<S> = auto::UpgradeableConnection<'static, TokioIo<TcpStream>, S, TokioExecutor>;

/// A client connection: peeking until its first bytes arrive, then served by one of
/// [`Servers`]. Both servers' connections are boxed, so the connection's task holds only a
/// pointer to whichever it runs.
pub struct Sniffed<S: HttpService<Incoming>> {
    state: State<S>,
}

enum State<S: HttpService<Incoming>> {
    Peeking {
        stream: TcpStream,
        service: S,
        servers: Arc<Servers>,
    },
    Http1(Pin<Box<Http1<S>>>),
    Auto(Pin<Box<Auto<S>>>),
    /// Closed before it was handed to a server.
    Done,
}

impl<S: HttpService<Incoming>> Sniffed<S> {
    pub fn new(stream: TcpStream, service: S, servers: Arc<Servers>) -> Self {
        Self {
            state: State::Peeking {
                stream,
                service,
                servers,
            },
        }
    }
}

/// Whether a connection whose first bytes are `first` speaks HTTP/1 (`false`: it may be h2c).
fn surely_http1(first: &[u8]) -> bool {
    !H2_PREFACE.starts_with(first)
}

impl<S> Future for Sniffed<S>
where
    S: Service<Request<Incoming>, Response = Resp, Error = Infallible> + Send + Unpin + 'static,
    S::Future: Send + 'static,
{
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match &mut self.state {
                State::Http1(conn) => return conn.as_mut().poll(cx).map_err(Into::into),
                State::Auto(conn) => return conn.as_mut().poll(cx),
                State::Done => return Poll::Ready(Ok(())),
                State::Peeking { stream, .. } => {
                    let mut first = [0u8; H2_PREFACE.len()];
                    let mut buf = ReadBuf::new(&mut first);
                    let n = match stream.poll_peek(cx, &mut buf) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => {
                            self.state = State::Done;
                            return Poll::Ready(Err(e.into()));
                        }
                        Poll::Ready(Ok(n)) => n,
                    };
                    let State::Peeking {
                        stream,
                        service,
                        servers,
                    } = std::mem::replace(&mut self.state, State::Done)
                    else {
                        unreachable!("matched above")
                    };
                    let io = TokioIo::new(stream);
                    self.state = if n == 0 {
                        // Closed without a byte: nothing to serve.
                        State::Done
                    } else if surely_http1(&first[..n]) {
                        let conn = servers.http1.serve_connection(io, service).with_upgrades();
                        State::Http1(Box::pin(conn))
                    } else {
                        let conn = servers
                            .auto
                            .serve_connection_with_upgrades(io, service)
                            .into_owned();
                        State::Auto(Box::pin(conn))
                    };
                }
            }
        }
    }
}

impl<S> Graceful for Sniffed<S>
where
    S: HttpService<Incoming> + Unpin,
    Self: Future,
    Http1<S>: Graceful,
    Auto<S>: Graceful,
{
    fn close_gracefully(mut self: Pin<&mut Self>) {
        match &mut self.state {
            State::Http1(conn) => conn.as_mut().close_gracefully(),
            State::Auto(conn) => conn.as_mut().close_gracefully(),
            // No request has begun: nothing to finish.
            State::Peeking { .. } | State::Done => self.state = State::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Serves every connection to a fresh listener with [`Sniffed`]; each answer names the
    /// protocol version it was asked in.
    async fn server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let servers = Servers::new();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let body = Bytes::from(format!("{:?}", req.version()));
                    Ok::<_, Infallible>(Resp::new(Full::new(body)))
                });
                tokio::spawn(Sniffed::new(stream, svc, servers.clone()));
            }
        });
        addr
    }

    /// Sends `parts` with a pause between them and reads the answer to the end.
    async fn http1(addr: std::net::SocketAddr, parts: &[&[u8]]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        for part in parts {
            s.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut got = String::new();
        s.read_to_string(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn http1_h2c_and_a_first_byte_that_could_be_either_are_all_served() {
        let addr = server().await;
        let req = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
        let direct = http1(addr, &[req]).await;
        assert!(
            direct.starts_with("HTTP/1.1 200") && direct.ends_with("HTTP/1.1"),
            "{direct}"
        );
        // "P" may begin the h2c preface: `auto` reads it again and finds HTTP/1.1.
        let post = b"OST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let split = http1(addr, &[b"P", post]).await;
        assert!(
            split.starts_with("HTTP/1.1 200") && split.ends_with("HTTP/1.1"),
            "{split}"
        );
        // An h2c client with prior knowledge.
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("http://{addr}/"))
            .body(Empty::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "HTTP/2.0");
    }

    #[tokio::test]
    async fn a_connection_closed_before_a_byte_or_asked_to_close_while_silent_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Resp::new(Full::new(Bytes::new())))
        });
        // The peer hangs up without sending anything.
        drop(TcpStream::connect(addr).await.unwrap());
        let (stream, _) = listener.accept().await.unwrap();
        let conn = Sniffed::new(stream, svc, Servers::new());
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("ends at EOF")
            .unwrap();
        // A silent peer, and the gateway stopping: nothing to finish, so it ends at once.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = Box::pin(Sniffed::new(stream, svc, Servers::new()));
        assert!(futures_poll_once(conn.as_mut()).await.is_pending());
        conn.as_mut().close_gracefully();
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("ends once asked")
            .unwrap();
    }

    /// Polls `fut` once.
    async fn futures_poll_once<F: Future + Unpin>(mut fut: F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut fut).poll(cx))).await
    }

    #[test]
    fn only_what_can_start_the_h2c_preface_goes_to_auto() {
        for http1 in [
            &b"POST / HTTP/1.1\r\n"[..],
            b"GET",
            b"PO",
            b"\r\n",
            b"PRI * HTTP/1.1",
        ] {
            assert!(surely_http1(http1), "{:?}", String::from_utf8_lossy(http1));
        }
        for maybe_h2 in [&b"P"[..], b"PRI", b"PRI * HTTP/2.0\r\n", &H2_PREFACE[..]] {
            assert!(
                !surely_http1(maybe_h2),
                "{:?}",
                String::from_utf8_lossy(maybe_h2)
            );
        }
    }
}
