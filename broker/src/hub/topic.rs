//! Topic names and subscription patterns (`herald-core`).

pub use herald_core::topic::*;
