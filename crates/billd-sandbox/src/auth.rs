//! Access tokens: issue, reuse, last-minute extension and expiry (the clock, in milliseconds, is passed in).

use std::time::Duration;

/// The one live access token (the real API also hands every caller the same token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub value: String,
    /// UNIX milliseconds.
    pub expires_at_ms: i64,
}

/// Issues tokens of lifetime `ttl` and answers whether a presented one is valid.
#[derive(Debug)]
pub(crate) struct TokenStore {
    ttl_ms: i64,
    current: Option<Token>,
}

impl TokenStore {
    pub(crate) fn new(ttl: Duration) -> TokenStore {
        TokenStore { ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4).max(1), current: None }
    }

    /// Window before expiry in which `getToken` extends the token: 1 minute at the default 30-minute lifetime.
    fn window_ms(&self) -> i64 {
        self.ttl_ms / 30
    }

    /// Extension granted in that window: 5 minutes at the default 30-minute lifetime.
    fn extension_ms(&self) -> i64 {
        self.ttl_ms / 6
    }

    /// `POST /users/getToken` with good credentials: the same token while it is valid
    /// (extended when asked in its last minute), a new one otherwise.
    pub(crate) fn issue(&mut self, now_ms: i64, new_value: impl FnOnce() -> String) -> Token {
        let (window, extension) = (self.window_ms(), self.extension_ms());
        match &mut self.current {
            Some(t) if now_ms < t.expires_at_ms => {
                if t.expires_at_ms - now_ms <= window {
                    t.expires_at_ms += extension;
                }
                t.clone()
            }
            _ => {
                let t = Token { value: new_value(), expires_at_ms: now_ms.saturating_add(self.ttl_ms) };
                self.current = Some(t.clone());
                t
            }
        }
    }

    /// True when `presented` is the current token and it has not expired.
    pub(crate) fn is_valid(&self, now_ms: i64, presented: &str) -> bool {
        self.current.as_ref().is_some_and(|t| now_ms < t.expires_at_ms && t.value == presented)
    }
}

/// The token in an `Authorization` header: `Bearer X` or the bare `X` (both are in use).
pub(crate) fn token_from_authorization(header: &str) -> &str {
    let h = header.trim();
    match h.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => h[7..].trim(),
        _ => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn store() -> TokenStore {
        TokenStore::new(Duration::from_secs(30 * 60))
    }

    #[test]
    fn same_token_while_valid_then_a_new_one() {
        let mut s = store();
        let a = s.issue(0, || "a".into());
        assert_eq!(a.expires_at_ms, 30 * MIN);
        let again = s.issue(10 * MIN, || "b".into());
        assert_eq!(again, a, "same token and same expiry before the last minute");
        assert!(s.is_valid(30 * MIN - 1, "a"));
        assert!(!s.is_valid(30 * MIN, "a"), "expired at expires_at");
        let b = s.issue(30 * MIN, || "b".into());
        assert_eq!(b.value, "b");
        assert_eq!(b.expires_at_ms, 60 * MIN);
        assert!(!s.is_valid(30 * MIN + 1, "a"));
    }

    #[test]
    fn asking_in_the_last_minute_adds_five_minutes_once() {
        let mut s = store();
        s.issue(0, || "a".into());
        let t = s.issue(29 * MIN + 30_000, || "x".into());
        assert_eq!((t.value.as_str(), t.expires_at_ms), ("a", 35 * MIN));
        let t2 = s.issue(29 * MIN + 40_000, || "x".into());
        assert_eq!(t2.expires_at_ms, 35 * MIN, "no second extension outside the last minute");
        assert!(s.is_valid(34 * MIN, "a"));
    }

    #[test]
    fn authorization_forms() {
        assert_eq!(token_from_authorization("Bearer abc"), "abc");
        assert_eq!(token_from_authorization("bearer  abc "), "abc");
        assert_eq!(token_from_authorization("abc"), "abc");
    }
}
