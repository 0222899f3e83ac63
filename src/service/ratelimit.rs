//! Token buckets for login and registration, per client address and per account.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::error::{Error, Result};

/// Token buckets, one per key: `burst` tokens, `per_minute` regained.
pub struct RateLimiter {
    burst: u32,
    per_minute: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst,
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or fails with M_LIMIT_EXCEEDED and when to retry.
    pub fn check(&self, key: &str) -> Result<()> {
        self.take(key, 1)
    }

    /// Takes `n` tokens for `key` (at most a burst), or fails with M_LIMIT_EXCEEDED.
    pub fn take(&self, key: &str, n: u32) -> Result<()> {
        let burst = f64::from(self.burst);
        let n = f64::from(n).min(burst);
        let per_sec = f64::from(self.per_minute) / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, (_, t)| t.elapsed() < Duration::from_secs(600));
        }
        let now = Instant::now();
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * per_sec).min(burst);
        *last = now;
        if *tokens >= n {
            *tokens -= n;
            Ok(())
        } else {
            let wait = if per_sec > 0.0 {
                (n - *tokens) / per_sec
            } else {
                60.0
            };
            Err(Error::limit_exceeded(Duration::from_secs_f64(
                wait.max(0.001),
            )))
        }
    }
}
