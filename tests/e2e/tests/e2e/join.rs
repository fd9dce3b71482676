//! Joining the gateway: tokens, TLS identities, pinning, leaving and rejoining.

use std::time::Duration;

use proto::frame::{self, FrameType};
use proto::identity::Identity;
use proto::msg::{self, Hello, Reject};

use e2e::*;

/// Joins by hand with `identity`, claiming `claimed_id` and `token`; returns the reply frame.
async fn raw_join(
    gw: &gateway::Gateway,
    identity: &Identity,
    claimed_id: &str,
    token: &str,
) -> (frame::Frame, Session) {
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(
        proto::tls::client_config(identity, &gw.fingerprint, Default::default()).unwrap(),
    );
    let conn = ep
        .connect(gw.quic_addr, proto::tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Hello {
        protocol: proto::PROTOCOL_VERSION,
        token: token.into(),
        node_id: claimed_id.into(),
        region: "eu-west".into(),
        latitude: 50.0,
        longitude: 8.0,
        chains: vec![CHAIN_ID],
        version: "test".into(),
    };
    send.write_all(&msg::encode_json(FrameType::Hello, &hello))
        .await
        .unwrap();
    let f = tokio::time::timeout(
        Duration::from_secs(5),
        frame::read_frame(&mut recv, 1 << 16),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    // The connection and the control stream are returned so that the session lasts as long
    // as the caller holds them (a finished control stream ends the node's session).
    (f, (conn, send, recv))
}

/// What keeps a raw session open.
type Session = (quinn::Connection, quinn::SendStream, quinn::RecvStream);

fn reject_reason((f, _): (frame::Frame, Session)) -> String {
    let p = f.expect(FrameType::Reject).expect("expected a Reject");
    msg::decode_json::<Reject>("Reject", &p).unwrap().reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_mismatched_identities_are_refused() {
    let gw = start_gateway("").await;
    let me = Identity::generate().unwrap();
    let other = Identity::generate().unwrap();

    let r = reject_reason(raw_join(&gw, &me, &me.node_id(), "wrong-token").await);
    assert!(r.contains("token"), "{r}");

    // Claiming someone else's id: the TLS key proves otherwise.
    let r = reject_reason(raw_join(&gw, &me, &other.node_id(), TOKEN).await);
    assert!(r.contains("does not match"), "{r}");

    // The right token and the node's own id are welcome.
    let (ok, _session) = raw_join(&gw, &me, &me.node_id(), TOKEN).await;
    assert_eq!(ok.ty, FrameType::Welcome);
    assert!(gw.app.registry.get(&me.node_id()).is_some());
    let refused = gw
        .app
        .metrics
        .node_joins
        .with_label_values(&["refused"])
        .get();
    assert_eq!(refused, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_pinning_another_gateway_key_never_joins() {
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway("").await;
    let spec = NodeSpec::eu_west(&anvil.url);
    let mut cfg = node_config(&gw, &spec, TOKEN);
    cfg.gateways[0].fingerprint = Identity::generate().unwrap().fingerprint();
    let node = edge_node::EdgeNode::start(cfg, Identity::generate().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        gw.app.registry.is_empty(),
        "the node must refuse an unpinned gateway"
    );
    assert!(node.shared.joined.lock().is_empty());

    // The wrong token through the real node: refused, and it keeps retrying without joining.
    let bad = edge_node::EdgeNode::start(
        node_config(&gw, &spec, "not-the-token"),
        Identity::generate().unwrap(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(gw.app.registry.is_empty());
    assert!(
        bad.shared
            .metrics
            .gateway_connects
            .with_label_values(&["rejected"])
            .get()
            >= 1
    );
    node.shutdown().await;
    bad.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_is_removed_at_once_and_may_rejoin() {
    let anvil = Anvil::start(&[]).await;
    let gw = start_gateway("").await;
    let spec = NodeSpec::eu_west(&anvil.url);
    let key = Identity::generate().unwrap();
    let node = edge_node::EdgeNode::start(node_config(&gw, &spec, TOKEN), key)
        .await
        .unwrap();
    wait_serving(&gw, 1).await;
    let id = node.node_id.clone();
    node.shutdown().await;
    // A clean goodbye closes the connection: removal does not wait for a deadline.
    for _ in 0..20 {
        if gw.app.registry.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(gw.app.registry.is_empty(), "node {id} still registered");

    // Same key file, as a restarted node would load it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let k1 = Identity::load_or_generate(&path).unwrap();
    let n1 = edge_node::EdgeNode::start(node_config(&gw, &spec, TOKEN), k1)
        .await
        .unwrap();
    wait_serving(&gw, 1).await;
    n1.shutdown().await;
    let k2 = Identity::load_or_generate(&path).unwrap();
    let n2 = edge_node::EdgeNode::start(node_config(&gw, &spec, TOKEN), k2)
        .await
        .unwrap();
    wait_serving(&gw, 1).await;
    assert_eq!(
        n2.node_id,
        gw.app.registry.snapshot()[0].id,
        "rejoined under the same id"
    );
    n2.shutdown().await;
}

/// A node cannot make the gateway read answers nobody asked for: a large-answer stream whose
/// tag no call is waiting for (or of another frame type) is stopped at its header, and the
/// node stays joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unasked_large_answers_are_stopped_at_their_header() {
    let gw = start_gateway("").await;
    let me = Identity::generate().unwrap();
    let (ok, (conn, _send, _recv)) = raw_join(&gw, &me, &me.node_id(), TOKEN).await;
    assert_eq!(ok.ty, FrameType::Welcome);
    for ty in [FrameType::TaggedResponse, FrameType::Status] {
        let mut uni = conn.open_uni().await.unwrap();
        let mut header = [0u8; 5 + msg::TAG_BYTES];
        header[..4].copy_from_slice(&(30u32 << 20).to_be_bytes());
        header[4] = ty as u8;
        header[5..].copy_from_slice(&12_345u64.to_be_bytes());
        uni.write_all(&header).await.unwrap();
        // Keep sending the declared 30 MiB: the gateway must stop the stream long before.
        let chunk = vec![0u8; 64 * 1024];
        let stopped = tokio::time::timeout(Duration::from_secs(5), async {
            for _ in 0..480 {
                if let Err(e) = uni.write_all(&chunk).await {
                    return Some(e);
                }
            }
            None
        })
        .await
        .expect("the gateway neither read nor stopped the stream");
        assert!(
            matches!(stopped, Some(quinn::WriteError::Stopped(_))),
            "{ty:?}: {stopped:?}"
        );
    }
    assert!(gw.app.registry.get(&me.node_id()).is_some());
    assert!(conn.close_reason().is_none());
}
