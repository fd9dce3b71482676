//! The gateway's end of a node connection's request stream (`proto::msg`, "The request
//! stream"): every call to the node shares one long-lived stream. A writer task takes all the
//! frames queued since its last write and writes them at once; the reader hands each answer to
//! its caller by tag. Many requests then ride one packet and one wake-up each way, where a
//! stream per request paid a stream's set-up, state and credit every time.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use proto::frame::{Frame, FrameError, FrameReader, FrameType};
use proto::msg;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

/// Frames waiting for the writer; a caller past this waits its turn.
const QUEUE: usize = 1024;
/// Frames the writer takes per write.
const BATCH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("request stream closed")]
    Closed,
    #[error("node refused the request (at its in-flight limit, or too large for it)")]
    Busy,
    /// The answer's own stream failed or was malformed: this call fails, the rest go on.
    #[error("answer stream: {0}")]
    Answer(String),
}

/// Why the request stream ended.
#[derive(Debug, thiserror::Error)]
pub enum MuxFailure {
    #[error("request stream: {0}")]
    Frame(#[from] FrameError),
    #[error("request stream finished by the node")]
    Finished,
    #[error("unexpected {0:?} frame on the request stream")]
    Unexpected(FrameType),
}

enum Answer {
    Frame(Bytes),
    Busy,
    Failed(String),
}

/// Calls waiting for their answer, by tag; `closed` once the stream has ended.
#[derive(Default)]
struct Waiters {
    /// Tags are the gateway's own sequence numbers: a fast hasher, no one can steer them.
    calls: foldhash::HashMap<u64, oneshot::Sender<Answer>>,
    closed: bool,
}

type Pending = Mutex<Waiters>;

struct Inner {
    out: mpsc::Sender<(u64, Bytes)>,
    pending: Pending,
    next_tag: AtomicU64,
    /// Wakes the calls waiting for room in a full queue when the mux is closed.
    closed: tokio::sync::Notify,
}

/// Calls to one node over its request stream. Cheap to share: the stream is driven by the
/// future [`Mux::new`] returns.
pub struct Mux {
    inner: Arc<Inner>,
}

impl Mux {
    /// The mux over a request stream, and the future that drives it: it must be polled for
    /// calls to be answered, and ends (every waiting call failing with [`MuxError::Closed`])
    /// when the stream fails, the node finishes it, or the `Mux` is dropped (`Ok`).
    pub fn new<W, R>(
        send: W,
        recv: R,
        max_frame: usize,
    ) -> (Self, impl Future<Output = Result<(), MuxFailure>> + Send)
    where
        W: AsyncWrite + Unpin + Send + 'static,
        R: AsyncRead + Unpin + Send,
    {
        let (out, rx) = mpsc::channel(QUEUE);
        let inner = Arc::new(Inner {
            out,
            pending: Mutex::new(Waiters::default()),
            next_tag: AtomicU64::new(1),
            closed: tokio::sync::Notify::new(),
        });
        let weak = Arc::downgrade(&inner);
        let driver = async move {
            // The writer is a task of its own: a queued request wakes only it, and an answer
            // arriving only the reader.
            let mut write =
                AbortOnDropHandle::new(tokio::spawn(write_loop(send, rx, weak.clone())));
            let read = async {
                let mut frames = FrameReader::new(max_frame);
                let mut recv = recv;
                loop {
                    let frame = frames.next(&mut recv).await?;
                    // Gone: the `Mux` was dropped, and the stream with it.
                    let Some(inner) = weak.upgrade() else {
                        return Ok(());
                    };
                    let Some(frame) = frame else {
                        return Err(MuxFailure::Finished);
                    };
                    deliver(&inner.pending, frame)?;
                }
            };
            let res = tokio::select! {
                r = &mut write => r.unwrap_or(Err(MuxFailure::Finished)),
                r = read => r,
            };
            // Closed under the lock that calls register under: a call from now on fails at
            // once instead of waiting for an answer that cannot come.
            if let Some(inner) = weak.upgrade() {
                let mut w = inner.pending.lock().expect("pending lock");
                w.closed = true;
                w.calls.clear();
            }
            res
        };
        (Self { inner }, driver)
    }

