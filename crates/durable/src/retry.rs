//! Retry with exponential backoff, jitter and a cap (seed 004's `retry_agent_call`).
//!
//! A [`RetryPolicy`] is leasehold_core's [`Backoff`] schedule plus an attempt budget and an
//! optional jitter seed. [`retry`] runs any async call under a policy, retrying only errors
//! that say they are transient ([`Retryable`]) and logging a tracing event per attempt.
//! [`RetryPolicies`] picks a policy per kind, with a per-item override from the item's input.
//!
//! Inside the queue, a handler's retryable error returns the item to pending with a later
//! `run_at`: its kind's backoff, else the node's. These policies are for calls inside a
//! handler; [`DurableError::into_job_error_with`] hands a policy's next delay to the queue as
//! well, so an item's `input.retry` shapes its queue retries too.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use leasehold_core::{Backoff, Item, StoreError};
use leasehold_runtime::JobError;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::DurableError;

/// Whether an error is worth another attempt.
pub trait Retryable {
    /// `true` for timeouts, rate limits, a failing backend; `false` for permanent errors.
    fn is_transient(&self) -> bool;
}

impl Retryable for DurableError {
    fn is_transient(&self) -> bool {
        DurableError::is_transient(self)
    }
}

impl Retryable for JobError {
    fn is_transient(&self) -> bool {
        !self.is_permanent()
    }
}

impl Retryable for StoreError {
    fn is_transient(&self) -> bool {
        self.is_backend_failure()
    }
}

/// How a call is retried: the backoff schedule, the attempt budget and the jitter's seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// The delays between attempts.
    pub backoff: Backoff,
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Seeds the jitter, for reproducible runs; `None` draws from the thread's generator.
    pub jitter_seed: Option<u64>,
}

impl Default for RetryPolicy {
    /// Seed 004's defaults: 3 attempts, 1 s → 2 s → 4 s …, capped at 30 s, up to 10 % jitter.
    fn default() -> Self {
        RetryPolicy {
            backoff: Backoff {
                initial: Duration::from_secs(1),
                factor: 2.0,
                max: Duration::from_secs(30),
                jitter: 0.1,
            },
            max_attempts: 3,
            jitter_seed: None,
        }
    }
}

impl RetryPolicy {
    /// A policy of `max_attempts` with `backoff`.
    pub fn new(backoff: Backoff, max_attempts: u32) -> Self {
        RetryPolicy {
            backoff,
            max_attempts,
            jitter_seed: None,
        }
    }

    /// The same policy with reproducible jitter.
    pub fn seeded(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// Refuses a zero budget or an invalid backoff.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("retry max_attempts must be at least 1".into());
        }
        self.backoff.validate()
    }

    /// The delay after failed attempt `n` (1-based) with jitter `sample` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, sample: f64) -> Duration {
        self.backoff.delay(attempt, sample)
    }

    /// The delays this policy waits between its attempts, without jitter.
    pub fn schedule(&self) -> Vec<Duration> {
        (1..self.max_attempts).map(|n| self.delay(n, 0.0)).collect()
    }
}

impl DurableError {
    /// [`into_job_error`](DurableError::into_job_error), and a transient error asks the queue
    /// to retry `item` after `policy`'s delay for the item's attempt
    /// ([`JobError::retry_after`]) instead of the kind's or node's backoff. Use it with the
    /// policy [`RetryPolicies::for_item`] gave, so the item's `input.retry` applies to its
    /// queue retries as well. The jitter is reproducible when the policy is
    /// [`seeded`](RetryPolicy::seeded) (from the seed, the item id and the attempt).
    ///
    /// Only the delay is passed on: how many times the queue retries is the item's own
    /// `max_attempts`, not the policy's (which counts the calls inside one attempt).
    ///
    /// In a handler:
    ///
    /// ```no_run
    /// use leasehold_durable::{retry, DurableError, RetryPolicies, RetryPolicy};
    /// use leasehold_runtime::{JobContext, JobError};
    /// # async fn call_model() -> Result<String, DurableError> { Ok(String::new()) }
    /// async fn handle(ctx: JobContext, policies: RetryPolicies) -> Result<String, JobError> {
    ///     let policy = policies
    ///         .for_item(ctx.item())
    ///         .map_err(DurableError::into_job_error)?;
    ///     retry(&policy, call_model)
    ///         .await
    ///         // Spent or not, a transient failure comes back after the policy's next delay.
    ///         .map_err(|e| e.into_job_error_with(&policy, ctx.item()))
    /// }
    /// ```
    pub fn into_job_error_with(self, policy: &RetryPolicy, item: &Item) -> JobError {
        if self.is_permanent() {
            return JobError::permanent(self);
        }
        let attempt = item.attempts.max(1);
        let sample = match policy.jitter_seed {
            // `as u64` keeps every bit of the id: only the sample's spread matters.
            Some(seed) => Backoff::seeded_sample(seed, item.id.0 as u64, attempt),
            None => rand::random::<f64>(),
        };
        JobError::retryable(self).retry_after(policy.delay(attempt, sample))
    }
}

