//! Resume cursors (`herald-core`).

pub use herald_core::cursor::*;
