//! Keeping credentials out of alert texts.
//!
//! The errors that reach an alert were scrubbed where they were made (the Procore client
//! removes the tokens it knows), but an alert goes to people outside the database, by email
//! and into chat, so its texts are scrubbed once more by shape: anything that looks like a
//! credential is replaced whatever produced it.

use std::sync::LazyLock;

use regex::Regex;

const REDACTED: &str = "[redacted]";

/// `Bearer <token>` and `Basic <credentials>`, as in an echoed `Authorization` header.
static AUTH_SCHEME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/]+=*").expect("valid regex")
});

/// `access_token=…`, `"refresh_token": "…"`, `password: …` and their kin: the value after
/// the name, whether form-encoded, JSON or a log line.
static NAMED_SECRET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b((?:access|refresh|id)_token|client_secret|secret|password|passwd|pwd|api_?key|token)(\s*["']?\s*[:=]\s*["']?)([^\s"'&,;)}\]<>]+)"#,
    )
    .expect("valid regex")
});

/// The `user:password@` of a URL.
static URL_USERINFO: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@]+@").expect("valid regex"));

/// A Slack incoming-webhook URL is a credential by itself: whoever has it can post.
static SLACK_WEBHOOK_PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)(hooks\.slack\.com/(?:services|workflows|triggers)/)[^\s"'<>]+"#)
        .expect("valid regex")
});

/// Replaces every credential-shaped part of `text` with `[redacted]`: bearer and basic
/// credentials, values of `access_token`, `refresh_token`, `id_token`, `client_secret`,
/// `secret`, `password`, `api_key` and `token` (after `=` or `:`, quoted or not), URL
/// userinfo and the path of a Slack webhook URL.
pub fn scrub(text: &str) -> String {
    let text = AUTH_SCHEME.replace_all(text, format!("${{1}}${{2}}{REDACTED}"));
    let text = NAMED_SECRET.replace_all(&text, format!("${{1}}${{2}}{REDACTED}"));
    let text = URL_USERINFO.replace_all(&text, format!("${{1}}{REDACTED}@"));
    let text = SLACK_WEBHOOK_PATH.replace_all(&text, format!("${{1}}{REDACTED}"));
    text.into_owned()
}

/// [`scrub`], then each of the known `secrets` replaced, then one line of at most
/// `max_chars` characters (control characters and runs of whitespace become one space).
/// Redaction comes before the cut so that no prefix of a secret survives it.
pub(crate) fn scrub_line(text: &str, secrets: &[&str], max_chars: usize) -> String {
    let mut text = scrub(text);
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, REDACTED);
    }
    let mut out = String::with_capacity(text.len().min(max_chars * 4));
    let mut count = 0;
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        let separator = usize::from(count > 0);
        let length = word.chars().count();
        if count + separator + length > max_chars {
            if count == 0 {
                out.extend(word.chars().take(max_chars.saturating_sub(1)));
            } else if count + separator + 1 < max_chars {
                out.push(' ');
                let room = max_chars - count - 2;
                out.extend(word.chars().take(room));
            }
            out.push('…');
            return out;
        }
        if separator == 1 {
            out.push(' ');
        }
        out.push_str(word);
        count += separator + length;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_credentials() {
        assert_eq!(
            scrub("sent Authorization: Bearer abc123.def-456_x and got 401"),
            "sent Authorization: Bearer [redacted] and got 401"
        );
        assert_eq!(
            scrub("authorization: basic dXNlcjpwYXNz=="),
            "authorization: basic [redacted]"
        );
    }

    #[test]
    fn named_values_in_forms_json_and_logs() {
        assert_eq!(
            scrub("grant_type=refresh_token&refresh_token=r-1%2F2&client_secret=cs"),
            "grant_type=refresh_token&refresh_token=[redacted]&client_secret=[redacted]"
        );
        assert_eq!(
            scrub(r#"{"access_token": "at-9", "expires_in": 7200}"#),
            r#"{"access_token": "[redacted]", "expires_in": 7200}"#
        );
        assert_eq!(
            scrub("password=hunter2; retry"),
            "password=[redacted]; retry"
        );
        assert_eq!(scrub("PASSWORD: 'hunter2'"), "PASSWORD: '[redacted]'");
    }

    #[test]
    fn prose_about_tokens_is_left_alone() {
        let text = "Procore refused the grant (invalid_grant): The refresh token is invalid";
        assert_eq!(scrub(text), text);
    }

    #[test]
    fn url_userinfo_and_slack_webhook_paths() {
        assert_eq!(
            scrub("cannot reach smtps://alerts:s3cret@mail.example.com:465/x"),
            "cannot reach smtps://[redacted]@mail.example.com:465/x"
        );
        assert_eq!(
            scrub("https://hooks.slack.com/services/T000/B000/XXXX answered 404"),
            "https://hooks.slack.com/services/[redacted] answered 404"
        );
        assert_eq!(
            scrub("see https://example.com/a?b=c@d"),
            "see https://example.com/a?b=c@d"
        );
    }

    #[test]
    fn scrub_line_removes_known_secrets_then_cuts() {
        let secret = "pa55word-xyz";
        let text = format!("{}\r\n{}", "a".repeat(20), secret);
        let line = scrub_line(&text, &[secret], 25);
        assert!(!line.contains("pa55"), "{line}");
        assert_eq!(line, format!("{} [re…", "a".repeat(20)));
        assert_eq!(scrub_line("  a \t\n b  ", &[], 100), "a b");
        assert_eq!(scrub_line(&"x".repeat(50), &[], 10).chars().count(), 10);
    }
}
