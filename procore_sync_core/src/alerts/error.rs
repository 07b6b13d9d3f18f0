//! The one error type of alert delivery.
//!
//! Every message is one line that is safe to log and to store with the delivery: it never
//! holds the SMTP URL's password nor the webhook URL (whoever has a Slack webhook URL can
//! post to the channel), only the SMTP host and port, status codes and scrubbed server
//! replies.

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A setting is unusable (the message names the setting, never its value when secret).
    #[error("alert settings: {0}")]
    Config(String),

    #[error("SMTP server {server} refused the login ({code}): check the user and password in procore_sync.smtp_url")]
    SmtpLoginRefused { server: String, code: u16 },

    /// `code` is the SMTP reply code; 4xx is temporary, 5xx permanent.
    #[error("SMTP server {server} answered {code}: {detail}")]
    SmtpRejected {
        server: String,
        code: u16,
        detail: String,
    },

    #[error("SMTP server {server} did not answer within {seconds} s")]
    SmtpTimeout { server: String, seconds: u64 },

    #[error("could not talk to SMTP server {server}: {detail}")]
    SmtpConnection { server: String, detail: String },

    #[error("TLS with SMTP server {server} failed: {detail}")]
    SmtpTls { server: String, detail: String },

    #[error("SMTP with {server} failed: {detail}")]
    SmtpProtocol { server: String, detail: String },

    #[error("webhook answered {status}{}", detail_suffix(.detail))]
    WebhookStatus { status: u16, detail: String },

    #[error("webhook did not answer within {seconds} s")]
    WebhookTimeout { seconds: u64 },

    #[error("could not reach the webhook at {host}: {detail}")]
    WebhookConnection { host: String, detail: String },
}

impl AlertError {
    /// Whether the same delivery may succeed later without anyone changing a setting: a
    /// timeout, a connection failure, a temporary (4xx) SMTP reply, a webhook's 408, 429 or
    /// 5xx. The rest (a refused login, a permanent rejection, a TLS or settings problem) is
    /// recorded as failed at once.
    pub fn is_retryable(&self) -> bool {
        match self {
            AlertError::SmtpRejected { code, .. } => (400..500).contains(code),
            AlertError::SmtpTimeout { .. }
            | AlertError::SmtpConnection { .. }
            | AlertError::WebhookTimeout { .. }
            | AlertError::WebhookConnection { .. } => true,
            AlertError::WebhookStatus { status, .. } => {
                matches!(status, 408 | 429) || (500..600).contains(status)
            }
            AlertError::Config(_)
            | AlertError::SmtpLoginRefused { .. }
            | AlertError::SmtpTls { .. }
            | AlertError::SmtpProtocol { .. } => false,
        }
    }
}

/// Whether an I/O timeout is behind `error`. A socket read timeout shows up as `TimedOut` or,
/// on Linux, as `WouldBlock` (EAGAIN), which neither lettre nor ureq call a timeout.
pub(crate) fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                return true;
            }
        }
        source = error.source();
    }
    false
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors() {
        let server = || "mail.example.com:465".to_owned();
        let rejected = |code| AlertError::SmtpRejected {
            server: server(),
            code,
            detail: String::new(),
        };
        let status = |status| AlertError::WebhookStatus {
            status,
            detail: String::new(),
        };
        assert!(rejected(451).is_retryable());
        assert!(!rejected(550).is_retryable());
        assert!(status(500).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!AlertError::SmtpLoginRefused {
            server: server(),
            code: 535
        }
        .is_retryable());
        assert!(AlertError::WebhookTimeout { seconds: 10 }.is_retryable());
        assert!(!AlertError::Config("x".into()).is_retryable());
    }

    #[test]
    fn messages() {
        assert_eq!(
            AlertError::SmtpLoginRefused {
                server: "mail.example.com:465".into(),
                code: 535
            }
            .to_string(),
            "SMTP server mail.example.com:465 refused the login (535): check the user and \
             password in procore_sync.smtp_url"
        );
        assert_eq!(
            AlertError::WebhookStatus {
                status: 500,
                detail: String::new()
            }
            .to_string(),
            "webhook answered 500"
        );
        assert_eq!(
            AlertError::WebhookStatus {
                status: 404,
                detail: "no_service".into()
            }
            .to_string(),
            "webhook answered 404: no_service"
        );
    }
}
