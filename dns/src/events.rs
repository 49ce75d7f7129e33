//! Audit events of the session resolver (`dns_query`, `dns_redirect`), one per question, and the
//! per-session token bucket that bounds their rate. Suppressed events are counted and the count
//! rides on the next event that gets through, so the audit log shows that something was dropped.

use std::{net::SocketAddr, time::Instant};

use policies::Decision;

/// Which event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsEventKind {
    /// `dns_query`: a question answered, refused or forwarded.
    Query,
    /// `dns_redirect`: a question answered by a `dns_redirects` rule.
    Redirect,
}

impl DnsEventKind {
    /// The event type name used in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            DnsEventKind::Query => "dns_query",
            DnsEventKind::Redirect => "dns_redirect",
        }
    }
}

/// How the question reached the session resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// DNS over UDP.
    Udp,
    /// DNS over TCP (length-prefixed).
    Tcp,
}

/// One audit event for one question.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsEvent {
    /// `dns_query` or `dns_redirect`.
    pub kind: DnsEventKind,
    /// The normalised question name (or the raw name when it is not a valid host name).
    pub name: String,
    /// The question type (`A`, `AAAA`, `MX`, ...).
    pub qtype: String,
    /// The policy decision, naming its rule.
    pub decision: Decision,
    /// The answers given, in presentation form (addresses, or `TYPE data` for other records).
    pub answers: Vec<String>,
    /// The response code sent (`NOERROR`, `REFUSED`, ...).
    pub rcode: String,
    /// The transport the question came over.
    pub transport: Transport,
    /// The upstream asked, when the question was forwarded.
    pub upstream: Option<SocketAddr>,
    /// Events suppressed by the rate limit since the previous emitted one.
    pub suppressed: u64,
}

/// A token bucket: `rate` events per second, bursts of up to `burst`.
#[derive(Debug, Clone)]
pub struct EventLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    suppressed: u64,
}

impl EventLimiter {
    /// A full bucket at `now`.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        EventLimiter { rate: f64::from(rate_per_sec), burst, tokens: burst, last: now, suppressed: 0 }
    }

    /// Take a token at `now`: `Some(n)` when the event may be emitted, `n` being the number
    /// suppressed since the last emitted one (reset here); `None` when it is suppressed.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_bursts_refills_and_reports_suppressed() {
        let t0 = Instant::now();
        let mut b = EventLimiter::new(10, 3, t0);
        assert_eq!((0..3).map(|_| b.admit(t0)).collect::<Vec<_>>(), vec![Some(0); 3]);
        assert_eq!(b.admit(t0), None);
        assert_eq!(b.admit(t0), None);
        assert_eq!(b.admit(t0 + Duration::from_millis(100)), Some(2));
        assert_eq!(b.admit(t0 + Duration::from_millis(100)), None);
    }
}
