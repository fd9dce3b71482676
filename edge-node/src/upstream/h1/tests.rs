use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;

use super::*;

/// What the test server does with one request: write `pieces` one by one (so the client sees
/// them in separate reads), then close the socket or wait for the next request.
struct Reply {
    pieces: Vec<Vec<u8>>,
    close: bool,
}

fn reply(text: &str) -> Reply {
    Reply {
        pieces: vec![text.as_bytes().to_vec()],
        close: false,
    }
}

struct Seen {
    connections: AtomicUsize,
    heads: parking_lot::Mutex<Vec<String>>,
}

/// A scripted HTTP/1.1 server on 127.0.0.1:0. `script(connection, request on it, body)`.
async fn server(
    script: impl Fn(usize, usize, &[u8]) -> Reply + Send + Sync + 'static,
) -> (http::Uri, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen {
        connections: AtomicUsize::new(0),
        heads: parking_lot::Mutex::new(Vec::new()),
    });
    let script = Arc::new(script);
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut io, _) = listener.accept().await.unwrap();
            io.set_nodelay(true).unwrap();
            let conn_no = s.connections.fetch_add(1, Ordering::SeqCst);
            let (script, s) = (script.clone(), s.clone());
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                for req_no in 0.. {
                    let (head_len, body_len) = loop {
                        let mut headers = [httparse::EMPTY_HEADER; 16];
                        let mut req = httparse::Request::new(&mut headers);
                        if let httparse::Status::Complete(n) = req.parse(&buf).unwrap() {
                            let len = req
                                .headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                                .unwrap_or(0usize);
                            s.heads
                                .lock()
                                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                            break (n, len);
                        }
                        if io.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                            return;
                        }
                    };
                    while buf.len() < head_len + body_len {
                        if io.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                            return;
                        }
                    }
                    let body = buf.split_to(head_len + body_len).split_off(head_len);
                    let r = script(conn_no, req_no, &body);
                    for p in r.pieces {
                        if io.write_all(&p).await.is_err() {
                            return;
                        }
                        tokio::task::yield_now().await;
                    }
                    if r.close {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/rpc?k=1").parse().unwrap(), seen)
}

/// A blocking listener on 127.0.0.1:0 and its URL.
fn std_listener() -> (std::net::TcpListener, http::Uri) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    (listener, url)
}

fn pool(url: &http::Uri) -> Pool {
    Pool::new(url, 8, Duration::from_secs(30), 1 << 20)
}

fn echo(body: &[u8]) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        String::from_utf8_lossy(body)
    )
}

#[tokio::test]
async fn keeps_one_socket_for_keep_alive_answers() {
    let (url, seen) = server(|_, _, body| reply(&echo(body))).await;
    let pool = pool(&url);
    for i in 0..3 {
        let body = format!("{{\"n\":{i}}}");
        let resp = pool.post(body.as_bytes(), || true).await.unwrap();
        assert_eq!((resp.status, &resp.body[..]), (200, body.as_bytes()));
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_len(), 1);
    let head = seen.heads.lock()[0].clone();
    let port = url.port_u16().unwrap();
    assert!(head.starts_with("POST /rpc?k=1 HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("host: 127.0.0.1:{port}\r\n")),
        "{head}"
    );
    assert!(
        head.contains("content-type: application/json\r\n"),
        "{head}"
    );
    assert!(head.contains("content-length: 7\r\n"), "{head}");
}

/// A chunked answer with an extension and a trailer, cut into pieces of every size from one
/// byte up: the body comes out whole and the socket is kept.
#[tokio::test]
async fn reads_chunked_answers_cut_anywhere() {
    for cut in [1, 2, 3, 5, 8, 13, 64] {
        let (url, seen) = server(move |_, _, body| {
            let (a, b) = body.split_at(body.len() / 2);
            let mut text = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            text.extend_from_slice(format!("{:x};ext=1\r\n", a.len()).as_bytes());
            text.extend_from_slice(a);
            text.extend_from_slice(format!("\r\n{:X}\r\n", b.len()).as_bytes());
            text.extend_from_slice(b);
            text.extend_from_slice(b"\r\n0\r\nx-trailer: 1\r\n\r\n");
            Reply {
                pieces: text.chunks(cut).map(<[u8]>::to_vec).collect(),
                close: false,
            }
        })
        .await;
        let pool = pool(&url);
        for body in [&b"{\"jsonrpc\":\"2.0\",\"result\":\"0x1\"}"[..], b"[1,2]"] {
            let resp = pool.post(body, || true).await.unwrap();
            assert_eq!(&resp.body[..], body, "cut {cut}");
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "cut {cut}");
    }
}

#[tokio::test]
async fn skips_interim_answers() {
    let (url, _) =
        server(|_, _, body| reply(&format!("HTTP/1.1 100 Continue\r\n\r\n{}", echo(body)))).await;
    let resp = pool(&url).post(b"{}", || true).await.unwrap();
    assert_eq!((resp.status, &resp.body[..]), (200, &b"{}"[..]));
}

#[tokio::test]
async fn does_not_keep_a_socket_the_answer_closes() {
    // `connection: close`, and an answer delimited by the close itself.
    let (url, seen) = server(|_, req, body| match req {
        0 => Reply {
            pieces: vec![
                b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            ],
            close: true,
        },
        _ => unreachable!("{body:?}"),
    })
    .await;
    let told = pool(&url);
    assert_eq!(&told.post(b"1", || true).await.unwrap().body[..], b"ok");
    assert_eq!(told.idle_len(), 0);
    assert_eq!(&told.post(b"2", || true).await.unwrap().body[..], b"ok");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);

    let (url, _) = server(|_, _, _| Reply {
        pieces: vec![
            b"HTTP/1.1 200 OK\r\n\r\nuntil".to_vec(),
            b" the end".to_vec(),
        ],
        close: true,
    })
    .await;
    let pool = pool(&url);
    assert_eq!(
        &pool.post(b"1", || true).await.unwrap().body[..],
        b"until the end"
    );
    assert_eq!(pool.idle_len(), 0);
}