/// One failed attempt, as reported to [`retry_with`]'s observer.
#[derive(Debug)]
pub struct FailedAttempt<'a, E> {
    /// Which attempt failed (1-based).
    pub attempt: u32,
    /// The policy's budget.
    pub max_attempts: u32,
    /// The wait before the next attempt; `None` when there is none (permanent or spent).
    pub next_delay: Option<Duration>,
    /// The error.
    pub error: &'a E,
}

/// Runs `op` until it succeeds, fails permanently, or the policy's attempts are spent; returns
/// its last result. Sleeps on tokio's clock, so paused-time tests run instantly.
///
/// Every attempt emits a tracing event: `attempt` (debug) as it starts, then `attempt failed;
/// retrying` (warn), `attempt failed; retries spent` (error), `attempt failed permanently; not
/// retrying` (warn) or, after earlier failures, `call succeeded after retrying` (info).
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use leasehold_durable::{retry, DurableError, RetryPolicy};
/// let mut calls = 0;
/// let out: Result<u32, DurableError> = retry(&RetryPolicy::default(), || {
///     calls += 1;
///     let n = calls;
///     async move { if n < 3 { Err(DurableError::transient("rate limited")) } else { Ok(n) } }
/// })
/// .await;
/// assert_eq!(out.unwrap(), 3);
/// # }
/// ```
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, op: F) -> Result<T, E>
where
    E: Retryable + fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_with(policy, E::is_transient, |_| {}, op).await
}

