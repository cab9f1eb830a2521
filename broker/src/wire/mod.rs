//! Wire encodings with no framework in them, shared by the hub (which
//! builds each message's bytes once) and the transports (which send them).

pub mod websocket;
