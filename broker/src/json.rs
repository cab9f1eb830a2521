//! Small JSON helpers for payloads that pass through the broker untouched.

use std::borrow::Cow;

use serde_json::value::RawValue;

/// Nesting a payload gets unless `limits.max_json_depth` says otherwise.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// The most `limits.max_json_depth` may allow. Herald's clients read deeper
/// payloads, but third-party subscribers mostly parse recursively with a
/// fixed budget: serde_json's default allows 127 levels, and a long-poll or
/// history page wraps `data` in three more (`{"messages":[{..,"data":..}]}`).
pub const HARD_MAX_DEPTH: usize = 100;

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// Not one JSON value.
    #[error("{0}")]
    Syntax(String),
    /// Arrays and objects nested deeper than the limit.
    #[error("JSON nests deeper than the limit of {limit} levels")]
    TooDeep {
        /// The limit in force.
        limit: usize,
    },
    /// A number no IEEE double can hold.
    #[error("number {0} is out of range")]
    Number(String),
}

/// Checks that `bytes` is one JSON value nested at most `max_depth` levels
/// and returns it compacted.
pub fn parse_data(bytes: &[u8], max_depth: usize) -> Result<String, DataError> {
    // RawValue validates the grammar without recursing (serde_json skips
    // nested values with an explicit stack), so any depth is safe here.
    let raw: &RawValue =
        serde_json::from_slice(bytes).map_err(|e| DataError::Syntax(e.to_string()))?;
    check_data(raw.get(), max_depth)?;
    Ok(compact(raw.get()).into_owned())
}

/// Checks valid JSON text in one pass, without recursion: arrays and
/// objects nest at most `max_depth` levels (a scalar is depth 0, `[]` is 1),
/// and every number fits an IEEE double (`1e999` is valid grammar, but most
/// subscribers' parsers would turn it into infinity or fail).
pub fn check_data(json: &str, max_depth: usize) -> Result<(), DataError> {
    let bytes = json.as_bytes();
    let (mut i, mut depth, mut in_string, mut escaped) = (0, 0usize, false, false);
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
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(DataError::TooDeep { limit: max_depth });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let number = &json[start..i];
                if !number.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(DataError::Number(
                        number[..number.len().min(32)].to_string(),
                    ));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
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
        let parse = |b: &[u8]| parse_data(b, DEFAULT_MAX_DEPTH);
        assert_eq!(parse(b" 12 ").unwrap(), "12");
        assert!(matches!(parse(b"[1e999]"), Err(DataError::Number(_))));
        assert!(parse(b"{\"a\":\"1e999\",\"b\":-2.5e3}").is_ok());
        assert!(parse(b"18446744073709551616000").is_ok());
        assert!(matches!(parse(b"{"), Err(DataError::Syntax(_))));
        assert!(parse(b"1 2").is_err());
        assert_eq!(string_value("hi \"x\"\n"), "\"hi \\\"x\\\"\\n\"");
    }

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_is_counted_without_recursion() {
        assert_eq!(check_data("1", 0), Ok(()));
        assert_eq!(check_data("[]", 0), Err(DataError::TooDeep { limit: 0 }));
        assert_eq!(check_data(&nested(64), 64), Ok(()));
        assert_eq!(
            check_data(&nested(65), 64),
            Err(DataError::TooDeep { limit: 64 })
        );
        // Brackets inside strings, and escaped quotes, are not structure.
        let text = format!(r#"{{"a":"{}\"[[[","b":[{{"c":[]}}]}}"#, "[".repeat(100));
        assert_eq!(check_data(&text, 4), Ok(()));
        assert_eq!(check_data(&text, 3), Err(DataError::TooDeep { limit: 3 }));
        // Far deeper than any stack could recurse: refused, not a crash.
        let deep = nested(1_000_000);
        assert_eq!(
            parse_data(deep.as_bytes(), HARD_MAX_DEPTH),
            Err(DataError::TooDeep {
                limit: HARD_MAX_DEPTH
            })
        );
        assert_eq!(
            parse_data(nested(HARD_MAX_DEPTH).as_bytes(), HARD_MAX_DEPTH).unwrap(),
            nested(HARD_MAX_DEPTH)
        );
    }
}