/// The server's keep-alive timeout: it closes a socket after answering on it. The next request
/// goes out on a new socket, a transaction included.
#[tokio::test]
async fn does_not_send_on_a_socket_the_server_closed() {
    let (url, seen) = server(|_, _, body| Reply {
        pieces: vec![echo(body).into_bytes()],
        close: true,
    })
    .await;
    let pool = pool(&url);
    assert_eq!(&pool.post(b"1", || false).await.unwrap().body[..], b"1");
    assert_eq!(pool.idle_len(), 1);
    // Let the close reach this side's reactor.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(&pool.post(b"2", || false).await.unwrap().body[..], b"2");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}

/// A reused socket that dies after the request went out but before any answer: sent again on a
/// new socket only when the caller allows it.
#[tokio::test]
async fn resends_only_what_may_be_sent_twice() {
    for idempotent in [true, false] {
        let (url, seen) = server(|conn, req, body| match (conn, req) {
            (0, 1) => Reply {
                pieces: vec![],
                close: true,
            },
            _ => reply(&echo(body)),
        })
        .await;
        let pool = pool(&url);
        assert_eq!(
            &pool.post(b"1", || idempotent).await.unwrap().body[..],
            b"1"
        );
        let second = pool.post(b"2", || idempotent).await;
        if idempotent {
            assert_eq!(&second.unwrap().body[..], b"2");
            assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
        } else {
            assert!(matches!(second, Err(H1Error::Closed)), "{second:?}");
            assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
        }
    }
}

#[tokio::test]
async fn refuses_oversize_and_malformed_answers() {
    let big = "x".repeat(101);
    let cases: Vec<(String, &str)> = vec![
        (format!("HTTP/1.1 200 OK\r\ncontent-length: 101\r\n\r\n{big}"), "larger"),
        (
            format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n50\r\n{}\r\n15\r\n{}\r\n0\r\n\r\n", &big[..80], &big[..21]),
            "larger",
        ),
        (format!("HTTP/1.1 200 OK\r\n\r\n{big}"), "larger"),
        ("HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n".into(), "content-length"),
        ("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n".into(), "content-length"),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".into(),
            "conflicting",
        ),
        ("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n".into(), "transfer-encoding"),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n".into(),
            "transfer-encoding",
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            "transfer-encoding",
        ),
        // httparse reads an empty size line as the last chunk.
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n\r\n\r\n".into(),
            "chunk size",
        ),
        (
            format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n{}\r\n",
                "x-t: 0123456789012345678901234567890123456789\r\n".repeat(2000)
            ),
            "trailer too long",
        ),
        ("HTTP/1.1 101 Switching Protocols\r\n\r\n".into(), "protocol switch"),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".into(),
            "chunk size",
        ),
        (
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabcd".into(),
            "CRLF",
        ),
        ("hello\r\n\r\n".into(), "unparseable"),
        (
            format!("HTTP/1.1 200 OK\r\nx: {}\r\n\r\n", "a".repeat(70_000)),
            "head too large",
        ),
        ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".into(), "closed"),
    ];
    for (text, want) in cases {
        // A good answer first, so the bad one comes on a pooled socket that must not go back.
        let t = text.clone();
        let (url, seen) = server(move |_, req, body| match req {
            0 => reply(&echo(body)),
            _ => Reply {
                pieces: vec![t.clone().into_bytes()],
                close: true,
            },
        })
        .await;
        let pool = Pool::new(&url, 8, Duration::from_secs(30), 100);
        pool.post(b"{}", || true).await.unwrap();
        assert_eq!(pool.idle_len(), 1);
        let err = match pool.post(b"{}", || true).await {
            Ok(r) => panic!("{:?}: answered {r:?}", &text[..text.len().min(120)]),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{text:?}: {err}");
        assert_eq!(pool.idle_len(), 0, "{text:?}");
        // Some bytes of the answer had come: not sent again.
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "{text:?}");
    }
}

