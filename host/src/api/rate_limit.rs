//! Fixed-window request counters.
//!
//! Fixed windows (aligned to the minute or hour) because the documents' headers
//! promise a limit, a remaining count and a reset time, which a fixed window
//! states exactly. A request is checked against every window that applies to
//! it (per user per minute, per user per hour, per organization per minute);
//! it passes only if all have room, and the headers report the tightest one.
//!
//! Counters live in this process. With several nodes each node counts on its
//! own, so the effective limit is the configured one times the node count.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use dashmap::DashMap;

use crate::config::Limits;

/// Whose requests a window counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    User(i64),
    ApiKey(i64),
    Ip(IpAddr),
    Org(i64),
    /// Login attempts naming this (lower-cased) username or email.
    LoginName(String),
    /// Login attempts on this account, by whichever name: its username and
    /// its email share one window.
    LoginAccount(i64),
    LoginIp(IpAddr),
}

impl Subject {
    /// An anonymous client, by address. IPv6 clients are grouped by /64,
    /// the smallest block a single subscriber usually holds.
    pub fn ip(ip: IpAddr) -> Subject {
        Subject::Ip(network_of(ip))
    }

    pub fn login_ip(ip: IpAddr) -> Subject {
        Subject::LoginIp(network_of(ip))
    }
}

/// The network a client address stands for: itself for IPv4, its /64 for
/// IPv6.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                v6.to_bits() & !((1u128 << 64) - 1),
            )),
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    scope: &'static str,
    subject: Subject,
    period: u32,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    /// Unix second the window ends.
    reset: u64,
    count: u32,
}

/// The outcome of one check, ready to become headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds.
    pub reset: u64,
}

impl Decision {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset));
    }

    /// Seconds until the window resets, at least 1.
    pub fn retry_after(&self, now: u64) -> u64 {
        self.reset.saturating_sub(now).max(1)
    }
}

/// One window to check: its limit and length in seconds.
#[derive(Debug, Clone)]
pub struct Rule {
    pub subject: Subject,
    pub limit: u32,
    pub period: u32,
}

impl Rule {
    /// The rules a dialect's [`Limits`] imply for `subject` (and `org`).
    pub fn for_limits(limits: &Limits, subject: Subject, org: Option<i64>) -> Vec<Rule> {
        let mut rules = Vec::with_capacity(3);
        if limits.per_minute > 0 {
            rules.push(Rule {
                subject: subject.clone(),
                limit: limits.per_minute,
                period: 60,
            });
        }
        if limits.per_hour > 0 {
            rules.push(Rule {
                subject,
                limit: limits.per_hour,
                period: 3600,
            });
        }
        if let Some(org) = org
            && limits.org_per_minute > 0
        {
            rules.push(Rule {
                subject: Subject::Org(org),
                limit: limits.org_per_minute,
                period: 60,
            });
        }
        rules
    }
}

#[derive(Default)]
pub struct RateLimiter {
    windows: DashMap<Key, Window>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl RateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one request against every rule in `scope` and counts it in
    /// all of them only if every window has room: a refused request uses up
    /// nothing, so one client hammering its own limit cannot exhaust the
    /// organization's window or its own hourly one. `None` when there are no
    /// rules. (Two concurrent requests may both pass the check for the last
    /// slot; windows are approximate by one request per racing caller.)
    pub fn check(&self, scope: &'static str, rules: &[Rule], now: u64) -> Option<Decision> {
        let key = |rule: &Rule| Key {
            scope,
            subject: rule.subject.clone(),
            period: rule.period,
        };
        let mut seen = Vec::with_capacity(rules.len());
        for rule in rules {
            let period = u64::from(rule.period);
            let mut entry = self
                .windows
                .entry(key(rule))
                .or_insert(Window { reset: 0, count: 0 });
            if entry.reset <= now {
                *entry = Window {
                    reset: (now / period + 1) * period,
                    count: 0,
                };
            }
            seen.push(*entry);
        }
        let allowed = rules
            .iter()
            .zip(&seen)
            .all(|(rule, w)| w.count < rule.limit);
        if allowed {
            for (rule, w) in rules.iter().zip(seen.iter_mut()) {
                if let Some(mut entry) = self.windows.get_mut(&key(rule)) {
                    entry.count = entry.count.saturating_add(1);
                    *w = *entry;
                }
            }
        }
        rules
            .iter()
            .zip(&seen)
            .map(|(rule, w)| Decision {
                allowed,
                limit: rule.limit,
                remaining: rule.limit.saturating_sub(w.count),
                reset: w.reset,
            })
            .min_by_key(|d| (d.remaining, d.reset))
    }

