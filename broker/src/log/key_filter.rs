//! A bounded in-memory filter over the stored idempotency keys, so that a
//! publish with a new key (nearly every keyed publish) is sequenced without
//! reading the log: only a key the filter may hold is looked up in sled.
//!
//! Bloom filters in generations: keys go into the newest; a full one
//! starts another; past [`MAX_GENERATIONS`] the two oldest are merged (a
//! union keeps every key, only raising the false-positive rate), so memory
//! stays under [`MAX_GENERATIONS`] × 1 MiB. A generation whose
//! keys have all expired is dropped once the log has swept them.
//!
//! A key is noted *before* the write that stores it, so a lookup can never
//! miss a stored key (a failed write leaves only a false positive). Until
//! the scan of the keys already stored when the log opened has finished,
//! the filter answers "maybe" for everything.

use std::{
    hash::{Hash, Hasher},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use parking_lot::Mutex;

use super::contain::contain;

/// Bits per generation (1 MiB): ~840k keys at a 1 % false-positive rate.
const GENERATION_BITS: u64 = 1 << 23;
/// Keys a generation takes before the next one starts.
const GENERATION_KEYS: usize = 840_000;
/// Generations kept before the oldest are merged.
const MAX_GENERATIONS: usize = 16;
/// Bits set per key.
const PROBES: u64 = 7;

struct Generation {
    bits: Vec<u64>,
    keys: usize,
    /// The latest expiry of a key in it.
    max_expires: u64,
}

impl Generation {
    fn new() -> Self {
        Generation {
            bits: vec![0; (GENERATION_BITS / 64) as usize],
            keys: 0,
            max_expires: 0,
        }
    }

    fn insert(&mut self, probes: &Probes, expires_at: u64) {
        for bit in probes.bits() {
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        self.keys += 1;
        self.max_expires = self.max_expires.max(expires_at);
    }

    fn may_contain(&self, probes: &Probes) -> bool {
        probes
            .bits()
            .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    fn absorb(&mut self, other: Generation) {
        for (a, b) in self.bits.iter_mut().zip(other.bits) {
            *a |= b;
        }
        self.keys += other.keys;
        self.max_expires = self.max_expires.max(other.max_expires);
    }
}

/// The bit positions of one key (double hashing over one 64-bit hash).
struct Probes(u64, u64);

impl Probes {
    fn of(key: &[u8]) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let h = hasher.finish();
        Probes(h & 0xffff_ffff, (h >> 32) | 1)
    }

    fn bits(&self) -> impl Iterator<Item = u64> + '_ {
        (0..PROBES).map(|i| (self.0.wrapping_add(i.wrapping_mul(self.1))) % GENERATION_BITS)
    }
}

/// The filter (see the module doc).
pub(super) struct KeyFilter {
    generations: Mutex<Vec<Generation>>,
    /// Every key stored before the log opened has been noted.
    complete: AtomicBool,
    /// Keys a generation takes before the next one starts.
    generation_keys: usize,
}

impl Default for KeyFilter {
    fn default() -> Self {
        Self::with_generation_keys(GENERATION_KEYS)
    }
}

impl KeyFilter {
    fn with_generation_keys(generation_keys: usize) -> Self {
        KeyFilter {
            generations: Mutex::new(Vec::new()),
            complete: AtomicBool::new(false),
            generation_keys,
        }
    }

    /// A filter that a background thread fills with the idempotency
    /// records stored in `tree` (`i` keys); until it is done, every lookup
    /// reads sled.
    pub(super) fn filled_from(tree: sled::Tree) -> std::io::Result<Arc<Self>> {
        let filter = Arc::new(Self::default());
        let filling = filter.clone();
        std::thread::Builder::new()
            .name("herald-keyscan".into())
            .spawn(move || {
                let scanned = contain(|| -> Result<(), sled::Error> {
                    for item in tree.scan_prefix(b"i") {
                        let (key, value) = item?;
                        // The body's expiry (a damaged one only keeps the
                        // key in the filter for longer).
                        let expires = value.get(16..24).map_or(u64::MAX, |b| {
                            u64::from_be_bytes(b.try_into().expect("8 bytes"))
                        });
                        filling.note(&key, expires);
                    }
                    Ok(())
                });
                if matches!(scanned, Ok(Ok(()))) {
                    filling.mark_complete();
                }
            })?;
        Ok(filter)
    }

    /// Notes a stored idempotency record's sled key, expiring at `expires_at`.
    pub(super) fn note(&self, key: &[u8], expires_at: u64) {
        let probes = Probes::of(key);
        let mut generations = self.generations.lock();
        if generations
            .last()
            .is_none_or(|g| g.keys >= self.generation_keys)
        {
            generations.push(Generation::new());
        }
        if generations.len() > MAX_GENERATIONS {
            let oldest = generations.remove(0);
            generations[0].absorb(oldest);
        }
        generations
            .last_mut()
            .expect("a generation")
            .insert(&probes, expires_at);
    }

    /// `false` only when no record with this sled key is stored.
    pub(super) fn may_contain(&self, key: &[u8]) -> bool {
        if !self.complete.load(Ordering::Acquire) {
            return true;
        }
        let probes = Probes::of(key);
        self.generations
            .lock()
            .iter()
            .any(|g| g.may_contain(&probes))
    }

    /// The keys stored at open have all been noted.
    fn mark_complete(&self) {
        self.complete.store(true, Ordering::Release);
    }

    /// Drops generations whose keys all expired before `now` (call after
    /// the log removed those records).
    pub(super) fn prune(&self, now: u64) {
        self.generations.lock().retain(|g| g.max_expires >= now);
    }

    /// Whether the keys stored at open have all been noted.
    #[cfg(test)]
    pub(super) fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// Generations held (for tests).
    #[cfg(test)]
    fn generations(&self) -> usize {
        self.generations.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Vec<u8> {
        format!("iorders.eu\0key-{i}").into_bytes()
    }

    #[test]
    fn answers_maybe_until_complete_then_never_misses_a_noted_key() {
        let filter = KeyFilter::default();
        assert!(filter.may_contain(&key(1)), "incomplete: maybe");
        for i in 0..10_000 {
            filter.note(&key(i), 100);
        }
        filter.mark_complete();
        assert!((0..10_000).all(|i| filter.may_contain(&key(i))));
        let false_positives = (10_000..110_000)
            .filter(|&i| filter.may_contain(&key(i)))
            .count();
        assert!(false_positives < 100, "{false_positives} of 100k");
    }

    #[test]
    fn full_generations_roll_over_and_merge_without_losing_keys() {
        let per_generation = 1000;
        let filter = KeyFilter::with_generation_keys(per_generation);
        filter.mark_complete();
        let total = per_generation * (MAX_GENERATIONS + 2) + 5;
        for i in 0..total {
            filter.note(&key(i), i as u64);
        }
        assert_eq!(filter.generations(), MAX_GENERATIONS);
        assert!((0..total).all(|i| filter.may_contain(&key(i))));
        // Expired generations go, the rest stay.
        let now = (per_generation * (MAX_GENERATIONS + 1)) as u64;
        filter.prune(now);
        assert!(filter.generations() < MAX_GENERATIONS);
        assert!((now as usize..total).all(|i| filter.may_contain(&key(i))));
        filter.prune(u64::MAX);
        assert_eq!(filter.generations(), 0);
        assert!(!filter.may_contain(&key(total - 1)));
    }
}
