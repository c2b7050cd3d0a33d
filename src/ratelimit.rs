//! Token buckets for the API's rate limits (Kazoo's `kz_buckets`): one bucket per key (a
//! client address, a client address's logins, an account), each refilling at a steady rate up
//! to its burst. Pure: the caller passes the time, so behaviour is the same in tests as in
//! production, and no timer or task runs.
//!
//! The table is bounded. A bucket that has refilled to its burst is indistinguishable from a
//! new one and is dropped by the periodic sweep; when the table is full of buckets still
//! refilling (a flood from many addresses), the tenth closest to full is dropped, so that
//! clients which really spent their tokens keep their debt longest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How often idle buckets (refilled to their burst) are swept out of the table.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The size and refill speed of one kind of bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens a full bucket holds: the largest burst of requests.
    pub burst: f64,
    /// Tokens added per second (the sustained request rate).
    pub per_sec: f64,
}

/// What a bucket is for, with the key it is counted under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// Every request from one client address (an IPv6 client by its /64).
    Address(IpAddr),
    /// `user_auth`/`api_auth` attempts from one client address.
    Login(IpAddr),
    /// Every authenticated request of one account (the token's account).
    Account(String),
}

impl Key {
    /// The key of a client address: IPv4-mapped IPv6 addresses count as IPv4, and an IPv6
    /// client is counted by its /64 (one host usually holds a whole /64).
    pub fn client(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            },
            v4 => v4,
        }
    }
}

/// The rates of the three kinds of bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub address: Rate,
    pub login: Rate,
    pub account: Rate,
}

impl Rates {
    fn of(&self, key: &Key) -> Rate {
        match key {
            Key::Address(_) => self.address,
            Key::Login(_) => self.login,
            Key::Account(_) => self.account,
        }
    }
}

/// A request the bucket cannot pay for now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refused {
    /// When the bucket will hold enough tokens for the same request.
    pub retry_after: Duration,
}

impl Refused {
    /// [`Refused::retry_after`] in whole seconds, rounded up, at least 1 (for `Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The tokens at `now`, refilled since the last update (never above the burst).
    fn level(&self, rate: Rate, now: Instant) -> f64 {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + secs * rate.per_sec).min(rate.burst)
    }
}

/// The buckets, bounded to `max` entries.
#[derive(Debug)]
pub struct Buckets {
    rates: Rates,
    max: usize,
    table: HashMap<Key, Bucket>,
    swept: Instant,
}

impl Buckets {
    /// An empty table of at most `max` buckets (at least 1).
    pub fn new(rates: Rates, max: usize, now: Instant) -> Self {
        Self {
            rates,
            max: max.max(1),
            table: HashMap::new(),
            swept: now,
        }
    }

