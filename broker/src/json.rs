//! Small JSON helpers for payloads that pass through the broker untouched.

use std::borrow::Cow;

use serde_json::value::RawValue;

/// Checks that `bytes` is one JSON value and returns it compacted.
pub fn parse_data(bytes: &[u8]) -> Result<String, String> {
    let raw: &RawValue = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    check_numbers(raw.get())?;
    Ok(compact(raw.get()).into_owned())
}

/// Refuses numbers no IEEE double can hold (`1e999`): valid JSON grammar,
/// but most subscribers' parsers would turn them into infinity or fail.
pub fn check_numbers(json: &str) -> Result<(), String> {
    let bytes = json.as_bytes();
    let (mut i, mut in_string, mut escaped) = (0, false, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
        } else if b == b'"' {
            in_string = true;
            i += 1;
        } else if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < bytes.len()
                && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                i += 1;
            }
            let number = &json[start..i];
            if !number.parse::<f64>().is_ok_and(f64::is_finite) {
                return Err(format!(
                    "number {} is out of range",
                    &number[..number.len().min(32)]
                ));
            }
        } else {
            i += 1;
        }
    }
    Ok(())
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
        assert!(parse_data(b"[1e999]").is_err());
        assert!(parse_data(b"{\"a\":\"1e999\",\"b\":-2.5e3}").is_ok());
        assert!(parse_data(b"18446744073709551616000").is_ok());
        assert!(parse_data(b"{").is_err());
        assert!(parse_data(b"1 2").is_err());
        assert_eq!(string_value("hi \"x\"\n"), "\"hi \\\"x\\\"\\n\"");
    }
}
