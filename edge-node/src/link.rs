//! The node's side of a gateway link: dial out (so nodes behind NAT can join), prove identity
//! with mutual TLS and the join token, report status on the control stream, and answer the
//! requests on the request stream the gateway opens (`proto::msg`): one from the cache at once
//! in the stream's reader, any other in a task of its own; the answers written as they are
//! ready. Reconnects with capped, jittered backoff. A node runs one link per configured
//! gateway, each on its own: one going away disturbs no other.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proto::frame::{self, FrameError, FrameReader, FrameType};
use proto::msg::{self, Hello, Reject, RpcRequest, Status, Welcome};
use tokio::net::lookup_host;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::service::Service;
use crate::Shared;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("resolving gateway address {addr}: {source}")]
    Resolve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("resolving gateway address {0}: no addresses")]
    NoAddress(String),
    #[error("connecting to gateway: {0}")]
    Connect(#[source] quinn::ConnectError),
    #[error("connecting to gateway: {0}")]
    Handshake(#[source] quinn::ConnectionError),
    #[error("gateway refused the join: {0}")]
    Rejected(String),
    #[error("gateway did not answer the join in time")]
    HelloTimeout,
    #[error("gateway did not complete the handshake within {0:?}")]
    DialTimeout(Duration),
    #[error("protocol: {0}")]
    Frame(#[from] FrameError),
    #[error("connection lost: {0}")]
    Lost(#[from] quinn::ConnectionError),
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Low, so a gateway that comes back is rejoined within about two seconds (with the dial
/// bound below); a dial to a gateway that is down costs a few packets.
const BACKOFF_MAX: Duration = Duration::from_millis(800);
/// A dial (QUIC handshake) that has not completed by then is abandoned and tried again, rather
/// than waiting out the transport's idle timeout.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// One configured gateway: its index in `config.gateways` and the TLS config pinning its key.
pub struct Link {
    pub index: usize,
    pub client: quinn::ClientConfig,
}

/// Keeps the node joined to one gateway until `stop` fires.
pub async fn run(
    shared: Arc<Shared>,
    link: Link,
    endpoint: quinn::Endpoint,
    stop: CancellationToken,
) {
    let label = shared.config.gateways[link.index].label().to_string();
    let connected = shared
        .metrics
        .gateway_connected
        .with_label_values(&[&label]);
    connected.set(0);
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = tokio::time::Instant::now();
        let res = tokio::select! {
            _ = stop.cancelled() => break,
            r = session(&shared, &link, &endpoint, &stop) => r,
        };
        connected.set(0);
        shared.joined.lock().remove(&link.index);
        match res {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(gateway = %label, error = %e, "gateway link down; reconnecting");
                shared
                    .metrics
                    .gateway_connects
                    .with_label_values(&[match e {
                        LinkError::Rejected(_) => "rejected",
                        _ => "error",
                    }])
                    .inc();
            }
        }
        // A session that lasted a while was healthy: start the backoff over.
        if started.elapsed() > BACKOFF_MAX * 2 {
            backoff = BACKOFF_MIN;
        }
        let jitter =
            Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(backoff + jitter) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    shared.joined.lock().remove(&link.index);
}

async fn resolve(addr: &str) -> Result<SocketAddr, LinkError> {
    lookup_host(addr)
        .await
        .map_err(|source| LinkError::Resolve {
            addr: addr.into(),
            source,
        })?
        .next()
        .ok_or_else(|| LinkError::NoAddress(addr.into()))
}

/// One joined session; returns `Ok` only on shutdown.
async fn session(
    shared: &Arc<Shared>,
    link: &Link,
    endpoint: &quinn::Endpoint,
    stop: &CancellationToken,
) -> Result<(), LinkError> {
    // The control stream's receive half lives as long as the session: dropping it would tell
    // the gateway to stop sending.
    let Joined {
        conn,
        ctl_send,
        ctl_recv: _ctl_recv,
        welcome,
    } = join(shared, link, endpoint).await?;
    let max_frame = shared.config.gateways[link.index].max_frame_bytes;
    let interval = Duration::from_millis(welcome.status_interval_ms.clamp(100, 1000));
    let status_task = report(shared.clone(), ctl_send, interval);
    let accept_task = async {
        loop {
            let (send, recv) = conn.accept_bi().await?;
            let (shared, conn) = (shared.clone(), conn.clone());
            tokio::spawn(async move {
                if let Err(e) = serve_stream(&shared, &conn, send, recv, max_frame).await {
                    tracing::debug!(error = %e, "stream failed");
                }
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), LinkError>(())
    };
    let res = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        r = status_task => r,
        r = accept_task => r,
    };
    conn.close(0u32.into(), b"bye");
    res
}

/// A joined session: the connection, its control stream and the gateway's welcome.
struct Joined {
    conn: quinn::Connection,
    ctl_send: quinn::SendStream,
    ctl_recv: quinn::RecvStream,
    welcome: Welcome,
}

/// Connects and joins: `Hello` out, `Welcome` (or `Reject`) back on the control stream.
async fn join(
    shared: &Shared,
    link: &Link,
    endpoint: &quinn::Endpoint,
) -> Result<Joined, LinkError> {
    let cfg = &shared.config;
    let gw = &cfg.gateways[link.index];
    let addr = resolve(&gw.address).await?;
    let connecting = endpoint
        .connect_with(link.client.clone(), addr, proto::tls::SERVER_NAME)
        .map_err(LinkError::Connect)?;
    let conn = tokio::time::timeout(DIAL_TIMEOUT, connecting)
        .await
        .map_err(|_| LinkError::DialTimeout(DIAL_TIMEOUT))?
        .map_err(LinkError::Handshake)?;
    let (mut ctl_send, mut ctl_recv) = conn.open_bi().await?;
    let hello = Hello {
        protocol: proto::PROTOCOL_VERSION,
        token: gw.token.clone(),
        node_id: shared.node_id.clone(),
        region: cfg.region.clone(),
        latitude: cfg.latitude,
        longitude: cfg.longitude,
        chains: cfg.chains.iter().map(|c| c.chain_id).collect(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    ctl_send
        .write_all(&msg::encode_json(FrameType::Hello, &hello))
        .await?;
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        frame::read_frame(&mut ctl_recv, 64 * 1024),
    )
    .await
    .map_err(|_| LinkError::HelloTimeout)??
    .ok_or_else(|| LinkError::Rejected("control stream closed".into()))?;
    let welcome: Welcome = match reply.ty {
        FrameType::Welcome => msg::decode_json("Welcome", &reply.payload)?,
        FrameType::Reject => {
            let r: Reject = msg::decode_json("Reject", &reply.payload)?;
            return Err(LinkError::Rejected(r.reason));
        }
        other => {
            return Err(FrameError::Unexpected {
                expected: FrameType::Welcome,
                got: other,
            }
            .into())
        }
    };
    tracing::info!(gateway = %gw.label(), id = %welcome.gateway_id, name = %welcome.gateway_name, %addr, "joined gateway");
    let name = match welcome.gateway_name.as_str() {
        "" => gw.label().to_string(),
        n => n.to_string(),
    };
    shared.joined.lock().insert(link.index, name);
    shared
        .metrics
        .gateway_connected
        .with_label_values(&[gw.label()])
        .set(1);
    shared
        .metrics
        .gateway_connects
        .with_label_values(&["joined"])
        .inc();

    Ok(Joined {
        conn,
        ctl_send,
        ctl_recv,
        welcome,
    })
}

/// Writes state versions (`Head`, on change) and statuses (every `interval`) on the control
/// stream until it fails.
async fn report(
    shared: Arc<Shared>,
    mut ctl_send: quinn::SendStream,
    interval: Duration,
) -> Result<(), LinkError> {
    let mut tick = tokio::time::interval(interval);
    // Every chain's state version, announced at once on change (and first right away, as
    // the receivers start out unseen): the gateway repeats answers tied to a state only
    // while it is the last one announced.
    let mut states: Vec<_> = shared
        .service
        .chains
        .values()
        .map(|c| {
            let mut rx = c.watch_state();
            rx.mark_changed();
            (c.clone(), rx, 0u64)
        })
        .collect();
    loop {
        let announce = {
            let changed = async {
                if states.is_empty() {
                    std::future::pending::<()>().await;
                }
                // Never Err: `states` holds each chain, so its sender lives.
                let _ = futures::future::select_all(
                    states.iter_mut().map(|(_, rx, _)| Box::pin(rx.changed())),
                )
                .await;
            };
            tokio::select! {
                // A new state is announced before any status that shows its head.
                biased;
                _ = changed => true,
                _ = tick.tick() => false,
            }
        };
        if announce {
            for (chain, rx, sent) in &mut states {
                // `changed()` already marked the value seen: compare with what was sent
                // (0 at first, which is also "no state yet").
                let state_version = *rx.borrow_and_update();
                if state_version == *sent {
                    continue;
                }
                *sent = state_version;
                let head = msg::Head {
                    chain_id: chain.chain_id,
                    state_version,
                    head_number: chain.head().map_or(0, |h| h.number),
                };
                ctl_send
                    .write_all(&msg::encode_json(FrameType::Head, &head))
                    .await?;
            }
            continue;
        }
        let status = shared.status();
        // Finality comes from the chain trackers through the status; mirror it for Prometheus.
        for c in &status.chains {
            if let Some(f) = c.finalized_number {
                shared
                    .metrics
                    .finalized_block
                    .with_label_values(&[&c.chain_id.to_string()])
                    .set(f as i64);
            }
        }
        ctl_send
            .write_all(&msg::encode_json(FrameType::Status, &status))
            .await?;
    }
}

/// One stream the gateway opened: its request stream, or a subscription.
async fn serve_stream(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    max: usize,
) -> Result<(), LinkError> {
    let mut frames = FrameReader::new(max);
    let Some(first) = frames.next(&mut recv).await? else {
        return Ok(());
    };
    if first.ty == FrameType::Subscribe {
        let sub = msg::decode_json::<proto::sub::Subscribe>("Subscribe", &first.payload)?;
        Box::pin(crate::subs::serve(shared, send, sub)).await;
        return Ok(());
    }
    let (out, queued) = mpsc::channel(ANSWER_QUEUE);
    // The writer is a task of its own: an answer queued wakes only it, and a request arriving
    // only the reader.
    let write = tokio::spawn(write_answers(send, queued));
    let read = async move {
        let mut next = Some(first);
        loop {
            let frame = match next.take() {
                Some(f) => f,
                None => match frames.next(&mut recv).await {
                    Ok(Some(f)) => f,
                    Ok(None) => return Ok(()),
                    Err(FrameError::TooLarge { .. }) => {
                        // Over this node's limit: refused as when busy (another node may take
                        // it); the stream goes on.
                        let (ty, tag) = frames.skip_large(&mut recv, msg::TAG_BYTES).await?;
                        let tagged = ty == FrameType::TaggedRequest as u8;
                        if let (true, Ok((tag, _))) = (tagged, msg::split_tag(tag, "TaggedRequest"))
                        {
                            let _ = out.send(Out::Busy(tag)).await;
                        }
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                },
            };
            let payload = frame.expect(FrameType::TaggedRequest)?;
            let (tag, body) = msg::split_tag(payload, "TaggedRequest")?;
            shared.metrics.requests.inc();
            let Ok(permit) = shared.in_flight.clone().try_acquire_owned() else {
                // Overloaded: refused at once, so the gateway asks another node.
                let _ = out.send(Out::Busy(tag)).await;
                continue;
            };
            let req = RpcRequest::decode(body)?;
            let single = req.calls.len() == 1;
            let (shared, conn, out) = (shared.clone(), conn.clone(), out.clone());
            let mut job = Box::pin(async move {
                let frame = answer(&shared, req, max).await;
                // The slot is held until the answer is written (or its stream is), so finished
                // answers cannot pile up behind a slow gateway.
                if frame.len() > msg::INLINE_MAX {
                    if let Err(e) = send_large(&conn, tag, &frame).await {
                        tracing::debug!(error = %e, "large answer not sent");
                    }
                } else {
                    let _ = out.send(Out::Answer(tag, frame, permit)).await;
                }
            });
            // A single call is polled once here first: an answer from the cache is ready at once
            // and needs no task of its own (a spawn, its scheduling and its drop: ~1.5k
            // instructions per hit). A job that must wait (an upstream call, a full queue) is
            // spawned, and its first poll there registers the task's waker in place of the
            // no-op one. A batch is always a task: its work would hold up the reader.
            if single {
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                // As in a task of its own, a panic ends this request only, not the stream.
                let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    job.as_mut().poll(&mut cx)
                }));
                match polled {
                    Ok(std::task::Poll::Ready(())) => {}
                    Ok(std::task::Poll::Pending) => {
                        tokio::spawn(job);
                    }
                    Err(_) => tracing::error!(tag, "answering a request panicked"),
                }
            } else {
                tokio::spawn(job);
            }
        }
    };
    let read = read.await;
    // The writer ends once the reader and every answer in the making have let go of `out`.
    let write = write.await.unwrap_or(Ok(()));
    read.and(write)
}

/// What the request stream's writer sends.
enum Out {
    /// A whole `RpcResponse` frame, sent tagged, and the in-flight slot its request holds.
    Answer(u64, Bytes, tokio::sync::OwnedSemaphorePermit),
    Busy(u64),
}

/// Answers waiting for the writer; an answer past this waits its turn.
const ANSWER_QUEUE: usize = 1024;
/// Answers the writer takes per write.
const ANSWER_BATCH: usize = 128;

/// Writes answers as they are ready, all that are ready in one write.
async fn write_answers(
    mut send: quinn::SendStream,
    mut queued: mpsc::Receiver<Out>,
) -> Result<(), LinkError> {
    let mut batch = Vec::with_capacity(ANSWER_BATCH);
    let mut buf = BytesMut::new();
    let mut slots = Vec::with_capacity(ANSWER_BATCH);
    while queued.recv_many(&mut batch, ANSWER_BATCH).await > 0 {
        buf.clear();
        for out in batch.drain(..) {
            match out {
                Out::Answer(tag, frame, slot) => {
                    msg::put_tagged(&mut buf, FrameType::TaggedResponse, tag, &frame);
                    slots.push(slot);
                }
                Out::Busy(tag) => buf.extend_from_slice(&msg::busy(tag)),
            }
        }
        send.write_all(&buf).await?;
        slots.clear();
        if buf.capacity() > 2 * msg::INLINE_MAX {
            // A burst should not keep its buffer for the connection's life.
            buf = BytesMut::new();
        }
    }
    let _ = send.finish();
    Ok(())
}

/// An answer too large for the request stream, on a stream of its own.
async fn send_large(conn: &quinn::Connection, tag: u64, frame: &[u8]) -> Result<(), LinkError> {
    let mut send = conn.open_uni().await?;
    send.write_all(&msg::tagged_header(FrameType::TaggedResponse, tag, frame))
        .await?;
    send.write_all(&frame[5..]).await?;
    let _ = send.finish();
    Ok(())
}

/// Answers one request: a whole `RpcResponse` frame, at most `max` bytes once tagged.
async fn answer(shared: &Shared, req: RpcRequest, max: usize) -> Bytes {
    // At info level so that warnings raised while answering (an upstream failing) carry the
    // gateway's request id, which joins the two sides' logs. Params are never recorded.
    // The id as `&str`, not `%`: a Display field is formatted through `write!`.
    let span = tracing::info_span!(
        "request",
        id = req.request_id.as_str(),
        chain = req.chain_id,
        calls = req.calls.len()
    );
    shared.metrics.in_flight.inc();
    // Boxed: the answering future is tens of KiB (upstream calls, proofs), and unboxed it made
    // every request's task that big, copied four times per request on spawn.
    let resp = Box::pin(shared.service.handle(req))
        .instrument(span.clone())
        .await;
    shared.metrics.in_flight.dec();
    span.in_scope(|| tracing::debug!(results = resp.results.len(), "request answered"));
    let frame = resp.encode();
    if frame.len() + msg::TAG_BYTES <= max {
        return frame;
    }
    // Too big for the link: a final answer (asking another node would not help).
    let err = proto::rpc::error_object(
        proto::rpc::LIMIT_EXCEEDED,
        format!(
            "response of {} bytes exceeds the {max}-byte frame limit",
            frame.len()
        ),
    );
    let results = resp
        .results
        .iter()
        .map(|_| msg::CallResult {
            cache: msg::CacheStatus::Bypass,
            outcome: msg::Outcome::Error(err.clone()),
            final_answer: false,
            at_state: false,
        })
        .collect();
    msg::RpcResponse {
        results,
        state_version: None,
    }
    .encode()
}

/// Builds a status snapshot for all chains.
pub fn status_of(service: &Service, in_flight: u32) -> Status {
    let mut chains: Vec<_> = service.chains.values().map(|c| c.status()).collect();
    chains.sort_by_key(|c| c.chain_id);
    Status {
        chains,
        in_flight,
        gateways: Vec::new(),
    }
}
