//! Mutual TLS over QUIC for the gateway <-> node link.
//!
//! Neither side uses a CA. The gateway accepts any client certificate whose handshake
//! signature verifies, and derives the node id from its public key; the node's `Hello` must
//! claim that same id. The node pins the gateway's public-key fingerprint instead of checking a
//! name, so a gateway can move addresses without re-issuing anything.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::identity::{fingerprint_of, node_id_of, Identity};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("quic crypto: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// Knobs both ends share.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    /// Keep-alive pings keep NAT bindings open and let RTT estimates stay fresh.
    pub keep_alive: Duration,
    /// A silent peer is declared gone after this long.
    pub idle_timeout: Duration,
    /// Concurrent streams the gateway may open towards one node: its request stream and one
    /// per subscription.
    pub max_streams: u32,
    /// The RTT assumed before one is measured; it paces the handshake's retransmits, so a
    /// node dialling a gateway that is just coming back gets in within a few hundred ms.
    pub initial_rtt: Duration,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
            max_streams: 4096,
            // quinn's default is 333 ms (first retransmit after about a second).
            initial_rtt: Duration::from_millis(100),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Stream limits for the peer: `bidi` bidirectional and `uni` unidirectional streams open at once.
fn transport_config(t: Transport, bidi: u32, uni: u32) -> Arc<quinn::TransportConfig> {
    let mut tc = quinn::TransportConfig::default();
    tc.keep_alive_interval(Some(t.keep_alive));
    tc.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(t.idle_timeout).expect("idle timeout fits a VarInt"),
    ));
    tc.initial_rtt(t.initial_rtt);
    // Every request to a node, and every answer up to `msg::INLINE_MAX`, shares one stream:
    // its window, not quinn's per-stream default (1.25 MB), bounds what is in flight.
    tc.stream_receive_window(REQUEST_STREAM_WINDOW.into());
    tc.max_concurrent_bidi_streams(bidi.into());
    tc.max_concurrent_uni_streams(uni.into());
    Arc::new(tc)
}

/// The receive window of each stream, the request stream's above all (bytes).
const REQUEST_STREAM_WINDOW: u32 = 16 * 1024 * 1024;

/// Large answers a node may be sending the gateway at once, each on a stream of its own.
const LARGE_ANSWER_STREAMS: u32 = 64;

/// Gateway side: serves its identity and demands a client certificate.
pub fn server_config(id: &Identity, t: Transport) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(AnyKeyClientVerifier { provider }))
        .with_single_cert(vec![id.cert()], id.key())?;
    cfg.alpn_protocols = vec![crate::ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(cfg)?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    // The node opens one control stream, and a stream of its own for each large answer
    // (`msg::INLINE_MAX`); the gateway opens the request and subscription streams.
    sc.transport_config(transport_config(t, 4, LARGE_ANSWER_STREAMS));
    Ok(sc)
}

/// Node side: presents its identity and accepts only the gateway with `fingerprint`.
pub fn client_config(
    id: &Identity,
    gateway_fingerprint: &str,
    t: Transport,
) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier {
            fingerprint: gateway_fingerprint.to_ascii_lowercase(),
            provider,
        }))
        .with_client_auth_cert(vec![id.cert()], id.key())?;
    cfg.alpn_protocols = vec![crate::ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(cfg)?;
    let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
    cc.transport_config(transport_config(t, t.max_streams, 0));
    Ok(cc)
}

/// The node id proven by the peer's TLS certificate on an accepted connection.
pub fn peer_node_id(conn: &quinn::Connection) -> Option<String> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    node_id_of(certs.first()?).ok()
}

/// Server name the node uses in its ClientHello; it is not checked (the key is pinned).
pub const SERVER_NAME: &str = "meridian";

/// Handshake signature checks, the same for both ends: the peer must hold the key in its
/// certificate, whatever the certificate says otherwise.
struct Signatures<'a>(&'a CryptoProvider);

fn signatures(p: &CryptoProvider) -> Signatures<'_> {
    Signatures(p)
}

impl Signatures<'_> {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[derive(Debug)]
struct AnyKeyClientVerifier {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyKeyClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Identity is the key, checked against `Hello.node_id` after the handshake; here we
        // only insist the certificate parses so the id can be derived.
        node_id_of(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures(&self.provider).tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures(&self.provider).tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures(&self.provider).schemes()
    }
}

#[derive(Debug)]
struct PinnedServerVerifier {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint_of(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        if got == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "gateway key {got} does not match the pinned fingerprint {}",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures(&self.provider).tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures(&self.provider).tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures(&self.provider).schemes()
    }
}
