//! Token usage and the per-session limits: requests and tokens per minute over a sliding
//! window, cumulative budgets (session, UTC day, UTC month). Pure over the times passed in, so
//! the verdicts are tested without sockets or sleeps.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use policies::model::llm::{BudgetAction, Budgets, RateLimits};

/// Tokens of one answer, normalised across providers: `input` counts every prompt token,
/// cached ones included; `cache_read` and `cache_write` are the cached parts of `input`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens, cache included.
    pub input: u64,
    /// Generated tokens (reasoning included).
    pub output: u64,
    /// Prompt tokens read from the provider's cache.
    pub cache_read: u64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write: u64,
}

impl Usage {
    /// Input plus output: what the token limits count.
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }

    /// Field-wise maximum: streamed usage is cumulative (Anthropic, Gemini) or final (OpenAI),
    /// so the largest value seen is the answer's.
    pub fn merge_max(&mut self, other: &Usage) {
        self.input = self.input.max(other.input);
        self.output = self.output.max(other.output);
        self.cache_read = self.cache_read.max(other.cache_read);
        self.cache_write = self.cache_write.max(other.cache_write);
    }
}

/// Session totals so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Requests admitted.
    pub requests: u64,
    /// Sum of usage over answered requests (fallback charges included in `input`).
    pub usage: Usage,
}

/// Whether a request may go upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; `audit` names a budget that is spent but only audited.
    Admit {
        /// The budget rule that would have refused, in `audit` mode.
        audit: Option<&'static str>,
    },
    /// Refuse with 429.
    Refuse {
        /// The limit that refused (`rate_limits.requests_per_minute`, …).
        rule: &'static str,
        /// Seconds until a retry can succeed (at least 1).
        retry_after: u64,
    },
}

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct State {
    requests: VecDeque<Instant>,
    tokens: VecDeque<(Instant, u64)>,
    totals: Totals,
    /// (UTC day number, tokens that day).
    day: (u64, u64),
    /// (months since 1970, tokens that month).
    month: (u64, u64),
}

/// Limits and counters of one session.
#[derive(Debug)]
pub struct Meter {
    limits: RateLimits,
    budgets: Budgets,
    fallback: u64,
    state: Mutex<State>,
}

impl Meter {
    /// A meter enforcing `limits` and `budgets`; `fallback` tokens are charged for a
    /// successful answer without usage while any token limit is on.
    pub fn new(limits: RateLimits, budgets: Budgets, fallback: u64) -> Meter {
        Meter { limits, budgets, fallback, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides on one request at `now` (`wall` for the calendar budgets) and counts it when
    /// admitted.
    pub fn admit(&self, now: Instant, wall: SystemTime) -> Admission {
        let mut s = self.lock();
        prune(&mut s, now);
        roll_calendar(&mut s, wall);
        if let Some(rpm) = self.limits.requests_per_minute
            && s.requests.len() as u64 >= u64::from(rpm)
        {
            let retry = s.requests.front().map(|t| wait_until(*t + WINDOW, now)).unwrap_or(1);
            return Admission::Refuse { rule: "rate_limits.requests_per_minute", retry_after: retry };
        }
        if let Some(tpm) = self.limits.tokens_per_minute {
            let mut used: u64 = s.tokens.iter().map(|(_, n)| n).sum();
            if used >= tpm {
                // The window frees tokens as its oldest entries age out; wait until enough have.
                let mut retry = 1;
                for (t, n) in &s.tokens {
                    used -= n;
                    retry = wait_until(*t + WINDOW, now);
                    if used < tpm {
                        break;
                    }
                }
                return Admission::Refuse { rule: "rate_limits.tokens_per_minute", retry_after: retry };
            }
        }
        let mut audit = None;
        if let Some((rule, retry)) = self.spent_budget(&s, wall) {
            if self.budgets.action == BudgetAction::Deny {
                return Admission::Refuse { rule, retry_after: retry };
            }
            audit = Some(rule);
        }
        s.requests.push_back(now);
        s.totals.requests += 1;
        Admission::Admit { audit }
    }

    fn spent_budget(&self, s: &State, wall: SystemTime) -> Option<(&'static str, u64)> {
        let secs = wall.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if self.budgets.per_session_tokens.is_some_and(|b| s.totals.usage.total() >= b) {
            // A session budget never refills; a day is as good a hint as any for a client.
            return Some(("budgets.per_session_tokens", 86_400));
        }
        if self.budgets.daily_tokens.is_some_and(|b| s.day.1 >= b) {
            return Some(("budgets.daily_tokens", (86_400 - secs % 86_400).max(1)));
        }
        if self.budgets.monthly_tokens.is_some_and(|b| s.month.1 >= b) {
            let (y, m) = year_month(secs / 86_400);
            let next = if m == 12 { days_from_civil(y + 1, 1) } else { days_from_civil(y, m + 1) };
            return Some(("budgets.monthly_tokens", (next * 86_400).saturating_sub(secs).max(1)));
        }
        None
    }

    /// Whether answers without usage are charged the fallback.
    fn limited(&self) -> bool {
        self.limits.tokens_per_minute.is_some()
            || self.budgets.per_session_tokens.is_some()
            || self.budgets.daily_tokens.is_some()
            || self.budgets.monthly_tokens.is_some()
    }

    /// Records an answer's usage; `None` on a successful answer charges the fallback when a
    /// token limit is on. Returns what was charged.
    pub fn record(
        &self,
        usage: Option<Usage>,
        success: bool,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Usage> {
        let charged = match usage {
            Some(u) => u,
            None if success && self.limited() => Usage { input: self.fallback, ..Usage::default() },
            None => return None,
        };
        let mut s = self.lock();
        roll_calendar(&mut s, wall);
        let n = charged.total();
        s.tokens.push_back((now, n));
        let t = &mut s.totals.usage;
        t.input = t.input.saturating_add(charged.input);
        t.output = t.output.saturating_add(charged.output);
        t.cache_read = t.cache_read.saturating_add(charged.cache_read);
        t.cache_write = t.cache_write.saturating_add(charged.cache_write);
        s.day.1 = s.day.1.saturating_add(n);
        s.month.1 = s.month.1.saturating_add(n);
        Some(charged)
    }

    /// The session's totals.
    pub fn totals(&self) -> Totals {
        self.lock().totals
    }
}

fn prune(s: &mut State, now: Instant) {
    while s.requests.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
        s.requests.pop_front();
    }
    while s.tokens.front().is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW) {
        s.tokens.pop_front();
    }
}

fn roll_calendar(s: &mut State, wall: SystemTime) {
    let day = wall.duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0);
    if s.day.0 != day {
        s.day = (day, 0);
    }
    let (y, m) = year_month(day);
    let month = (y as u64).saturating_mul(12) + m as u64;
    if s.month.0 != month {
        s.month = (month, 0);
    }
}

