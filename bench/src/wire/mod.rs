//! Wire codecs of the systems `compare` drives, one module each, plus the
//! send-time stamp every published payload carries.
//!
//! Publisher and subscribers run in different processes (worker
//! subprocesses), so the stamp is `CLOCK_MONOTONIC` in nanoseconds: one clock
//! for every process on the machine, unaffected by wall-clock steps.

pub mod herald;
pub mod nats;
pub mod socketio;
pub mod ws;

use std::sync::LazyLock;

use memchr::memmem;

/// `CLOCK_MONOTONIC` now, nanoseconds (shared by all processes on the host).
pub fn mono_nanos() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The send stamp `t` of a delivery: the digits after the first `"t":` in
/// `frame` (the payload is `{"t":NANOS,"p":"…"}`, see
/// [`crate::load::latency::stamped_payload`]). Herald's `"ts":` and
/// `"topic":` do not match.
pub fn find_stamp(frame: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"t\":";
    // SIMD substring search: the generator does this for every delivery of
    // every system, and Herald's envelope puts ~80 bytes before the stamp.
    // One searcher built once (`memmem::find` builds one per call).
    static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(KEY));
    let at = FINDER.find(frame)? + KEY.len();
    let digits = frame[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold((0u64, 0usize), |(v, n), &b| {
            (v.wrapping_mul(10).wrapping_add(u64::from(b - b'0')), n + 1)
        });
    (digits.1 > 0).then_some(digits.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::latency::stamped_payload;

    #[test]
    fn stamps_round_trip_through_each_envelope() {
        let p = stamped_payload(123_456_789_012, 64);
        assert_eq!(p.len(), 64);
        let herald =
            format!(r#"{{"type":"message","topic":"t","seq":3,"ts":1700000000000,"data":{p}}}"#);
        assert_eq!(find_stamp(herald.as_bytes()), Some(123_456_789_012));
        let sio = format!(r#"42["msg","t",3,{p}]"#);
        assert_eq!(find_stamp(sio.as_bytes()), Some(123_456_789_012));
        assert_eq!(find_stamp(b"{\"ts\":5}"), None);
        assert_eq!(find_stamp(b"{\"t\":x}"), None);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = mono_nanos();
        let b = mono_nanos();
        assert!(b >= a && a > 0);
    }
}
