//! Topic and pattern parsing never panics; accepted names obey the grammar,
//! a topic always matches itself as a pattern, and coverage is consistent
//! with matching.
#![no_main]

use herald::hub::{Pattern, Topic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (a, b) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(topic) = Topic::parse(a) {
        assert!(!a.is_empty() && a.len() <= 255);
        assert!(a.split('.').count() <= 16);
        let own = Pattern::parse(a).expect("a topic is a pattern");
        assert!(own.matches(&topic));
        if let Ok(pattern) = Pattern::parse(b) {
            if own.is_covered_by(&pattern) {
                assert!(pattern.matches(&topic), "{pattern} covers {own} but does not match {topic}");
            }
        }
    }
    let _ = Pattern::parse(b);
});