/// [`retry`] with the transient/permanent judgement given as `is_transient` and an observer
/// called on every failed attempt (to count retries).
pub async fn retry_with<T, E, F, Fut, C, O>(
    policy: &RetryPolicy,
    is_transient: C,
    mut observe: O,
    mut op: F,
) -> Result<T, E>
where
    E: fmt::Display,
    C: Fn(&E) -> bool,
    O: FnMut(&FailedAttempt<'_, E>),
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let max = policy.max_attempts.max(1);
    let mut rng = match policy.jitter_seed {
        Some(seed) => rand::rngs::SmallRng::seed_from_u64(seed),
        None => rand::rngs::SmallRng::from_rng(&mut rand::rng()),
    };
    let mut attempt = 1;
    loop {
        tracing::debug!(attempt, max_attempts = max, "attempt");
        match op().await {
            Ok(v) => {
                if attempt > 1 {
                    tracing::info!(attempt, max_attempts = max, "call succeeded after retrying");
                }
                return Ok(v);
            }
            Err(e) => {
                let transient = is_transient(&e);
                let next_delay = (transient && attempt < max)
                    .then(|| policy.delay(attempt, rng.random::<f64>()));
                observe(&FailedAttempt {
                    attempt,
                    max_attempts: max,
                    next_delay,
                    error: &e,
                });
                match next_delay {
                    Some(delay) => {
                        tracing::warn!(attempt, max_attempts = max, delay_ms = delay.as_millis() as u64, error = %e, "attempt failed; retrying");
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                    }
                    None => {
                        if transient {
                            tracing::error!(attempt, max_attempts = max, error = %e, "attempt failed; retries spent");
                        } else {
                            tracing::warn!(attempt, error = %e, "attempt failed permanently; not retrying");
                        }
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Retry policies per kind, with a per-item override.
///
/// An item overrides its kind's policy with an object under `"retry"` in its input:
/// `{"retry": {"max_attempts": 5, "initial_ms": 200, "max_ms": 5000}}` (each field optional).
#[derive(Clone, Debug, Default)]
pub struct RetryPolicies {
    default: RetryPolicy,
    per_kind: HashMap<String, RetryPolicy>,
}

/// The per-item override, as read from an item's input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemRetry {
    max_attempts: Option<u32>,
    initial_ms: Option<u64>,
    max_ms: Option<u64>,
}

impl RetryPolicies {
    /// Every kind uses `default` unless given its own.
    pub fn new(default: RetryPolicy) -> Result<Self, DurableError> {
        default.validate().map_err(DurableError::InvalidInput)?;
        Ok(RetryPolicies {
            default,
            per_kind: HashMap::new(),
        })
    }

    /// Gives `kind` its own policy; refuses an invalid one.
    pub fn kind(
        mut self,
        kind: impl Into<String>,
        policy: RetryPolicy,
    ) -> Result<Self, DurableError> {
        let kind = kind.into();
        policy.validate().map_err(|why| {
            DurableError::InvalidInput(format!("retry policy of kind {kind}: {why}"))
        })?;
        self.per_kind.insert(kind, policy);
        Ok(self)
    }

    /// The policy of `kind`.
    pub fn for_kind(&self, kind: &str) -> &RetryPolicy {
        self.per_kind.get(kind).unwrap_or(&self.default)
    }

    /// The policy for one item: its kind's, overridden by its input's `"retry"` object. A
    /// malformed override is refused with a message naming the field.
    pub fn for_item(&self, item: &Item) -> Result<RetryPolicy, DurableError> {
        let mut policy = self.for_kind(&item.kind).clone();
        let Some(raw) = item.input.get("retry") else {
            return Ok(policy);
        };
        let o: ItemRetry = serde_json::from_value(raw.clone()).map_err(|e| {
            DurableError::InvalidInput(format!("item {}: input.retry: {e}", item.id))
        })?;
        if let Some(n) = o.max_attempts {
            policy.max_attempts = n;
        }
        if let Some(ms) = o.initial_ms {
            policy.backoff.initial = Duration::from_millis(ms);
        }
        if let Some(ms) = o.max_ms {
            policy.backoff.max = Duration::from_millis(ms);
        }
        policy.validate().map_err(|why| {
            DurableError::InvalidInput(format!("item {}: input.retry: {why}", item.id))
        })?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_core::{ItemId, ItemStatus, Timestamp};

    fn item(id: i64, attempts: u32) -> Item {
        Item {
            id: ItemId(id),
            kind: "llm".into(),
            input: serde_json::json!({}),
            status: ItemStatus::InProgress,
            attempts,
            max_attempts: 5,
            priority: 0,
            run_at: Timestamp(0),
            group_id: None,
            owner: None,
            owner_node: None,
            owner_incarnation: None,
            epoch: 1,
            lease_expires_at: None,
            last_heartbeat_at: None,
            output: None,
            error: None,
            progress: None,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            finished_at: None,
            timeout: None,
            releases: 0,
            unique_key: None,
            started_at: None,
            cancel_requested_at: None,
            decision: None,
        }
    }

    fn unjittered() -> RetryPolicy {
        RetryPolicy::new(
            Backoff {
                initial: Duration::from_millis(200),
                factor: 3.0,
                max: Duration::from_secs(5),
                jitter: 0.0,
            },
            4,
        )
    }

    #[test]
    fn a_transient_error_asks_the_queue_for_the_policys_delay_of_this_attempt() {
        let p = unjittered();
        let got: Vec<_> = (1..=4)
            .map(|n| {
                DurableError::transient("429")
                    .into_job_error_with(&p, &item(7, n))
                    .requested_delay()
            })
            .collect();
        let want = [200, 600, 1800, 5000].map(|ms| Some(Duration::from_millis(ms)));
        assert_eq!(got, want);
        let e = DurableError::transient("429").into_job_error_with(&p, &item(7, 1));
        assert!(!e.is_permanent());
        assert!(e.to_string().contains("429"), "{e}");
    }

    #[test]
    fn a_permanent_error_is_dead_lettered_and_asks_for_no_delay() {
        let e =
            DurableError::permanent("bad domain").into_job_error_with(&unjittered(), &item(7, 1));
        assert!(e.is_permanent());
        assert_eq!(e.requested_delay(), None);
        let refused =
            DurableError::InvalidInput("x".into()).into_job_error_with(&unjittered(), &item(7, 1));
        assert!(refused.is_permanent());
    }

    #[test]
    fn a_seeded_policys_queue_delay_is_reproducible_and_jittered_within_its_fraction() {
        let mut p = unjittered().seeded(11);
        p.backoff.jitter = 0.5;
        let delay = |id| {
            DurableError::transient("timeout")
                .into_job_error_with(&p, &item(id, 2))
                .requested_delay()
                .expect("transient")
        };
        assert_eq!(delay(1), delay(1));
        let want = p.delay(2, Backoff::seeded_sample(11, 1, 2));
        assert_eq!(delay(1), want);
        assert!(delay(1) <= Duration::from_millis(600) && delay(1) >= Duration::from_millis(300));
        assert_ne!(delay(1), delay(2), "items scatter");
    }
}
