//! The JSON-RPC listener's open connections: the `max_connections` and
//! `max_connections_per_ip` bounds, the deadlines that close a silent or idle connection, and
//! shedding the connection idle the longest when the listener is full.
//!
//! A connection is idle when no request is in flight on it: [`Activity`] counts requests from
//! the moment the service starts one (its headers are in) until its response is ready, and
//! keeps the time the last one ended. Counting requests rather than bytes read is the same for
//! HTTP/1.1 and HTTP/2 (an h2 PING or a half-sent header is not a request), needs no wrapper
//! around the socket, and costs two atomic updates and a clock read per request.
//! [`Conn::drive`] runs a connection and closes it at its deadline:
//!
//! - before its first request, `header_timeout` after it was accepted: a socket that sends
//!   nothing, or never finishes its first headers, is dropped (no response can be pending);
//! - after that, `idle_timeout` after its last response was ready while no request is in
//!   flight: closed gracefully (HTTP/1.1 at once between requests, HTTP/2 with a GOAWAY).
//!
//! A connection asked to close (idle, shed, shutdown) that is still open [`CLOSE_GRACE`] later
//! with no request in flight is dropped: a peer that stopped reading its last response, or that
//! dribbles a request it never finishes, cannot hold it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::sniff::Graceful;

/// How long a connection asked to close may take to finish once no request is in flight on it.
/// An idle-timed-out connection's last response has had `idle_timeout` already.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The deadlines of [`Conn::drive`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept to the first request's headers.
    pub header: Duration,
    /// From a response ready to the next request's headers, with none in flight.
    pub idle: Duration,
    /// What open requests get once the gateway stops.
    pub shutdown_grace: Duration,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` open and none of them idle.
    Full,
    /// `max_connections_per_ip` open from the caller's address.
    PerIp,
}

impl Refused {
    /// The `rejected_requests_total` reason.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Full => "connection_limit",
            Refused::PerIp => "connection_per_ip_limit",
        }
    }
}

/// Why the gateway closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No first request within `header_timeout`.
    HeaderTimeout,
    /// No new request within `idle_timeout`.
    IdleTimeout,
    /// Idle the longest while the listener was full: it made room for a new connection.
    Shed,
    /// The gateway is stopping.
    Shutdown,
}

impl Closed {
    /// The `http_connections_closed_total` reasons; a shutdown is not counted.
    pub const REASONS: [Closed; 3] = [Closed::HeaderTimeout, Closed::IdleTimeout, Closed::Shed];

    pub fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Shed => "shed",
            Closed::Shutdown => "shutdown",
        }
    }
}

// === impl Conns ===

/// The open connections, their count, and their count per address.
pub struct Conns {
    max: usize,
    max_per_ip: usize,
    /// The gateway's stop; every connection's close token is its child.
    stop: CancellationToken,
    inner: Mutex<Inner>,
    /// Told when the last open connection closes.
    emptied: Notify,
}

#[derive(Default)]
struct Inner {
    /// Connections counted against `max`: every open one except those shed, each of which gave
    /// its place to the connection that shed it (and is gone within [`CLOSE_GRACE`]).
    counted: usize,
    /// Open connections per capped address; an address leaves with its last connection.
    per_ip: HashMap<IpAddr, usize>,
    open: HashMap<u64, Open>,
    next_id: u64,
}

struct Open {
    activity: Arc<Activity>,
    shed: bool,
}

impl Conns {
    pub fn new(max: usize, max_per_ip: usize, stop: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            max,
            max_per_ip,
            stop,
            inner: Mutex::default(),
            emptied: Notify::new(),
        })
    }

    /// Registers a new connection from `ip`; `capped` says whether `max_connections_per_ip`
    /// applies to it. When the listener is full, the connection with no request in flight for
    /// the longest time is asked to close and the new one takes its place: finding it is a scan
    /// of the open connections, paid only when full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, capped: bool) -> Result<Conn, Refused> {
        let key = capped.then(|| per_ip_key(ip));
        let mut inner = self.inner.lock();
        if let Some(key) = key {
            if inner
                .per_ip
                .get(&key)
                .is_some_and(|n| *n >= self.max_per_ip)
            {
                return Err(Refused::PerIp);
            }
        }
        if inner.counted >= self.max {
            let idlest = inner
                .open
                .values_mut()
                .filter(|o| !o.shed)
                .filter_map(|o| Some((o.activity.idle()?.0, o)))
                .min_by_key(|(since, _)| *since)
                .map(|(_, o)| o)
                .ok_or(Refused::Full)?;
            idlest.shed = true;
            idlest.activity.close.cancel();
        } else {
            inner.counted += 1;
        }
        if let Some(key) = key {
            *inner.per_ip.entry(key).or_default() += 1;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let activity = Arc::new(Activity::new(self.stop.child_token()));
        inner.open.insert(
            id,
            Open {
                activity: activity.clone(),
                shed: false,
            },
        );
        Ok(Conn {
            conns: self.clone(),
            id,
            key,
            activity,
        })
    }

    /// Waits until every connection has closed.
    pub async fn all_closed(&self) {
        loop {
            // Made before the check, so a notification in between is not lost.
            let emptied = self.emptied.notified();
            if self.inner.lock().open.is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// Open connections, and addresses with a connection open (tests).
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.open.len(), inner.per_ip.len())
    }
}

/// What a per-address cap counts: an IPv4 address (IPv4-mapped IPv6 included) as is, an IPv6
/// address by its /64, the block one subscriber gets (a cap per IPv6 address caps nothing).
pub(crate) fn per_ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

// === impl Conn ===

/// One open connection, registered until dropped.
pub struct Conn {
    conns: Arc<Conns>,
    id: u64,
    /// The address its per-address count is under; `None` when uncapped.
    key: Option<IpAddr>,
    activity: Arc<Activity>,
}

impl Conn {
    /// What the connection's service marks its requests with.
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// Runs `conn` to its end, closing it at its deadline, when shed, or when the gateway
    /// stops (see the module docs). Returns why the gateway closed it, if it did.
    pub async fn drive<C: Graceful>(&self, conn: C, limits: Limits) -> Option<Closed> {
        let mut conn = pin!(conn);
        let activity = &self.activity;
        // Once asked to close: why, and when to look again whether to drop it.
        let mut closing: Option<(Closed, Instant)> = None;
        loop {
            let now = Instant::now();
            let wake = match closing {
                Some((_, at)) => at,
                None => match activity.due(now, &limits) {
                    Ok(at) => at,
                    // No request ever started, so no response is owed: drop it.
                    Err(Closed::HeaderTimeout) => return Some(Closed::HeaderTimeout),
                    Err(why) => {
                        conn.as_mut().close_gracefully();
                        closing = Some((why, now + CLOSE_GRACE));
                        continue;
                    }
                },
            };
            tokio::select! {
                biased;
                _ = conn.as_mut() => return closing.map(|(why, _)| why),
                () = activity.close.cancelled(), if closing.is_none() => {
                    let (why, grace) = if self.conns.stop.is_cancelled() {
                        (Closed::Shutdown, limits.shutdown_grace)
                    } else {
                        (Closed::Shed, CLOSE_GRACE)
                    };
                    conn.as_mut().close_gracefully();
                    closing = Some((why, Instant::now() + grace));
                }
                () = tokio::time::sleep_until(wake) => {
                    if let Some((why, _)) = closing {
                        if activity.in_flight.load(Ordering::Acquire) == 0 {
                            return Some(why);
                        }
                        closing = Some((why, Instant::now() + CLOSE_GRACE));
                    }
                }
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut inner = self.conns.inner.lock();
        if !inner.open.remove(&self.id).is_some_and(|o| o.shed) {
            inner.counted -= 1;
        }
        if let Some(key) = self.key {
            if let Entry::Occupied(mut n) = inner.per_ip.entry(key) {
                *n.get_mut() -= 1;
                if *n.get() == 0 {
                    n.remove();
                }
            }
        }
        if inner.open.is_empty() {
            self.conns.emptied.notify_waiters();
        }
    }
}

// === impl Activity ===

/// One connection's requests: how many are in flight, and when the last one ended.
pub struct Activity {
    opened: Instant,
    in_flight: AtomicU32,
    /// 1 + nanoseconds from `opened` to when the last request's response was ready; 0 before
    /// the first.
    last_done: AtomicU64,
    /// Asks the connection to close (shed, or the gateway's stop).
    close: CancellationToken,
}

impl Activity {
    pub(crate) fn new(close: CancellationToken) -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_done: AtomicU64::new(0),
            close,
        }
    }

    /// Marks a request in flight until the returned guard drops: when its response is ready,
    /// or when the request is abandoned.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Since when no request has been in flight, and whether one ever was; `None` while one
    /// is.
    fn idle(&self) -> Option<(Instant, bool)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(match self.last_done.load(Ordering::Acquire) {
            0 => (self.opened, false),
            n => (self.opened + Duration::from_nanos(n - 1), true),
        })
    }

    /// The connection's deadline at `now`: when to look again, or why to close it now.
    fn due(&self, now: Instant, limits: &Limits) -> Result<Instant, Closed> {
        let (at, why) = match self.idle() {
            // A request in flight: look again an idle period from now, by when the deadline
            // is at least that far off even if the request ends at once.
            None => return Ok(now + limits.idle),
            Some((since, false)) => (since + limits.header, Closed::HeaderTimeout),
            Some((since, true)) => (since + limits.idle, Closed::IdleTimeout),
        };
        if at <= now {
            Err(why)
        } else {
            Ok(at)
        }
    }
}

/// A request in flight on a connection (see [`Activity::start`]).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ns = u64::try_from(a.opened.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        // The latest end wins when several h2 requests end together; it is set before the
        // count drops, so whoever sees no request in flight sees when the last one ended.
        a.last_done.fetch_max(ns + 1, Ordering::AcqRel);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::task::JoinHandle;

    use super::*;

    const LIMITS: Limits = Limits {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(5),
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn conns(max: usize, per_ip: usize) -> Arc<Conns> {
        Conns::new(max, per_ip, CancellationToken::new())
    }

    /// Serves one connection over an in-memory pipe with a handler that takes `work`; returns
    /// the client's end and what `drive` returned, with when.
    fn serve(conn: Conn, work: Duration) -> (DuplexStream, JoinHandle<(Option<Closed>, Instant)>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let activity = conn.activity();
        let svc = service_fn(move |_req| {
            let in_flight = activity.start();
            async move {
                tokio::time::sleep(work).await;
                drop(in_flight);
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        });
        let http = super::super::sniff::auto_builder()
            .serve_connection_with_upgrades(TokioIo::new(server), svc)
            .into_owned();
        let driven = tokio::spawn(async move {
            let why = conn.drive(http, LIMITS).await;
            (why, Instant::now())
        });
        (client, driven)
    }

    /// One HTTP/1.1 request on `client`; returns once the whole response is read.
    async fn get(client: &mut DuplexStream) {
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        while !buf.ends_with(b"\r\n\r\nok") {
            let mut chunk = [0u8; 512];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed mid-response");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn eof(client: &mut DuplexStream) -> Instant {
        let mut chunk = [0u8; 64];
        assert_eq!(client.read(&mut chunk).await.unwrap(), 0);
        Instant::now()
    }

    #[test]
    fn ipv6_is_counted_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(per_ip_key(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(per_ip_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(per_ip_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_ne!(per_ip_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_per_address_cap_refuses_the_next_and_forgets_closed_addresses() {
        let c = conns(100, 2);
        let a = [c.admit(ip("10.0.0.1"), true), c.admit(ip("10.0.0.1"), true)];
        assert!(a.iter().all(Result::is_ok));
        assert_eq!(c.admit(ip("10.0.0.1"), true).err(), Some(Refused::PerIp));
        assert_eq!(
            c.admit(ip("::ffff:10.0.0.1"), true).err(),
            Some(Refused::PerIp)
        );
        // Another address, and an uncapped one (a trusted proxy), are let in.
        let b = c.admit(ip("10.0.0.2"), true).unwrap();
        let proxies: Vec<_> = (0..5).map(|_| c.admit(ip("10.0.0.1"), false)).collect();
        assert!(proxies.iter().all(Result::is_ok));
        assert_eq!(c.counts(), (8, 2));
        drop(a);
        assert!(c.admit(ip("10.0.0.1"), true).is_ok());
        drop((b, proxies));
        // Every address with no connection left is forgotten.
        assert_eq!(c.counts(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_listener_sheds_the_longest_idle_and_refuses_when_none_is() {
        let c = conns(3, 100);
        let old = c.admit(ip("10.0.0.1"), true).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let busy_oldest = c.admit(ip("10.0.0.2"), true).unwrap();
        let mid = c.admit(ip("10.0.0.3"), true).unwrap();
        // `old` was opened first, but served a request since: `mid` is idle the longest of the
        // idle ones; `busy_oldest` has a request in flight.
        let busy = busy_oldest.activity().start();
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(old.activity().start());
        tokio::time::advance(Duration::from_secs(1)).await;

        let new = c.admit(ip("10.0.0.4"), true).unwrap();
        assert!(mid.activity.close.is_cancelled());
        assert!(!old.activity.close.is_cancelled() && !busy_oldest.activity.close.is_cancelled());
        // `mid` gave its place away; the next sheds `old`, then none is left to shed.
        let newer = c.admit(ip("10.0.0.5"), true).unwrap();
        assert!(old.activity.close.is_cancelled());
        let _busy_new = (new.activity().start(), newer.activity().start());
        assert_eq!(c.admit(ip("10.0.0.6"), true).err(), Some(Refused::Full));
        // Shed connections closing free no place; an open one does.
        drop((mid, old));
        assert_eq!(c.admit(ip("10.0.0.6"), true).err(), Some(Refused::Full));
        drop((busy, busy_oldest));
        assert!(c.admit(ip("10.0.0.6"), true).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_are_header_time_then_idle_time_and_never_with_a_request_in_flight() {
        let c = conns(10, 10);
        let conn = c.admit(ip("10.0.0.1"), true).unwrap();
        let a = conn.activity();
        let t0 = Instant::now();
        assert_eq!(a.due(t0, &LIMITS), Ok(t0 + LIMITS.header));
        assert_eq!(
            a.due(t0 + LIMITS.header, &LIMITS),
            Err(Closed::HeaderTimeout)
        );
        let req = a.start();
        let late = t0 + Duration::from_secs(500);
        assert_eq!(a.due(late, &LIMITS), Ok(late + LIMITS.idle));
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(req);
        let done = t0 + Duration::from_secs(3);
        assert_eq!(a.due(done, &LIMITS), Ok(done + LIMITS.idle));
        assert_eq!(a.due(done + LIMITS.idle, &LIMITS), Err(Closed::IdleTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_dropped_at_the_header_deadline() {
        let c = conns(10, 10);
        let t0 = Instant::now();
        let (mut client, driven) = serve(c.admit(ip("10.0.0.1"), true).unwrap(), Duration::ZERO);
        assert_eq!(eof(&mut client).await, t0 + LIMITS.header);
        assert_eq!(
            driven.await.unwrap(),
            (Some(Closed::HeaderTimeout), t0 + LIMITS.header)
        );
        assert_eq!(c.counts(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfinished_first_request_is_dropped_at_the_header_deadline() {
        let c = conns(10, 10);
        let t0 = Instant::now();
        let (mut client, driven) = serve(c.admit(ip("10.0.0.1"), true).unwrap(), Duration::ZERO);
        client.write_all(b"POST / HTTP/1.1\r\nhost:").await.unwrap();
        assert_eq!(eof(&mut client).await, t0 + LIMITS.header);
        assert_eq!(driven.await.unwrap().0, Some(Closed::HeaderTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn an_h1_keep_alive_connection_closes_an_idle_time_after_its_last_response() {
        let c = conns(10, 10);
        let (mut client, driven) = serve(c.admit(ip("10.0.0.1"), true).unwrap(), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(9)).await;
        get(&mut client).await;
        // Past the header deadline: only the first request had to beat it.
        tokio::time::advance(Duration::from_secs(20)).await;
        get(&mut client).await;
        let last = Instant::now();
        assert_eq!(eof(&mut client).await, last + LIMITS.idle);
        assert_eq!(
            driven.await.unwrap(),
            (Some(Closed::IdleTimeout), last + LIMITS.idle)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_holds_the_connection_past_the_idle_time() {
        let c = conns(10, 10);
        let work = LIMITS.idle * 2 + Duration::from_secs(1);
        let (mut client, driven) = serve(c.admit(ip("10.0.0.1"), true).unwrap(), work);
        let t0 = Instant::now();
        get(&mut client).await;
        assert_eq!(Instant::now(), t0 + work);
        assert_eq!(eof(&mut client).await, t0 + work + LIMITS.idle);
        assert_eq!(driven.await.unwrap().0, Some(Closed::IdleTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn an_h2_connection_closes_an_idle_time_after_its_last_response() {
        let c = conns(10, 10);
        let (client, driven) = serve(c.admit(ip("10.0.0.1"), true).unwrap(), Duration::ZERO);
        let (mut send, h2) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
                .await
                .unwrap();
        let h2 = tokio::spawn(h2);
        for _ in 0..3 {
            // Within the header time, then within the idle time of the last response.
            tokio::time::advance(Duration::from_secs(9)).await;
            send.ready().await.unwrap();
            let req = http::Request::get("http://x/")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let body = send.send_request(req).await.unwrap().into_body();
            assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
        }
        let last = Instant::now();
        assert_eq!(
            driven.await.unwrap(),
            (Some(Closed::IdleTimeout), last + LIMITS.idle)
        );
        // GOAWAY: the client's connection ends without error.
        h2.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_shed_connection_closes_at_once_and_a_stop_closes_all() {
        let stop = CancellationToken::new();
        let c = Conns::new(2, 10, stop.clone());
        let (mut first, first_driven) =
            serve(c.admit(ip("10.0.0.1"), true).unwrap(), Duration::ZERO);
        get(&mut first).await;
        tokio::time::advance(Duration::from_secs(1)).await;
        let (mut second, second_driven) =
            serve(c.admit(ip("10.0.0.1"), true).unwrap(), Duration::ZERO);
        get(&mut second).await;
        let t = Instant::now();
        let (mut third, third_driven) =
            serve(c.admit(ip("10.0.0.2"), true).unwrap(), Duration::ZERO);
        assert_eq!(eof(&mut first).await, t);
        assert_eq!(first_driven.await.unwrap(), (Some(Closed::Shed), t));
        get(&mut third).await;
        stop.cancel();
        assert_eq!(second_driven.await.unwrap(), (Some(Closed::Shutdown), t));
        assert_eq!(third_driven.await.unwrap(), (Some(Closed::Shutdown), t));
        eof(&mut second).await;
        tokio::time::timeout(Duration::from_millis(1), c.all_closed())
            .await
            .expect("every connection closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_dropped_a_grace_after_it_is_asked_to_close() {
        let c = conns(10, 10);
        let (mut client, driven) = serve(c.admit(ip("10.0.0.1"), true).unwrap(), Duration::ZERO);
        get(&mut client).await;
        let t = Instant::now();
        // Pipelined requests whose responses are never read fill the pipe: the connection
        // cannot finish writing, so it cannot close gracefully.
        let many = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".repeat(10_000);
        let (mut rd, mut wr) = tokio::io::split(client);
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(&many).await;
            wr
        });
        assert_eq!(
            driven.await.unwrap(),
            (Some(Closed::IdleTimeout), t + LIMITS.idle + CLOSE_GRACE)
        );
        let mut sink = Vec::new();
        let _ = rd.read_to_end(&mut sink).await;
        writer.abort();
    }
}