    /// Whether a request under `rules` would be refused now, without counting
    /// it: the refusing window's decision, if any.
    pub fn refusal(&self, scope: &'static str, rules: &[Rule], now: u64) -> Option<Decision> {
        rules.iter().find_map(|rule| {
            let key = Key {
                scope,
                subject: rule.subject.clone(),
                period: rule.period,
            };
            let w = *self.windows.get(&key)?;
            (w.reset > now && w.count >= rule.limit).then_some(Decision {
                allowed: false,
                limit: rule.limit,
                remaining: 0,
                reset: w.reset,
            })
        })
    }

    /// Drops windows that have ended; run periodically.
    pub fn sweep(&self, now: u64) {
        self.windows.retain(|_, w| w.reset > now);
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(per_minute: u32, per_hour: u32, org: u32) -> Vec<Rule> {
        Rule::for_limits(
            &Limits {
                per_minute,
                per_hour,
                org_per_minute: org,
            },
            Subject::User(1),
            Some(9),
        )
    }

    #[test]
    fn counts_down_then_refuses_then_resets() {
        let limiter = RateLimiter::new();
        let now = 1_000_040; // 20 s into a minute
        let r = rules(3, 0, 0);
        for remaining in [2, 1, 0] {
            let d = limiter.check("t", &r, now).expect("rule");
            assert!(d.allowed);
            assert_eq!(d.remaining, remaining);
            assert_eq!(d.reset, 1_000_080);
        }
        let d = limiter.check("t", &r, now).expect("rule");
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        let d = limiter.check("t", &r, d.reset).expect("rule");
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
    }

    #[test]
    fn tightest_window_is_reported() {
        let limiter = RateLimiter::new();
        let d = limiter
            .check("t", &rules(100, 2, 0), 3600 * 10)
            .expect("rule");
        assert_eq!((d.limit, d.remaining), (2, 1));
        limiter.check("t", &rules(100, 2, 0), 3600 * 10);
        let d = limiter
            .check("t", &rules(100, 2, 0), 3600 * 10)
            .expect("rule");
        assert!(!d.allowed);
        assert_eq!(d.limit, 2);
    }

    #[test]
    fn refusal_peeks_without_counting() {
        let limiter = RateLimiter::new();
        let r = rules(1, 0, 0);
        assert!(limiter.refusal("t", &r, 0).is_none());
        assert!(limiter.check("t", &r, 0).expect("rule").allowed);
        assert!(limiter.refusal("t", &r, 0).is_some());
        assert!(
            limiter.refusal("t", &r, 60).is_none(),
            "a new window has room"
        );
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(Subject::ip(a), Subject::ip(b));
        assert_ne!(Subject::ip(a), Subject::ip(c));
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(Subject::ip(v4), Subject::Ip(v4));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(Subject::ip(mapped), Subject::Ip(v4));
    }

    #[test]
    fn refused_requests_use_up_nothing() {
        let limiter = RateLimiter::new();
        let limits = Limits {
            per_minute: 2,
            per_hour: 0,
            org_per_minute: 3,
        };
        let greedy = Rule::for_limits(&limits, Subject::User(1), Some(5));
        let polite = Rule::for_limits(&limits, Subject::User(2), Some(5));
        for _ in 0..10 {
            limiter.check("t", &greedy, 60);
        }
        // The greedy user got 2 through; the organization has room for 1 more.
        let d = limiter.check("t", &polite, 60).expect("rule");
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining), (3, 0));
    }

    #[test]
    fn org_window_is_shared_between_users() {
        let limiter = RateLimiter::new();
        let limits = Limits {
            per_minute: 10,
            per_hour: 0,
            org_per_minute: 2,
        };
        let a = Rule::for_limits(&limits, Subject::User(1), Some(5));
        let b = Rule::for_limits(&limits, Subject::User(2), Some(5));
        assert!(limiter.check("t", &a, 60).expect("rule").allowed);
        assert!(limiter.check("t", &b, 60).expect("rule").allowed);
        assert!(!limiter.check("t", &a, 60).expect("rule").allowed);
    }

    #[test]
    fn scopes_are_separate_and_sweep_forgets() {
        let limiter = RateLimiter::new();
        let r = rules(1, 0, 0);
        assert!(limiter.check("a", &r, 0).expect("rule").allowed);
        assert!(limiter.check("b", &r, 0).expect("rule").allowed);
        assert_eq!(limiter.len(), 2);
        limiter.sweep(60);
        assert!(limiter.is_empty());
        assert!(limiter.check("x", &[], 0).is_none());
    }
}
