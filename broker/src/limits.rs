//! Admission limits: connections (total and per client IP) and publish
//! rates (per connection and per API key, token buckets → 429).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Instant,
};

use parking_lot::Mutex;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes `n` tokens if available.
    pub fn try_take(&mut self, n: f64) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        // A request larger than the burst is let through once the bucket is
        // full and leaves it in debt: big batches are slowed, never refused
        // forever.
        if self.tokens >= n.min(self.burst) {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// The process's soft open-file limit (`RLIMIT_NOFILE`); `None` when it
/// is unlimited or cannot be read.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Descriptors kept out of the connection cap: the log's files, NATS,
/// sockets accepted but not yet admitted, REST requests and `/healthz`
/// need some when every connection slot is taken. A tenth of the limit,
/// at least 64.
pub fn fd_reserve(open_files: u64) -> u64 {
    (open_files / 10).max(64)
}

/// The connection cap in force: `max_connections` (0: none), lowered to
/// [`fd_reserve`] below the open-file limit so that a full node refuses
/// with 503 before it runs out of descriptors. Never 0 (which would mean
/// unlimited).
pub fn connection_cap(max_connections: usize, open_files: Option<u64>) -> usize {
    let by_fds = open_files.map(|n| n.saturating_sub(fd_reserve(n)).max(1));
    match (max_connections, by_fds) {
        (0, None) => 0,
        (0, Some(fds)) => fds as usize,
        (n, None) => n,
        (n, Some(fds)) => n.min(fds as usize),
    }
}

/// Why a connection or publish was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The node is full (503).
    NodeFull(usize),
    /// This client IP has too many connections (429).
    IpFull(usize),
}

/// Counts open connections, in total and per client IP.
#[derive(Debug, Default)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionLimits {
    /// Limits of `max_total` connections and `max_per_ip` per IP (0: none).
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip,
            ..Default::default()
        })
    }

    /// Admits a connection from `ip`; the permit releases it when dropped.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnectionPermit, Refusal> {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        if self.max_total > 0 && total > self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::NodeFull(self.max_total));
        }
        if let (Some(ip), true) = (ip, self.max_per_ip > 0) {
            let mut per_ip = self.per_ip.lock();
            let count = per_ip.entry(ip).or_default();
            if *count >= self.max_per_ip {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::IpFull(self.max_per_ip));
            }
            *count += 1;
        }
        Ok(ConnectionPermit {
            limits: self.clone(),
            ip: ip.filter(|_| self.max_per_ip > 0),
        })
    }
}

/// One admitted connection.
#[derive(Debug)]
pub struct ConnectionPermit {
    limits: Arc<ConnectionLimits>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = self.limits.per_ip.lock();
            if let Some(count) = per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// Token buckets by key (API keys, client identities).
#[derive(Debug)]
pub struct KeyedRates {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

impl KeyedRates {
    /// `rate` per second with bursts of `burst`; `rate == 0` means unlimited.
    pub fn new(rate: f64, burst: f64) -> Self {
        KeyedRates {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n` tokens from `key`'s bucket.
    pub fn try_take(&self, key: &str, n: f64) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            buckets.retain(|_, b| b.tokens < b.burst);
        }
        buckets
            .entry(key.to_string())
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst))
            .try_take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill() {
        let mut b = TokenBucket::new(1000.0, 2.0);
        assert!(b.try_take(1.0) && b.try_take(1.0));
        assert!(!b.try_take(1.0));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(b.try_take(1.0));
        let mut big = TokenBucket::new(1000.0, 2.0);
        assert!(
            big.try_take(10.0),
            "a full bucket lets a big request through"
        );
        assert!(!big.try_take(1.0), "and is then in debt");
        std::thread::sleep(std::time::Duration::from_millis(15));
        assert!(big.try_take(1.0));
    }

    #[test]
    fn the_cap_leaves_descriptors_in_reserve() {
        assert_eq!(connection_cap(18_000, Some(20_000)), 18_000);
        assert_eq!(connection_cap(50_000, Some(20_000)), 18_000);
        assert_eq!(connection_cap(0, Some(256)), 192);
        assert_eq!(connection_cap(3, Some(256)), 3);
        assert_eq!(connection_cap(100, Some(10)), 1);
        assert_eq!(connection_cap(100, None), 100);
        assert_eq!(connection_cap(0, None), 0);
        assert!(open_file_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn connection_limits() {
        let limits = ConnectionLimits::new(3, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let a = limits.admit(Some(ip)).unwrap();
        let _b = limits.admit(Some(ip)).unwrap();
        assert_eq!(limits.admit(Some(ip)).unwrap_err(), Refusal::IpFull(2));
        let _c = limits.admit(Some(other)).unwrap();
        assert_eq!(limits.admit(Some(other)).unwrap_err(), Refusal::NodeFull(3));
        drop(a);
        assert!(limits.admit(Some(ip)).is_ok());
    }
}
