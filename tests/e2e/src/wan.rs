//! WAN-like delays on loopback.

use std::sync::Arc;
use std::time::Duration;

/// A userspace UDP relay that holds every datagram for `one_way` in each direction, so QUIC
/// through it measures a real RTT of twice that (the kernel here has no netem).
pub async fn udp_delay_relay(
    target: std::net::SocketAddr,
    one_way: Duration,
) -> std::net::SocketAddr {
    use tokio::net::UdpSocket;
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut backs: std::collections::HashMap<std::net::SocketAddr, Arc<UdpSocket>> =
            Default::default();
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, client)) = front.recv_from(&mut buf).await else {
                return;
            };
            let back = match backs.get(&client) {
                Some(b) => b.clone(),
                None => {
                    let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    b.connect(target).await.unwrap();
                    backs.insert(client, b.clone());
                    // Replies: target -> client, delayed the same.
                    let (b2, f2) = (b.clone(), front.clone());
                    tokio::spawn(async move {
                        let mut rbuf = vec![0u8; 65536];
                        while let Ok(n) = b2.recv(&mut rbuf).await {
                            let data = rbuf[..n].to_vec();
                            let f3 = f2.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(one_way).await;
                                let _ = f3.send_to(&data, client).await;
                            });
                        }
                    });
                    b
                }
            };
            let data = buf[..n].to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(one_way).await;
                let _ = back.send(&data).await;
            });
        }
    });
    addr
}
