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
    LoginIp(IpAddr),
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

    /// Counts one request against every rule in `scope`. `None` when there
    /// are no rules.
    pub fn check(&self, scope: &'static str, rules: &[Rule], now: u64) -> Option<Decision> {
        let mut tightest: Option<Decision> = None;
        let mut allowed = true;
        for rule in rules {
            let key = Key {
                scope,
                subject: rule.subject.clone(),
                period: rule.period,
            };
            let period = u64::from(rule.period);
            let mut entry = self
                .windows
                .entry(key)
                .or_insert(Window { reset: 0, count: 0 });
            if entry.reset <= now {
                *entry = Window {
                    reset: (now / period + 1) * period,
                    count: 0,
                };
            }
            entry.count = entry.count.saturating_add(1);
            let decision = Decision {
                allowed: entry.count <= rule.limit,
                limit: rule.limit,
                remaining: rule.limit.saturating_sub(entry.count),
                reset: entry.reset,
            };
            drop(entry);
            allowed &= decision.allowed;
            let tighter = match &tightest {
                None => true,
                Some(t) => {
                    (decision.allowed, decision.remaining, decision.reset)
                        < (t.allowed, t.remaining, t.reset)
                }
            };
            if tighter {
                tightest = Some(decision);
            }
        }
        tightest.map(|d| Decision { allowed, ..d })
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