#[tokio::test]
async fn drops_sockets_idle_past_the_timeout() {
    let (url, seen) = server(|_, _, body| reply(&echo(body))).await;
    let pool = Pool::new(&url, 8, Duration::from_millis(50), 1 << 20);
    pool.post(b"1", || true).await.unwrap();
    pool.post(b"2", || true).await.unwrap();
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(60)).await;
    pool.post(b"3", || true).await.unwrap();
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    assert_eq!(pool.idle_len(), 1);
}

#[tokio::test]
async fn keeps_at_most_max_idle_sockets() {
    let (url, seen) = server(|_, _, body| reply(&echo(body))).await;
    let pool = Arc::new(Pool::new(&url, 2, Duration::from_secs(30), 1 << 20));
    // Four at once need four sockets; two are kept.
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.post(format!("{i}").as_bytes(), || true).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 4);
    assert_eq!(pool.idle_len(), 2);
}

#[tokio::test]
async fn a_refused_connection_is_an_error() {
    let (listener, url) = std_listener();
    drop(listener);
    assert!(matches!(
        pool(&url).post(b"{}", || true).await,
        Err(H1Error::Io(_))
    ));
}

/// A reused socket that sends an interim answer and then closes has answered something: the
/// request is not sent again.
#[tokio::test]
async fn an_interim_answer_counts_as_answered() {
    let (url, seen) = server(|_, req, body| match req {
        0 => reply(&echo(body)),
        _ => Reply {
            pieces: vec![b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()],
            close: true,
        },
    })
    .await;
    let pool = pool(&url);
    pool.post(b"1", || true).await.unwrap();
    let second = pool.post(b"2", || true).await;
    assert!(matches!(second, Err(H1Error::Closed)), "{second:?}");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_url_without_a_path_asks_for_the_root() {
    let (url, seen) = server(|_, _, body| reply(&echo(body))).await;
    let bare: http::Uri = format!("http://{}?k=1", url.authority().unwrap())
        .parse()
        .unwrap();
    pool(&bare).post(b"{}", || true).await.unwrap();
    let head = seen.heads.lock()[0].clone();
    assert!(head.starts_with("POST /?k=1 HTTP/1.1\r\n"), "{head}");
}

/// The server closed the pooled socket and the close reached this host's kernel, but this
/// runtime's reactor has not turned since (the thread slept): the check asks the kernel, so
/// even a request that may not be sent twice goes out on a new socket.
#[tokio::test]
async fn sees_a_close_the_reactor_has_not_seen() {
    let (listener, url) = std_listener();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    // Blocking, on its own thread: it runs while the test's runtime does not.
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            // Head and a body of `{}`: the request ends with it.
            while !buf.ends_with(b"{}") {
                let n = conn.read(&mut chunk).unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .unwrap();
            // Closed a little after the answer, once the client has read it.
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let pool = pool(&url);
    assert_eq!(&pool.post(b"{}", || false).await.unwrap().body[..], b"ok");
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(&pool.post(b"{}", || false).await.unwrap().body[..], b"ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// One large answer does not leave its buffer with the pooled socket.
#[tokio::test]
async fn a_pooled_socket_keeps_a_small_buffer() {
    let big = "x".repeat(200 * 1024);
    let (url, _) = server(move |_, _, _| {
        reply(&format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{big}",
            big.len()
        ))
    })
    .await;
    let pool = pool(&url);
    assert_eq!(
        pool.post(b"{}", || true).await.unwrap().body.len(),
        200 * 1024
    );
    let kept = pool.idle.lock()[0].conn.buf.capacity();
    assert!(kept <= MAX_KEPT_BUFFER, "{kept}");
}

#[tokio::test]
async fn prune_closes_sockets_idle_past_the_timeout() {
    let (url, _) = server(|_, _, body| reply(&echo(body))).await;
    let pool = Pool::new(&url, 8, Duration::from_millis(30), 1 << 20);
    pool.post(b"1", || true).await.unwrap();
    pool.prune();
    assert_eq!(pool.idle_len(), 1, "not yet expired");
    tokio::time::sleep(Duration::from_millis(40)).await;
    pool.prune();
    assert_eq!(pool.idle_len(), 0);
}
