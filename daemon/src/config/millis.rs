//! `*_ms` keys: whole milliseconds in the TOML (the keys keep their names), a `Duration` in the
//! config structs, so no call site converts again.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// For `#[serde(with = "millis")]` (only deserialized).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// `Duration` in milliseconds, for error messages that speak in the unit of the key.
pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}