    /// Sends `request` (a whole frame as `RpcRequest::encode` gives it) and waits for the
    /// node's answer: an `RpcResponse` payload. Dropping the future forgets the call (its
    /// answer, if it comes, is dropped).
    pub async fn call(&self, request: Bytes) -> Result<Bytes, MuxError> {
        let tag = self.inner.next_tag.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self.inner.pending.lock().expect("pending lock");
            if w.closed {
                return Err(MuxError::Closed);
            }
            w.calls.insert(tag, tx);
        }
        let _waiting = Waiting {
            pending: &self.inner.pending,
            tag,
        };
        match self.inner.out.try_send((tag, request)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(MuxError::Closed),
            Err(mpsc::error::TrySendError::Full(item)) => self.wait_for_room(item).await?,
        }
        match rx.await {
            Ok(Answer::Frame(payload)) => Ok(payload),
            Ok(Answer::Busy) => Err(MuxError::Busy),
            Ok(Answer::Failed(why)) => Err(MuxError::Answer(why)),
            Err(_) => Err(MuxError::Closed),
        }
    }

    /// The queue is full (the node is slow to take its requests): waits for room, or until the
    /// mux is closed.
    async fn wait_for_room(&self, item: (u64, Bytes)) -> Result<(), MuxError> {
        let closed = self.inner.closed.notified();
        tokio::pin!(closed);
        // Registered before the check, so a `close` in between still wakes it.
        closed.as_mut().enable();
        if self.inner.pending.lock().expect("pending lock").closed {
            return Err(MuxError::Closed);
        }
        tokio::select! {
            sent = self.inner.out.send(item) => sent.map_err(|_| MuxError::Closed),
            () = closed => Err(MuxError::Closed),
        }
    }

    /// Fails every waiting call, and every later one, with [`MuxError::Closed`] at once (the
    /// node is gone: its calls fail over now, not when the stream notices), those waiting for
    /// room in a full queue included.
    pub fn close(&self) {
        {
            let mut w = self.inner.pending.lock().expect("pending lock");
            w.closed = true;
            w.calls.clear();
        }
        self.inner.closed.notify_waiters();
    }

    /// Whether a call with `tag` is waiting for its answer (a large answer's stream is read
    /// only then).
    pub fn is_waiting(&self, tag: u64) -> bool {
        let w = self.inner.pending.lock().expect("pending lock");
        w.calls.contains_key(&tag)
    }

    /// Takes an answer that came on a stream of its own (a large one): an `RpcResponse`
    /// payload for `tag`, or why that stream failed, which fails only that call.
    pub fn deliver_large(&self, tag: u64, answer: Result<Bytes, String>) {
        let answer = match answer {
            Ok(payload) => Answer::Frame(payload),
            Err(why) => Answer::Failed(why),
        };
        hand_over(&self.inner.pending, tag, answer);
    }

    /// Calls waiting for an answer.
    pub fn waiting(&self) -> usize {
        self.inner.pending.lock().expect("pending lock").calls.len()
    }
}

/// Hands an answer to its caller; one for a call that is gone (cancelled: a hedge won, the
/// deadline passed) is dropped.
fn deliver(pending: &Pending, frame: Frame) -> Result<(), MuxFailure> {
    let (tag, answer) = match frame.ty {
        FrameType::TaggedResponse => {
            let (tag, payload) = msg::split_tag(frame.payload, "TaggedResponse")?;
            (tag, Answer::Frame(payload))
        }
        FrameType::Busy => (msg::split_tag(frame.payload, "Busy")?.0, Answer::Busy),
        other => return Err(MuxFailure::Unexpected(other)),
    };
    hand_over(pending, tag, answer);
    Ok(())
}

fn hand_over(pending: &Pending, tag: u64, answer: Answer) {
    let waiter = pending.lock().expect("pending lock").calls.remove(&tag);
    if let Some(tx) = waiter {
        let _ = tx.send(answer);
    }
}

/// Requests up to this size (framed) are copied into the batch; larger ones are written from
/// where they are.
const COPY_MAX: usize = 16 * 1024;

