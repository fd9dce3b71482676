//! Gateway library.
pub mod geo;
