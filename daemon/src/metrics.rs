//! The Prometheus text exposition of a registry.

use prometheus::{Encoder, Registry, TextEncoder};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding to a Vec cannot fail");
    String::from_utf8(buf).expect("exposition is UTF-8")
}
