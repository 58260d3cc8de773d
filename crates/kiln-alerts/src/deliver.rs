//! Delivery with retries: a failed send is retried after exponentially growing delays, up to
//! a number of attempts. Sending itself is the [`Transport`]'s (HTTP and processes live in
//! the binary).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use kiln_spec::alerting::ReceiverDecl;

use crate::dispatch::Notification;

/// What [`Transport::send`] returns.
pub type TransportFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Sends one notification to one receiver, once.
pub trait Transport: Send + Sync {
    /// Delivers it, or says why not.
    fn send<'a>(
        &'a self,
        receiver: &'a ReceiverDecl,
        notification: &'a Notification,
    ) -> TransportFuture<'a>;
}

/// Retry delays: `initial`, doubled after each failure, at most `max`, for `attempts` tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Tries in all (at least one).
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            attempts: 6,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Delivery failed on every attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{receiver}: gave up after {attempts} attempts: {last}")]
pub struct DeliveryError {
    /// The receiver's name.
    pub receiver: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub last: String,
}

/// Sends with retries; returns the number of attempts it took.
pub async fn deliver_with_retries(
    transport: &dyn Transport,
    receiver: &ReceiverDecl,
    notification: &Notification,
    backoff: Backoff,
) -> Result<u32, DeliveryError> {
    let attempts = backoff.attempts.max(1);
    let mut last = String::new();
    for n in 1..=attempts {
        match transport.send(receiver, notification).await {
            Ok(()) => return Ok(n),
            Err(why) => last = why,
        }
        if n < attempts {
            tokio::time::sleep(backoff.delay(n)).await;
        }
    }
    Err(DeliveryError {
        receiver: receiver.name.clone(),
        attempts,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::NotifyStatus;
    use kiln_spec::alerting::ReceiverKind;
    use std::sync::Mutex;

    /// Fails the first `failures` sends, recording when each send happened.
    struct Flaky {
        failures: u32,
        sends: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Transport for Flaky {
        fn send<'a>(&'a self, _: &'a ReceiverDecl, _: &'a Notification) -> TransportFuture<'a> {
            Box::pin(async move {
                let mut sends = self.sends.lock().map_err(|e| e.to_string())?;
                sends.push(tokio::time::Instant::now());
                if sends.len() as u32 <= self.failures {
                    Err(format!("attempt {} refused", sends.len()))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn fixtures() -> (ReceiverDecl, Notification) {
        (
            ReceiverDecl {
                name: "ops".into(),
                kind: ReceiverKind::Webhook {
                    url: "http://127.0.0.1:1/".into(),
                },
            },
            Notification {
                receiver: "ops".into(),
                group_key: "{}:{}".into(),
                status: NotifyStatus::Firing,
                payload: serde_json::json!({}),
            },
        )
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
            attempts: 9,
        };
        let delays: Vec<u64> = (1..=5).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(b.delay(200), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_backoff_then_succeeds_or_gives_up() {
        let (receiver, notification) = fixtures();
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            attempts: 4,
        };
        let flaky = Flaky {
            failures: 2,
            sends: Mutex::new(Vec::new()),
        };
        let started = tokio::time::Instant::now();
        assert_eq!(
            deliver_with_retries(&flaky, &receiver, &notification, backoff).await,
            Ok(3)
        );
        let offsets: Vec<u128> = flaky
            .sends
            .lock()
            .map(|s| s.iter().map(|t| (*t - started).as_millis()).collect())
            .unwrap_or_default();
        assert_eq!(offsets, [0, 100, 300]);
        let down = Flaky {
            failures: u32::MAX,
            sends: Mutex::new(Vec::new()),
        };
        let err = deliver_with_retries(&down, &receiver, &notification, backoff).await;
        assert_eq!(
            err,
            Err(DeliveryError {
                receiver: "ops".into(),
                attempts: 4,
                last: "attempt 4 refused".into()
            })
        );
    }
}
