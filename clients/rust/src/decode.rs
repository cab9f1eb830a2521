//! Decoding what the server sends, whatever its nesting.
//!
//! serde_json stops at 127 levels by default, and Herald stores payloads
//! nested up to its configured limit (at most 100 levels, plus the envelope
//! and page around them; a log written before that limit existed may hold
//! deeper ones). So the client decodes with serde_json's recursion limit
//! off, after a non-recursive scan has bounded the depth to what a 2 MiB
//! thread stack (a tokio worker's) decodes and drops safely.

use serde::de::DeserializeOwned;

use crate::Error;

/// Deepest JSON document the client decodes; deeper is an
/// [`Error::Protocol`], never a crash or a silent skip.
pub const MAX_DEPTH: usize = 512;

/// Decodes one JSON document of any depth up to [`MAX_DEPTH`].
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let depth = depth(bytes);
    if depth > MAX_DEPTH {
        return Err(Error::Protocol(format!(
            "JSON nested {depth} levels deep; this client reads at most {MAX_DEPTH}"
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let value = T::deserialize(&mut de).map_err(|e| Error::Protocol(e.to_string()))?;
    de.end().map_err(|e| Error::Protocol(e.to_string()))?;
    Ok(value)
}

/// Decodes one JSON text; see [`from_slice`].
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    from_slice(text.as_bytes())
}

/// Deepest nesting of arrays and objects in `bytes`, brackets inside
/// strings excluded; counted in one pass without recursion.
fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    fn envelope(depth: usize) -> String {
        format!(
            r#"{{"topic":"a","seq":1,"ts":2,"data":{}"x[{{"{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    }

    #[test]
    fn depth_ignores_strings() {
        assert_eq!(depth(br#"{"a":"[[[{{","b":[[]]}"#), 3);
        assert_eq!(depth(b"1"), 0);
    }

    #[test]
    fn decodes_up_to_the_bound_on_a_worker_sized_stack() {
        // A tokio worker's stack: the subscription task decodes on one.
        let decoded = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let deepest = envelope(MAX_DEPTH - 1);
                let m: Message = from_str(&deepest).expect("decodes");
                let too_deep = from_str::<Message>(&envelope(MAX_DEPTH));
                (m, too_deep.map(|_| ()))
            })
            .unwrap()
            .join()
            .expect("no stack overflow");
        let (m, too_deep) = decoded;
        assert_eq!(m.seq, 1);
        let mut v = &m.data;
        let mut levels = 0;
        while let Some(inner) = v.as_array().and_then(|a| a.first()) {
            v = inner;
            levels += 1;
        }
        assert_eq!((levels, v.as_str()), (MAX_DEPTH - 1, Some("x[{")));
        match too_deep {
            Err(Error::Protocol(text)) => assert!(text.contains("512"), "{text}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            from_str::<Message>("{\"topic\":"),
            Err(Error::Protocol(_))
        ));
    }
}
