//! RFC 6455 frames (`herald-core`).

pub use herald_core::websocket::*;
