//! The hooks around host maintenance, as configured per deployment
//! ([`crate::config::MaintenanceConfig`]):
//!
//! - **Alertmanager silences** (API v2): `POST /api/v2/silences` with the host's matchers for
//!   the maintenance window when a drain starts, `DELETE /api/v2/silence/{id}` on resume.
//! - **Webhooks**: every state change ([`MaintenanceEvent`]) as a JSON body, signed with
//!   HMAC-SHA256 over `"<timestamp>.<body>"` (header `X-Aetherv-Signature: sha256=<hex>`,
//!   `X-Aetherv-Timestamp: <unix seconds>`, `X-Aetherv-Event: <kind>`), to every URL. Each URL
//!   has its own worker and queue, so events reach it in order; a failed delivery is retried
//!   with exponential backoff (0.5 s doubling, at most 30 s apart, 8 attempts) and never holds
//!   up the maintenance.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aetherv_jobs::maintenance::{HookFuture, MaintenanceEvent, MaintenanceHooks};
use aetherv_winrm::Secret;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::config::{AlertmanagerConfig, MaintenanceConfig};

/// Header with the signature (`sha256=<hex>`).
pub const SIGNATURE_HEADER: &str = "x-aetherv-signature";
/// Header with the signing time (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-aetherv-timestamp";
/// Header with the event kind.
pub const EVENT_HEADER: &str = "x-aetherv-event";

/// Delivery attempts of one event to one URL.
const ATTEMPTS: u32 = 8;
/// Events waiting per URL; more are dropped with a warning.
const QUEUE: usize = 1024;

/// The signature of `body` sent at `timestamp` (Unix seconds) with `key`: lowercase hex of
/// HMAC-SHA256 over `"<timestamp>.<body>"`.
#[must_use]
pub fn sign(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The backoff before attempt `n` (from 1): 0.5 s doubling, at most 30 s.
#[must_use]
pub fn backoff(attempt: u32) -> Duration {
    let millis = 500u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(16));
    Duration::from_millis(millis.min(30_000))
}

/// The deployment's maintenance hooks.
pub struct Hooks {
    client: reqwest::Client,
    alertmanager: Option<AlertmanagerConfig>,
    webhooks: Vec<mpsc::Sender<MaintenanceEvent>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("alertmanager", &self.alertmanager.as_ref().map(|a| &a.url))
            .field("webhooks", &self.webhooks.len())
            .finish()
    }
}

impl Hooks {
    /// The hooks of `config`; webhook workers start on the current runtime and end with
    /// `stop`.
    ///
    /// # Errors
    ///
    /// A message when the HTTP client cannot be built.
    pub fn start(
        config: &MaintenanceConfig,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<Arc<Self>, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the hooks' HTTP client: {e}"))?;
        let key: Arc<Secret> = Arc::new(config.webhook_secret.clone().unwrap_or_default());
        let webhooks = config
            .webhook_urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(
                    client.clone(),
                    url.clone(),
                    Arc::clone(&key),
                    rx,
                    stop.clone(),
                ));
                tx
            })
            .collect();
        Ok(Arc::new(Self {
            client,
            alertmanager: config.alertmanager.clone(),
            webhooks,
        }))
    }
}

/// One URL's worker: delivers its events in order, each retried with backoff.
async fn deliver(
    client: reqwest::Client,
    url: String,
    key: Arc<Secret>,
    mut events: mpsc::Receiver<MaintenanceEvent>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.recv() => match event {
                Some(e) => e,
                None => return,
            },
        };
        let body = match serde_json::to_vec(&event) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%url, error = %e, "a maintenance event could not be serialised");
                continue;
            }
        };
        let mut attempt = 1;
        loop {
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let signature = sign(key.expose().as_bytes(), timestamp, &body);
            let sent = client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, format!("sha256={signature}"))
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(EVENT_HEADER, event.event.as_str())
                .body(body.clone())
                .send()
                .await;
            let why = match sent {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => e.to_string(),
            };
            if attempt >= ATTEMPTS {
                tracing::warn!(%url, event = event.event.as_str(), host = %event.host, error = %why,
                    "maintenance webhook not delivered after {ATTEMPTS} attempts");
                break;
            }
            tracing::debug!(%url, attempt, error = %why, "maintenance webhook failed; retrying");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff(attempt)) => {}
            }
            attempt += 1;
        }
    }
}

impl MaintenanceHooks for Hooks {
    fn event(&self, event: MaintenanceEvent) {
        for tx in &self.webhooks {
            if tx.try_send(event.clone()).is_err() {
                tracing::warn!(event = event.event.as_str(), host = %event.host,
                    "a maintenance webhook queue is full; the event is dropped for it");
            }
        }
    }

    fn silence<'a>(
        &'a self,
        host: &'a str,
        comment: String,
        created_by: String,
    ) -> HookFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let Some(am) = &self.alertmanager else {
                return Ok(None);
            };
            let now = SystemTime::now();
            let body = json!({
                "matchers": am.matchers.iter().map(|m| json!({
                    "name": m.name,
                    "value": m.value_for(host),
                    "isRegex": m.is_regex,
                    "isEqual": true,
                })).collect::<Vec<_>>(),
                "startsAt": aetherv_jobs::rfc3339(now),
                "endsAt": aetherv_jobs::rfc3339(now + am.window),
                "createdBy": created_by,
                "comment": comment,
            });
            let response = self
                .client
                .post(format!("{}/api/v2/silences", am.url))
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("Alertmanager {}: {e}", am.url))?;
            let status = response.status();
            let answer: serde_json::Value = response
                .json()
                .await
                .map_err(|e| format!("Alertmanager {} answered {status}: {e}", am.url))?;
            if !status.is_success() {
                return Err(format!(
                    "Alertmanager {} answered {status}: {answer}",
                    am.url
                ));
            }
            answer["silenceID"]
                .as_str()
                .map(|id| Some(id.to_owned()))
                .ok_or_else(|| format!("Alertmanager {} answered without a silenceID", am.url))
        })
    }

    fn expire<'a>(&'a self, id: &'a str) -> HookFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let Some(am) = &self.alertmanager else {
                return Ok(());
            };
            let id: String = id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let response = self
                .client
                .delete(format!("{}/api/v2/silence/{id}", am.url))
                .send()
                .await
                .map_err(|e| format!("Alertmanager {}: {e}", am.url))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!(
                    "Alertmanager {} answered {} to expiring silence {id}",
                    am.url,
                    response.status()
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // RFC 4231 test case 2 checks the primitive; here the framing.
        let a = sign(b"key", 1, b"{}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, sign(b"key", 2, b"{}"));
        assert_ne!(a, sign(b"other", 1, b"{}"));
        assert_eq!(sign(b"Jefe", 0, b"what do ya want for nothing?").len(), 64);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(20), Duration::from_secs(30));
    }
}