/// Writes queued requests, all that are queued in one write, until the `Mux` is dropped
/// (then finishes the stream). A request whose caller has gone (a hedge won, the deadline
/// passed) while it was queued is not sent.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut send: W,
    mut rx: mpsc::Receiver<(u64, Bytes)>,
    pending: std::sync::Weak<Inner>,
) -> Result<(), MuxFailure> {
    let io = |e| MuxFailure::Frame(FrameError::Io(e));
    let mut batch = Vec::with_capacity(BATCH);
    let mut buf = BytesMut::new();
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            let _ = send.shutdown().await;
            return Ok(());
        }
        let Some(inner) = pending.upgrade() else {
            return Ok(());
        };
        buf.clear();
        for (tag, frame) in batch.drain(..) {
            if !inner
                .pending
                .lock()
                .expect("pending lock")
                .calls
                .contains_key(&tag)
            {
                continue;
            }
            if frame.len() <= COPY_MAX {
                msg::put_tagged(&mut buf, FrameType::TaggedRequest, tag, &frame);
                continue;
            }
            send.write_all(&buf).await.map_err(io)?;
            buf.clear();
            let header = msg::tagged_header(FrameType::TaggedRequest, tag, &frame);
            send.write_all(&header).await.map_err(io)?;
            send.write_all(&frame[5..]).await.map_err(io)?;
        }
        drop(inner);
        send.write_all(&buf).await.map_err(io)?;
    }
}

