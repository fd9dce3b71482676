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
        let resp = pool.post(body.as_bytes(), true).await.unwrap();
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
            let resp = pool.post(body, true).await.unwrap();
            assert_eq!(&resp.body[..], body, "cut {cut}");
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "cut {cut}");
    }
}

#[tokio::test]
async fn skips_interim_answers() {
    let (url, _) =
        server(|_, _, body| reply(&format!("HTTP/1.1 100 Continue\r\n\r\n{}", echo(body)))).await;
    let resp = pool(&url).post(b"{}", true).await.unwrap();
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
    assert_eq!(&told.post(b"1", true).await.unwrap().body[..], b"ok");
    assert_eq!(told.idle_len(), 0);
    assert_eq!(&told.post(b"2", true).await.unwrap().body[..], b"ok");
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
        &pool.post(b"1", true).await.unwrap().body[..],
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
    assert_eq!(&pool.post(b"1", false).await.unwrap().body[..], b"1");
    assert_eq!(pool.idle_len(), 1);
    // Let the close reach this side's reactor.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(&pool.post(b"2", false).await.unwrap().body[..], b"2");
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
        assert_eq!(&pool.post(b"1", idempotent).await.unwrap().body[..], b"1");
        let second = pool.post(b"2", idempotent).await;
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
        let t = text.clone();
        let (url, _) = server(move |_, _, _| Reply {
            pieces: vec![t.clone().into_bytes()],
            close: true,
        })
        .await;
        let pool = Pool::new(&url, 8, Duration::from_secs(30), 100);
        let err = pool.post(b"{}", true).await.unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: {err}");
        assert_eq!(pool.idle_len(), 0, "{text:?}");
    }
}

#[tokio::test]
async fn drops_sockets_idle_past_the_timeout() {
    let (url, seen) = server(|_, _, body| reply(&echo(body))).await;
    let pool = Pool::new(&url, 8, Duration::from_millis(50), 1 << 20);
    pool.post(b"1", true).await.unwrap();
    pool.post(b"2", true).await.unwrap();
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(60)).await;
    pool.post(b"3", true).await.unwrap();
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
            tokio::spawn(async move { pool.post(format!("{i}").as_bytes(), true).await })
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
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url: http::Uri = format!("http://{}/", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(listener);
    assert!(matches!(
        pool(&url).post(b"{}", true).await,
        Err(H1Error::Io(_))
    ));
}
