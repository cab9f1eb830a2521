//! Verified records: how every value in the log tree is sealed and checked.
//!
//! A stored value is `body ‖ crc32c(key ‖ body)` (4 bytes, big-endian).
//! Covering the key as well as the body means a value that ends up under
//! another key (another topic or seq) fails as surely as a flipped bit.
//! Every read through [`super::MessageLog`] opens values with [`open`], so
//! damage surfaces as an error naming the record, never as a silent skip.
//!
//! This is the only module that knows the seal; a different value layout
//! (several messages per value, say) changes what `body` holds, not this.

/// Bytes the seal adds to a body.
pub(super) const SEAL_LEN: usize = 4;

/// Why a stored value failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum RecordError {
    /// Too short to hold a seal.
    #[error("value of {0} bytes is too short to be a record")]
    Short(usize),
    /// The checksum does not match the key and body.
    #[error("checksum mismatch")]
    Checksum,
}

fn checksum(key: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(key), body)
}

/// `body` sealed for storage under `key`.
pub(super) fn seal(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(body.len() + SEAL_LEN);
    value.extend_from_slice(body);
    value.extend_from_slice(&checksum(key, body).to_be_bytes());
    value
}

/// Seals `body` in place (no copy of a large body).
pub(super) fn seal_owned(key: &[u8], mut body: Vec<u8>) -> Vec<u8> {
    let crc = checksum(key, &body);
    body.extend_from_slice(&crc.to_be_bytes());
    body
}

/// The body of a value stored under `key`, once its seal checks out.
pub(super) fn open<'a>(key: &[u8], value: &'a [u8]) -> Result<&'a [u8], RecordError> {
    let split = value
        .len()
        .checked_sub(SEAL_LEN)
        .ok_or(RecordError::Short(value.len()))?;
    let (body, seal) = value.split_at(split);
    let stored = u32::from_be_bytes([seal[0], seal[1], seal[2], seal[3]]);
    if stored == checksum(key, body) {
        Ok(body)
    } else {
        Err(RecordError::Checksum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_under_its_key_only() {
        let value = seal(b"ma\0k", b"body");
        assert_eq!(open(b"ma\0k", &value), Ok(&b"body"[..]));
        assert_eq!(open(b"mb\0k", &value), Err(RecordError::Checksum));
        assert_eq!(open(b"k", b"abc"), Err(RecordError::Short(3)));
        assert_eq!(seal_owned(b"k", b"{}".to_vec()), seal(b"k", b"{}"));
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let value = seal(b"mtopic\0\0\0\0\0\0\0\0\x05", b"\0\0\0\x01{\"a\":1}");
        for byte in 0..value.len() {
            for bit in 0..8 {
                let mut damaged = value.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    open(b"mtopic\0\0\0\0\0\0\0\0\x05", &damaged).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }
}