/// A call's place in `pending`, given up when the call ends however it ends.
struct Waiting<'a> {
    pending: &'a Pending,
    tag: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .expect("pending lock")
            .calls
            .remove(&self.tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::msg::{CacheStatus, CallResult, Outcome, RpcResponse};

    fn answer(n: u8) -> Bytes {
        RpcResponse {
            results: vec![CallResult {
                cache: CacheStatus::Hit,
                final_answer: false,
                at_state: false,
                outcome: Outcome::Result(Bytes::from(vec![b'0' + n])),
            }],
            state_version: Some(u64::from(n) + 1),
        }
        .encode()
    }

    fn request(n: u8) -> Bytes {
        proto::frame::encode(FrameType::RpcRequest, &[n])
    }

    /// A node on the far end of a duplex pipe: answers each request as it reads it, refuses
    /// request 3 (busy), never answers request 4.
    async fn node(stream: tokio::io::DuplexStream) {
        let (mut r, mut w) = tokio::io::split(stream);
        let mut frames = FrameReader::new(1 << 20);
        while let Ok(Some(f)) = frames.next(&mut r).await {
            assert_eq!(f.ty, FrameType::TaggedRequest);
            let (tag, body) = msg::split_tag(f.payload, "req").unwrap();
            let n = body[0];
            let mut out = BytesMut::new();
            match n {
                3 => out.extend_from_slice(&msg::busy(tag)),
                4 => continue,
                n => msg::put_tagged(&mut out, FrameType::TaggedResponse, tag, &answer(n)),
            }
            w.write_all(&out).await.unwrap();
        }
    }

    #[tokio::test]
    async fn answers_reach_their_callers_by_tag() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        tokio::spawn(node(theirs));
        let (r, w) = tokio::io::split(ours);
        let (mux, driver) = Mux::new(w, r, 1 << 20);
        let driver = tokio::spawn(driver);
        let calls = (0..3u8).chain(5..40).map(|n| {
            let mux = &mux;
            async move { (n, mux.call(request(n)).await) }
        });
        for (n, res) in futures::future::join_all(calls).await {
            let back = RpcResponse::decode(res.unwrap()).unwrap();
            assert_eq!(back.state_version, Some(u64::from(n) + 1), "call {n}");
        }
        assert!(matches!(mux.call(request(3)).await, Err(MuxError::Busy)));
        // A call given up on leaves nothing behind.
        let unanswered =
            tokio::time::timeout(std::time::Duration::from_millis(20), mux.call(request(4)));
        assert!(unanswered.await.is_err());
        assert_eq!(mux.waiting(), 0);
        drop(mux);
        assert!(driver.await.unwrap().is_ok());
    }

    /// A call given up on while still queued (a hedge won, the deadline passed) is not sent.
    #[tokio::test]
    async fn a_call_given_up_on_before_its_write_is_not_sent() {
        use futures::FutureExt;
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(ours);
        let (mux, driver) = Mux::new(w, r, 1 << 20);
        // Queued, then dropped before the writer (not yet running) takes it.
        assert!(mux.call(request(7)).now_or_never().is_none());
        assert_eq!(mux.waiting(), 0);
        tokio::spawn(driver);
        let seen = async {
            let (mut nr, mut nw) = tokio::io::split(theirs);
            let mut frames = FrameReader::new(1 << 20);
            let f = frames.next(&mut nr).await.unwrap().unwrap();
            let (tag, body) = msg::split_tag(f.payload, "req").unwrap();
            let mut out = BytesMut::new();
            msg::put_tagged(&mut out, FrameType::TaggedResponse, tag, &answer(body[0]));
            nw.write_all(&out).await.unwrap();
            body[0]
        };
        let (first_sent, res) = tokio::join!(seen, mux.call(request(1)));
        assert_eq!(first_sent, 1);
        assert!(res.is_ok());
    }

    #[tokio::test]
    async fn a_closed_stream_fails_waiting_and_later_calls() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(ours);
        let (mux, driver) = Mux::new(w, r, 1 << 20);
        let driver = tokio::spawn(driver);
        let waiting = mux.call(request(1));
        tokio::pin!(waiting);
        let node_side = async {
            let (mut nr, _nw) = tokio::io::split(theirs);
            let mut frames = FrameReader::new(1 << 20);
            assert!(frames.next(&mut nr).await.unwrap().is_some());
            // The node goes away without answering.
        };
        let (res, ()) = tokio::join!(&mut waiting, node_side);
        assert!(matches!(res, Err(MuxError::Closed)));
        assert!(matches!(
            driver.await.unwrap(),
            Err(MuxFailure::Finished | MuxFailure::Frame(_))
        ));
        assert!(matches!(mux.call(request(2)).await, Err(MuxError::Closed)));
        assert_eq!(mux.waiting(), 0);
    }

    /// `close` (the node marked gone) fails a call waiting on a node that stays silent at
    /// once, and every later call, though the stream itself is still open.
    #[tokio::test]
    async fn close_fails_waiting_and_later_calls_at_once() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        tokio::spawn(node(theirs));
        let (r, w) = tokio::io::split(ours);
        let (mux, driver) = Mux::new(w, r, 1 << 20);
        tokio::spawn(driver);
        // Request 4 is never answered.
        let waiting = mux.call(request(4));
        tokio::pin!(waiting);
        let pending = tokio::time::timeout(std::time::Duration::from_millis(20), &mut waiting);
        assert!(pending.await.is_err(), "still waiting for the silent node");
        mux.close();
        let res = tokio::time::timeout(std::time::Duration::from_secs(5), &mut waiting).await;
        assert!(matches!(res, Ok(Err(MuxError::Closed))));
        assert!(matches!(mux.call(request(1)).await, Err(MuxError::Closed)));
        assert_eq!(mux.waiting(), 0);
    }

    /// A node that reads nothing: the writer blocks, the queue fills, and later calls wait
    /// for room; `close` fails them all at once.
    #[tokio::test]
    async fn close_fails_calls_waiting_for_room_in_a_full_queue() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let (r, w) = tokio::io::split(ours);
        let (mux, driver) = Mux::new(w, r, 1 << 20);
        tokio::spawn(driver);
        let calls =
            futures::future::join_all((0..QUEUE + BATCH + 64).map(|_| mux.call(request(1))));
        tokio::pin!(calls);
        let stuck = tokio::time::timeout(std::time::Duration::from_millis(50), &mut calls);
        assert!(stuck.await.is_err(), "nothing can be answered");
        mux.close();
        let done = tokio::time::timeout(std::time::Duration::from_secs(5), &mut calls)
            .await
            .expect("close ends every call");
        assert!(done.iter().all(|r| matches!(r, Err(MuxError::Closed))));
        assert_eq!(mux.waiting(), 0);
    }

    #[tokio::test]
    async fn a_wrong_frame_from_the_node_ends_the_stream() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(ours);
        let (mux, driver) = Mux::new(w, r, 1 << 20);
        let (_nr, mut nw) = tokio::io::split(theirs);
        nw.write_all(&proto::frame::encode(FrameType::Hello, b"{}"))
            .await
            .unwrap();
        assert!(matches!(
            driver.await,
            Err(MuxFailure::Unexpected(FrameType::Hello))
        ));
        assert!(matches!(mux.call(request(1)).await, Err(MuxError::Closed)));
    }
}