    /// Takes `cost` tokens from `key`'s bucket, or says when they will be there. A refused
    /// request takes nothing. A cost above the burst is charged as the whole burst.
    pub fn take(&mut self, key: Key, cost: f64, now: Instant) -> Result<(), Refused> {
        let rate = self.rates.of(&key);
        let cost = cost.min(rate.burst);
        if now.saturating_duration_since(self.swept) >= SWEEP_EVERY {
            self.sweep(now);
        }
        if !self.table.contains_key(&key) && self.table.len() >= self.max {
            self.make_room(now);
        }
        let bucket = self.table.entry(key).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        });
        let level = bucket.level(rate, now);
        if level >= cost {
            *bucket = Bucket {
                tokens: level - cost,
                at: now,
            };
            return Ok(());
        }
        let wait = if rate.per_sec > 0.0 {
            (cost - level) / rate.per_sec
        } else {
            f64::from(u32::MAX)
        };
        Err(Refused {
            retry_after: Duration::from_secs_f64(wait),
        })
    }

    /// Takes `tokens` from `key`'s bucket unconditionally, below zero if need be: the price
    /// of a request found out after it ran (a failed login). The debt is paid back by the
    /// refill before the bucket serves again.
    pub fn charge(&mut self, key: Key, tokens: f64, now: Instant) {
        let rate = self.rates.of(&key);
        let bucket = self.table.entry(key).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        });
        *bucket = Bucket {
            tokens: bucket.level(rate, now) - tokens,
            at: now,
        };
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Tokens in `key`'s bucket at `now` (a full bucket when it has none).
    pub fn level(&self, key: &Key, now: Instant) -> f64 {
        let rate = self.rates.of(key);
        self.table
            .get(key)
            .map_or(rate.burst, |b| b.level(rate, now))
    }

    /// Drops every bucket that has refilled to its burst.
    fn sweep(&mut self, now: Instant) {
        let rates = self.rates;
        self.table
            .retain(|k, b| b.level(rates.of(k), now) < rates.of(k).burst);
        self.swept = now;
    }

    /// Makes room for a new bucket: the idle ones go, and if the table is still full, the
    /// tenth of the buckets closest to full.
    fn make_room(&mut self, now: Instant) {
        self.sweep(now);
        if self.table.len() < self.max {
            return;
        }
        let rates = self.rates;
        let mut fullness: Vec<(f64, Key)> = self
            .table
            .iter()
            .map(|(k, b)| {
                let rate = rates.of(k);
                (b.level(rate, now) / rate.burst, k.clone())
            })
            .collect();
        let evict = (self.max / 10).clamp(1, fullness.len());
        fullness.select_nth_unstable_by(evict - 1, |a, b| b.0.total_cmp(&a.0));
        for (_, key) in fullness.into_iter().take(evict) {
            self.table.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: Rates = Rates {
        address: Rate {
            burst: 10.0,
            per_sec: 2.0,
        },
        login: Rate {
            burst: 20.0,
            per_sec: 0.5,
        },
        account: Rate {
            burst: 5.0,
            per_sec: 1.0,
        },
    };

    fn addr(s: &str) -> Key {
        Key::Address(Key::client(s.parse().unwrap()))
    }

    fn secs(t: f64) -> Duration {
        Duration::from_secs_f64(t)
    }

    #[test]
    fn a_burst_passes_then_the_refill_rate_and_retry_after_says_when() {
        let t0 = Instant::now();
        let mut b = Buckets::new(RATES, 100, t0);
        for _ in 0..10 {
            b.take(addr("192.0.2.1"), 1.0, t0).unwrap();
        }
        let refused = b.take(addr("192.0.2.1"), 1.0, t0).unwrap_err();
        // 2 tokens per second: one token in half a second, announced as 1 s.
        assert_eq!(refused.retry_after, secs(0.5));
        assert_eq!(refused.retry_after_secs(), 1);
        // Refused requests cost nothing: half a second later exactly one passes.
        b.take(addr("192.0.2.1"), 1.0, t0 + secs(0.25)).unwrap_err();
        b.take(addr("192.0.2.1"), 1.0, t0 + secs(0.5)).unwrap();
        b.take(addr("192.0.2.1"), 1.0, t0 + secs(0.5)).unwrap_err();
        // Three seconds later, six more; never more than the burst however long the pause.
        let t = t0 + secs(3.5);
        for _ in 0..6 {
            b.take(addr("192.0.2.1"), 1.0, t).unwrap();
        }
        b.take(addr("192.0.2.1"), 1.0, t).unwrap_err();
        assert_eq!(b.level(&addr("192.0.2.1"), t0 + secs(3600.0)), 10.0);
    }

    #[test]
    fn keys_are_independent_and_costs_weigh() {
        let t0 = Instant::now();
        let mut b = Buckets::new(RATES, 100, t0);
        for _ in 0..5 {
            b.take(Key::Account("a".into()), 1.0, t0).unwrap();
        }
        assert!(b.take(Key::Account("a".into()), 1.0, t0).is_err());
        b.take(Key::Account("b".into()), 1.0, t0).unwrap();
        b.take(addr("192.0.2.1"), 1.0, t0).unwrap();
        // A cost of 8 at 0.5 token/s: after two 12 are left, then 4; the next needs 4 more
        // tokens, 8 s.
        let login = Key::Login(Key::client("192.0.2.1".parse().unwrap()));
        b.take(login.clone(), 8.0, t0).unwrap();
        b.take(login.clone(), 8.0, t0).unwrap();
        let refused = b.take(login.clone(), 8.0, t0).unwrap_err();
        assert_eq!(refused.retry_after_secs(), 8);
        // A price found out afterwards is charged even into debt, and the debt is waited out:
        // 4 - 10 = -6 tokens; one token is 14 s away.
        b.charge(login.clone(), 10.0, t0);
        assert_eq!(b.level(&login, t0), -6.0);
        let refused = b.take(login.clone(), 1.0, t0).unwrap_err();
        assert_eq!(refused.retry_after_secs(), 14);
        b.take(login.clone(), 1.0, t0 + secs(14.0)).unwrap();
        // A cost above the burst is charged as the burst (it can pass once full).
        b.take(Key::Account("c".into()), 50.0, t0).unwrap();
        assert!(b.take(Key::Account("c".into()), 1.0, t0).is_err());
    }

    #[test]
    fn ipv6_clients_count_by_slash_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            Key::client("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            Key::client("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        let t0 = Instant::now();
        let mut b = Buckets::new(RATES, 100, t0);
        for i in 0..10 {
            b.take(addr(&format!("2001:db8:1:2::{i}")), 1.0, t0)
                .unwrap();
        }
        assert!(b.take(addr("2001:db8:1:2:ffff::9"), 1.0, t0).is_err());
        b.take(addr("2001:db8:1:3::1"), 1.0, t0).unwrap();
    }

    #[test]
    fn idle_buckets_are_swept_and_a_flood_of_addresses_stays_bounded() {
        let t0 = Instant::now();
        let mut b = Buckets::new(RATES, 1000, t0);
        // One heavy client drains its bucket…
        for _ in 0..10 {
            b.take(addr("198.51.100.1"), 1.0, t0).unwrap();
        }
        // …then a flood from 100 000 distinct addresses, one request each.
        for i in 0..100_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            b.take(Key::Address(ip.into()), 1.0, t0 + secs(0.001))
                .unwrap();
            assert!(b.len() <= 1000);
        }
        // The heavy client's debt survived the flood (its bucket is the emptiest).
        assert!(b.take(addr("198.51.100.1"), 1.0, t0 + secs(0.001)).is_err());
        // Buckets that refilled are gone after the next sweep.
        let later = t0 + SWEEP_EVERY + secs(10.0);
        b.take(addr("198.51.100.2"), 1.0, later).unwrap();
        assert_eq!(b.len(), 1, "only the bucket just used is left");
    }
}