fn wait_until(at: Instant, now: Instant) -> u64 {
    let d = at.saturating_duration_since(now);
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// Civil (year, month) of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn year_month(days: u64) -> (i64, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m)
}

/// Day number of the first of month `m` in year `y`.
fn days_from_civil(y: i64, m: u32) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(rpm: Option<u32>, tpm: Option<u64>, session: Option<u64>) -> Meter {
        Meter::new(
            RateLimits { requests_per_minute: rpm, tokens_per_minute: tpm },
            Budgets { per_session_tokens: session, ..Budgets::default() },
            200,
        )
    }

    #[test]
    fn requests_per_minute_slide() {
        let m = meter(Some(2), None, None);
        let (t0, w) = (Instant::now(), SystemTime::now());
        assert_eq!(m.admit(t0, w), Admission::Admit { audit: None });
        assert_eq!(m.admit(t0 + Duration::from_secs(10), w), Admission::Admit { audit: None });
        assert_eq!(
            m.admit(t0 + Duration::from_secs(20), w),
            Admission::Refuse { rule: "rate_limits.requests_per_minute", retry_after: 40 }
        );
        assert_eq!(m.admit(t0 + Duration::from_secs(60), w), Admission::Admit { audit: None });
        assert_eq!(m.totals().requests, 3);
    }

    #[test]
    fn tokens_per_minute_and_fallback() {
        let m = meter(None, Some(1000), None);
        let (t0, w) = (Instant::now(), SystemTime::now());
        assert!(matches!(m.admit(t0, w), Admission::Admit { .. }));
        m.record(Some(Usage { input: 700, output: 400, ..Usage::default() }), true, t0, w);
        let r = m.admit(t0 + Duration::from_secs(30), w);
        assert_eq!(r, Admission::Refuse { rule: "rate_limits.tokens_per_minute", retry_after: 30 });
        assert!(matches!(m.admit(t0 + Duration::from_secs(61), w), Admission::Admit { .. }));
        let charged = m.record(None, true, t0 + Duration::from_secs(61), w).unwrap();
        assert_eq!(charged.total(), 200);
        assert_eq!(m.record(None, false, t0, w), None);
    }

    #[test]
    fn session_budget_and_audit() {
        let m = meter(None, None, Some(100));
        let (t0, w) = (Instant::now(), SystemTime::now());
        assert!(matches!(m.admit(t0, w), Admission::Admit { .. }));
        m.record(Some(Usage { input: 60, output: 40, ..Usage::default() }), true, t0, w);
        assert!(matches!(m.admit(t0, w), Admission::Refuse { rule: "budgets.per_session_tokens", .. }));
        let audit = Meter::new(
            RateLimits::default(),
            Budgets { per_session_tokens: Some(1), action: BudgetAction::Audit, ..Budgets::default() },
            0,
        );
        audit.record(Some(Usage { input: 5, ..Usage::default() }), true, t0, w);
        assert_eq!(audit.admit(t0, w), Admission::Admit { audit: Some("budgets.per_session_tokens") });
    }

    #[test]
    fn calendar() {
        // 2024-02-29 is day 19782; 2024-03-01 is day 19783; 2025-01-01 is day 20089.
        assert_eq!(year_month(19_782), (2024, 2));
        assert_eq!(days_from_civil(2024, 3), 19_783);
        assert_eq!(days_from_civil(2025, 1), 20_089);
        assert_eq!(year_month(0), (1970, 1));
    }
}
