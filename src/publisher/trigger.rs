//! Sending signed triggers ("check now", [`crate::documents::trigger`]) to sites (`upkeep
//! push`) and to a mirror's leaves.

use std::time::Duration;

use serde::Serialize;

use crate::base::error::{Error, Result};
use crate::documents::manifest::SecretKey;
use crate::documents::trigger;

/// Where a trigger goes: a label for the report, the receiver's base URL, and the target
/// written in the trigger.
#[derive(Clone, Debug)]
pub struct Receiver {
    /// The name shown.
    pub label: String,
    /// Base URL (`/trigger` is added).
    pub url: Option<String>,
    /// The trigger's target (a site id, or `*`).
    pub target: String,
}

/// What one receiver answered.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// The receiver's label.
    pub label: String,
    /// The HTTP status, when it answered.
    pub status: Option<u16>,
    /// Its words, or why it could not be reached.
    pub text: String,
}

impl Answer {
    /// It took the trigger.
    pub fn started(&self) -> bool {
        self.status == Some(202)
    }
}

/// Send a signed trigger to every receiver, 32 at a time, one retry after a failure to
/// connect or a 5xx.
pub fn send_all(key: &SecretKey, to: &[Receiver]) -> Result<Vec<Answer>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::msg(e.to_string()))?;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let answers = crate::client::block_on(async {
        let tasks = to.iter().map(|r| {
            let (client, gate) = (client.clone(), gate.clone());
            let made = trigger::make(key, &r.target);
            async move {
                let _permit = gate.acquire().await;
                let mut a = Answer {
                    label: r.label.clone(),
                    status: None,
                    text: String::new(),
                };
                let Some(url) = r.url.as_deref() else {
                    a.text = "no url known: set `url` in the site's upkeep.toml (it is sent with its reports)".into();
                    return a;
                };
                let (body, sig) = match made {
                    Ok(x) => x,
                    Err(e) => {
                        a.text = e.to_string();
                        return a;
                    }
                };
                let to = format!("{}/trigger", url.trim_end_matches('/'));
                for attempt in 0..2 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    match client
                        .post(&to)
                        .header(trigger::SIGNATURE_HEADER, sig.trim())
                        .body(body.clone())
                        .send()
                        .await
                    {
                        Ok(resp) => {
                            let s = resp.status().as_u16();
                            a.status = Some(s);
                            // A site's words, for the publisher's terminal: no escapes.
                            let text = resp.text().await.unwrap_or_default();
                            a.text = crate::base::text::one_line(text.trim()).into_owned();
                            if s < 500 {
                                break;
                            }
                        }
                        Err(e) => {
                            a.status = None;
                            a.text = format!("{to}: {}", crate::client::describe(&e));
                        }
                    }
                }
                a
            }
        });
        futures_util::future::join_all(tasks).await
    });
    Ok(answers)
}
