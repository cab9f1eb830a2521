//! Small JSON helpers for payloads that pass through the broker untouched.

use std::borrow::Cow;

use serde_json::value::RawValue;

/// Checks that `bytes` is one JSON value and returns it compacted.
pub fn parse_data(bytes: &[u8]) -> Result<String, serde_json::Error> {
    let raw: &RawValue = serde_json::from_slice(bytes)?;
    Ok(compact(raw.get()).into_owned())
}

/// Encodes arbitrary text as a JSON string value.
pub fn string_value(text: &str) -> String {
    serde_json::to_string(text).expect("strings always serialize")
}

/// Removes insignificant whitespace from valid JSON text.
///
/// Envelopes must be single-line so that SSE `data:` lines and
/// newline-delimited output stay one event per message. Strings never contain
/// raw newlines in valid JSON, so only whitespace between tokens is removed.
pub fn compact(json: &str) -> Cow<'_, str> {
    let bytes = json.as_bytes();
    if !bytes
        .iter()
        .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
    {
        return Cow::Borrowed(json);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            out.push(b);
        }
    }
    Cow::Owned(String::from_utf8(out).expect("removing ASCII whitespace keeps UTF-8 valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_outside_strings_only() {
        assert_eq!(
            compact("{ \"a b\" :\n [1, \"x\\\" y\"] }"),
            "{\"a b\":[1,\"x\\\" y\"]}"
        );
        assert!(matches!(compact("{\"a\":1}"), Cow::Borrowed(_)));
        assert_eq!(parse_data(b" 12 ").unwrap(), "12");
        assert!(parse_data(b"{").is_err());
        assert!(parse_data(b"1 2").is_err());
        assert_eq!(string_value("hi \"x\"\n"), "\"hi \\\"x\\\"\\n\"");
    }
}
