//! A sequenced message and its wire encodings (`herald-core`).

pub use herald_core::message::*;
