//! Alert webhooks: one JSON POST of [`Message::json`], whose `text` field a Slack or Teams
//! incoming webhook shows as it is.

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::compose::Message;
use super::error::{is_timeout, AlertError};
use super::scrub::scrub_line;
use crate::procore::Secret;

const SETTING: &str = "procore_sync.alert_webhook_url";

/// Longest response-body or transport-error excerpt kept in an error, in characters.
const DETAIL_CHARS: usize = 200;

/// POSTs `message.json` to the webhook, waiting at most `timeout` for the connection and
/// at most `timeout` for the whole exchange. Any 2xx is success; redirects are not followed
/// (they would carry the alert wherever they point).
///
/// The URL is a credential (a Slack webhook URL lets anyone post to the channel), so no
/// error names more of it than its host.
pub fn send_webhook(url: &Secret, message: &Message, timeout: Duration) -> Result<(), AlertError> {
    let parsed = Url::parse(url.expose().trim())
        .map_err(|e| AlertError::Config(format!("{SETTING}: not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(AlertError::Config(format!(
            "{SETTING}: scheme '{}' is not http or https",
            parsed.scheme()
        )));
    }
    let host = match parsed.host_str() {
        Some(host) if !host.is_empty() => host.to_owned(),
        _ => return Err(AlertError::Config(format!("{SETTING}: no host"))),
    };
    // Everything of the URL but the host may be the credential, in any spelling that an
    // error text could echo.
    let mut secrets = vec![url.expose().trim().to_owned(), parsed.as_str().to_owned()];
    if parsed.path().len() > 1 {
        secrets.push(parsed.path().to_owned());
    }
    secrets.extend(parsed.query().map(str::to_owned));
    secrets.extend(parsed.password().map(str::to_owned));
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();

    let agent = ureq::AgentBuilder::new()
        .tls_config(tls_config()?)
        .timeout_connect(timeout)
        .timeout(timeout)
        .redirects(0)
        .user_agent(concat!("procore_sync/", env!("CARGO_PKG_VERSION")))
        .build();
    match agent.request_url("POST", &parsed).send_json(&message.json) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(status, response)) => {
            let body = response.into_string().unwrap_or_default();
            Err(AlertError::WebhookStatus {
                status,
                detail: scrub_line(&body, &secrets, DETAIL_CHARS),
            })
        }
        Err(ureq::Error::Transport(transport)) => {
            // ureq's own text starts with the URL: build ours from the kind and the cause.
            let cause = std::error::Error::source(&transport).map(ToString::to_string);
            if is_timeout(&transport) {
                return Err(AlertError::WebhookTimeout {
                    seconds: timeout.as_secs().max(1),
                });
            }
            let detail = match cause {
                Some(cause) => format!("{}: {cause}", transport.kind()),
                None => transport.kind().to_string(),
            };
            Err(AlertError::WebhookConnection {
                host,
                detail: scrub_line(&detail, &secrets, DETAIL_CHARS),
            })
        }
    }
}

/// rustls on the ring provider with the webpki roots, as the Procore client does: the
/// provider is explicit because another library in the same Postgres backend could have
/// installed a different process default.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, AlertError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| AlertError::Config(format!("TLS setup for the webhook failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
