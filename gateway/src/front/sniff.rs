//! Which protocol a new client connection speaks, told by peeking at its first bytes, so that
//! HTTP/1.1 (nearly every caller) goes straight to the lean HTTP/1.1 server ([`super::h1`]),
//! which hands the connection to hyper's HTTP/1 server when a request needs it.
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
use std::io;
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

use super::conns::Activity;
use super::h1::{self, Closing, Handoff, Rewind};
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
    /// The lean server's.
    limits: h1::Limits,
}

impl Servers {
    pub fn new(limits: h1::Limits) -> Arc<Self> {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true);
        Arc::new(Self {
            http1,
            auto: auto_builder(),
            limits,
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

type Http1<S> = http1::UpgradeableConnection<TokioIo<Rewind>, S>;
type Auto<S> = auto::UpgradeableConnection<'static, TokioIo<TcpStream>, S, TokioExecutor>;
type Fast = Pin<Box<dyn Future<Output = io::Result<Option<Handoff>>> + Send>>;

/// A client connection: peeking until its first bytes arrive, then served by the lean HTTP/1.1
/// server (`fast`, until a request needs hyper) or one of [`Servers`] (`service`). Each server's
/// connection is boxed, so the connection's task holds only a pointer to whichever it runs.
pub struct Sniffed<S: HttpService<Incoming>, F> {
    state: State<S, F>,
}

enum State<S: HttpService<Incoming>, F> {
    Peeking {
        stream: TcpStream,
        service: S,
        fast: F,
        activity: Arc<Activity>,
        servers: Arc<Servers>,
    },
    /// The lean server; `service` and `servers` wait for a hand-off.
    Fast {
        conn: Fast,
        closing: Arc<Closing>,
        service: S,
        servers: Arc<Servers>,
    },
    Http1(Pin<Box<Http1<S>>>),
    Auto(Pin<Box<Auto<S>>>),
    /// Closed before it was handed to a server.
    Done,
}

impl<S: HttpService<Incoming>, F> Sniffed<S, F> {
    /// `service` serves what hyper serves, `fast` the plain `POST`s of [`h1`], which marks
    /// them in flight on `activity` (hyper's `service` marks its own).
    pub fn new(
        stream: TcpStream,
        service: S,
        fast: F,
        activity: Arc<Activity>,
        servers: Arc<Servers>,
    ) -> Self {
        Self {
            state: State::Peeking {
                stream,
                service,
                fast,
                activity,
                servers,
            },
        }
    }
}

/// Whether a connection whose first bytes are `first` speaks HTTP/1 (`false`: it may be h2c).
fn surely_http1(first: &[u8]) -> bool {
    !H2_PREFACE.starts_with(first)
}

impl<S, F, Fut> Future for Sniffed<S, F>
where
    S: Service<Request<Incoming>, Response = Resp, Error = Infallible> + Send + Unpin + 'static,
    S::Future: Send + 'static,
    F: Fn(Request<h1::Lean>) -> Fut + Send + Unpin + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match &mut self.state {
                State::Http1(conn) => return conn.as_mut().poll(cx).map_err(Into::into),
                State::Auto(conn) => return conn.as_mut().poll(cx),
                State::Done => return Poll::Ready(Ok(())),
                State::Fast { conn, .. } => {
                    let handoff = match conn.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(Some(handoff))) => handoff,
                        Poll::Ready(done) => {
                            self.state = State::Done;
                            return Poll::Ready(done.map(drop).map_err(Into::into));
                        }
                    };
                    let State::Fast {
                        closing,
                        service,
                        servers,
                        ..
                    } = std::mem::replace(&mut self.state, State::Done)
                    else {
                        unreachable!("matched above")
                    };
                    let io = TokioIo::new(Rewind::new(handoff));
                    let mut conn =
                        Box::pin(servers.http1.serve_connection(io, service).with_upgrades());
                    if closing.asked() {
                        conn.as_mut().close_gracefully();
                    }
                    self.state = State::Http1(conn);
                }
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
                        fast,
                        activity,
                        servers,
                    } = std::mem::replace(&mut self.state, State::Done)
                    else {
                        unreachable!("matched above")
                    };
                    self.state = if n == 0 {
                        // Closed without a byte: nothing to serve.
                        State::Done
                    } else if surely_http1(&first[..n]) {
                        let closing = Arc::new(Closing::default());
                        let limits = servers.limits;
                        let conn = h1::serve(stream, fast, activity, closing.clone(), limits);
                        State::Fast {
                            conn: Box::pin(conn),
                            closing,
                            service,
                            servers,
                        }
                    } else {
                        let io = TokioIo::new(stream);
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

impl<S, F> Graceful for Sniffed<S, F>
where
    S: HttpService<Incoming> + Unpin,
    F: Unpin,
    Self: Future,
    Http1<S>: Graceful,
    Auto<S>: Graceful,
{
    fn close_gracefully(mut self: Pin<&mut Self>) {
        match &mut self.state {
            State::Http1(conn) => conn.as_mut().close_gracefully(),
            State::Auto(conn) => conn.as_mut().close_gracefully(),
            State::Fast { closing, .. } => {
                // Between requests it ends now; else after the answer it is writing.
                if closing.ask() {
                    self.state = State::Done;
                }
            }
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
    use tokio_util::sync::CancellationToken;

    const LIMITS: h1::Limits = h1::Limits {
        max_body: 1024,
        body_timeout: Duration::from_millis(300),
    };

    /// A connection served with [`Sniffed`]: hyper answers with the protocol version it was
    /// asked in, the lean server with `fast ` and the body it got (`late` for a late one).
    #[allow(clippy::type_complexity)] // spelled once, here
    fn sniffed(
        stream: TcpStream,
        servers: Arc<Servers>,
    ) -> Sniffed<
        impl Service<Request<Incoming>, Response = Resp, Error = Infallible, Future: Send>
            + Send
            + Unpin
            + Clone
            + 'static,
        impl Fn(Request<h1::Lean>) -> std::future::Ready<Resp> + Send + Unpin + 'static,
    > {
        let svc = service_fn(|req: Request<Incoming>| async move {
            let body = Bytes::from(format!("{:?}", req.version()));
            Ok::<_, Infallible>(Resp::new(Full::new(body)))
        });
        let fast = |req: Request<h1::Lean>| {
            let late = req.extensions().get::<h1::LateBody>().is_some();
            let body = h1::full_bytes(req.into_body().body);
            let text = match late {
                true => "late".into(),
                false => format!("fast {}", String::from_utf8_lossy(&body)),
            };
            std::future::ready(Resp::new(Full::new(Bytes::from(text))))
        };
        let activity = Arc::new(Activity::new(CancellationToken::new()));
        Sniffed::new(stream, svc, fast, activity, servers)
    }

    /// Serves every connection to a fresh listener with [`sniffed`].
    async fn server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let servers = Servers::new(LIMITS);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(sniffed(stream, servers.clone()));
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
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
            .await
            .unwrap_or_else(|_| panic!("not closed by the server: {got:?}"))
            .unwrap();
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
        // The peer hangs up without sending anything.
        drop(TcpStream::connect(addr).await.unwrap());
        let (stream, _) = listener.accept().await.unwrap();
        let conn = sniffed(stream, Servers::new(LIMITS));
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("ends at EOF")
            .unwrap();
        // A silent peer, and the gateway stopping: nothing to finish, so it ends at once.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = Box::pin(sniffed(stream, Servers::new(LIMITS)));
        assert!(futures_poll_once(conn.as_mut()).await.is_pending());
        conn.as_mut().close_gracefully();
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("ends once asked")
            .unwrap();
    }

    #[tokio::test]
    async fn plain_posts_are_answered_by_the_lean_server_in_order_whole_or_in_pieces() {
        let addr = server().await;
        // Two requests in one write: answered in order, the last one closing.
        let two = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\na\
            POST /b HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nbc";
        let got = http1(addr, &[two]).await;
        let (first, second) = got.split_once("fast a").expect(&got);
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(
            first.contains("content-length: 6\r\n") && first.contains("date: "),
            "{got}"
        );
        assert!(!first.contains("connection: close"), "{got}");
        assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(second.contains("connection: close\r\n"), "{got}");
        assert!(second.ends_with("\r\n\r\nfast bc"), "{got}");
        // A head and body in pieces, as clients that write them separately send them.
        let got = http1(
            addr,
            &[
                b"POST / HT",
                b"TP/1.1\r\ncontent-length: 5\r\nconnection: close\r",
                b"\n\r\nhel",
                b"lo",
            ],
        )
        .await;
        assert!(got.ends_with("\r\n\r\nfast hello"), "{got}");
    }

    #[tokio::test]
    async fn expect_100_continue_is_answered_before_the_body_is_sent() {
        let addr = server().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 5\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut interim = [0u8; 25];
        s.read_exact(&mut interim).await.unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"hello").await.unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).await.unwrap();
        assert!(
            got.starts_with("HTTP/1.1 200 OK") && got.ends_with("fast hello"),
            "{got}"
        );
    }

    #[tokio::test]
    async fn what_the_lean_server_does_not_serve_goes_to_hyper_with_the_bytes_read() {
        let addr = server().await;
        // A plain POST, then a GET on the same connection: hyper answers the GET.
        let got = http1(
            addr,
            &[b"POST / HTTP/1.1\r\ncontent-length: 1\r\n\r\naGET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"],
        )
        .await;
        let (first, second) = got.split_once("fast a").expect(&got);
        assert!(first.starts_with("HTTP/1.1 200"), "{got}");
        assert!(
            second.starts_with("HTTP/1.1 200") && second.ends_with("HTTP/1.1"),
            "{got}"
        );
        for req in [
            // Chunked.
            &b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n1\r\na\r\n0\r\n\r\n"[..],
            // Over max_body (1024): hyper's path refuses it unread.
            b"POST / HTTP/1.1\r\ncontent-length: 2000\r\nconnection: close\r\n\r\n",
            // HTTP/1.0, and a length given twice.
            b"POST / HTTP/1.0\r\ncontent-length: 1\r\n\r\na",
            b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\nconnection: close\r\n\r\na",
            // Another expectation, and an upgrade.
            b"POST / HTTP/1.1\r\nexpect: 200-ok\r\ncontent-length: 1\r\nconnection: close\r\n\r\na",
            b"POST / HTTP/1.1\r\nconnection: upgrade, close\r\nupgrade: x\r\ncontent-length: 0\r\n\r\n",
        ] {
            let got = http1(addr, &[req]).await;
            assert!(!got.contains("fast"), "{got}");
            assert!(got.starts_with("HTTP/1."), "{got}");
        }
        // Malformed, and a path httparse takes but `Uri` does not: hyper's 400.
        for bad in [
            &b"POST / HTTP/1.1\r\nbad header\r\n\r\n"[..],
            b"POST /a<b HTTP/1.1\r\ncontent-length: 1\r\n\r\na",
        ] {
            let got = http1(addr, &[bad]).await;
            assert!(got.starts_with("HTTP/1.1 400"), "{got}");
        }
    }

    #[tokio::test]
    async fn a_late_body_is_answered_as_late_and_the_connection_closed() {
        let addr = server().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc")
            .await
            .unwrap();
        // Past the 300 ms body deadline, without closing: the server closes.
        let mut got = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
            .await
            .expect("closed by the server")
            .unwrap();
        assert!(
            got.contains("connection: close\r\n") && got.ends_with("late"),
            "{got}"
        );
    }

    #[tokio::test]
    async fn asked_to_close_the_lean_server_ends_when_idle_or_after_the_answer_it_owes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = Box::pin(sniffed(stream, Servers::new(LIMITS)));
        // One request served, the connection kept alive, then idle.
        client
            .write_all(b"POST / HTTP/1.1\r\ncontent-length: 1\r\n\r\na")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        tokio::select! {
            r = conn.as_mut() => panic!("ended: {r:?}"),
            n = client.read(&mut buf) => assert!(n.unwrap() > 0),
        }
        assert!(futures_poll_once(conn.as_mut()).await.is_pending());
        conn.as_mut().close_gracefully();
        tokio::time::timeout(Duration::from_secs(5), conn.as_mut())
            .await
            .expect("ends at once when idle")
            .unwrap();
        // Asked while a request's body is still coming: the answer is sent, then it closes.
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = Box::pin(sniffed(stream, Servers::new(LIMITS)));
        client
            .write_all(b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\na")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(futures_poll_once(conn.as_mut()).await.is_pending());
        conn.as_mut().close_gracefully();
        client.write_all(b"b").await.unwrap();
        let mut got = String::new();
        let (ended, read) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(5), conn.as_mut()),
            client.read_to_string(&mut got)
        );
        ended.expect("ends after its answer").unwrap();
        read.unwrap();
        assert!(
            got.contains("connection: close\r\n") && got.ends_with("fast ab"),
            "{got}"
        );
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
