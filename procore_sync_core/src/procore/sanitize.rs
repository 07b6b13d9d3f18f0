//! Turning text from the network into one safe line for an error message.
//!
//! Procore error bodies, proxy HTML pages and even transport errors can echo what we sent
//! (a refresh token in a form body, a bearer token in a header line), so every piece of
//! outside text goes through here before it reaches a `ProcoreError`.

/// Longest response-body excerpt kept in an error, in characters.
pub(crate) const EXCERPT_CHARS: usize = 200;

const REDACTED: &str = "[redacted]";

/// Replaces each secret (and its form-encoded spelling) with `[redacted]`, turns control
/// characters into spaces, collapses runs of whitespace and cuts to `max_chars`.
///
/// Redaction happens before the cut so that a secret straddling the limit cannot survive as
/// a prefix.
pub(crate) fn one_line(text: &str, secrets: &[&str], max_chars: usize) -> String {
    let mut redacted = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        redacted = redacted.replace(secret, REDACTED);
        let encoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        if encoded != *secret {
            redacted = redacted.replace(&encoded, REDACTED);
        }
    }

    let mut out = String::with_capacity(redacted.len().min(max_chars * 4));
    let mut pending_space = false;
    let mut count = 0;
    for c in redacted.chars() {
        if c.is_control() || c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        let needed = if pending_space { 2 } else { 1 };
        if count + needed > max_chars {
            break;
        }
        if pending_space {
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// A response-body excerpt for an error `detail`.
pub(crate) fn excerpt(text: &str, secrets: &[&str]) -> String {
    one_line(text, secrets, EXCERPT_CHARS)
}

/// The visible text of an HTML page (a proxy's "502 Bad Gateway"), tags dropped.
pub(crate) fn html_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(4096));
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_before_cutting() {
        let secret = "s3cr3t-value";
        let text = format!("{}{}", "x".repeat(195), secret);
        let line = one_line(&text, &[secret], 200);
        assert!(!line.contains("s3cr"), "{line}");
        assert!(line.chars().count() <= 200);
    }

    #[test]
    fn form_encoded_secrets_are_replaced() {
        let line = one_line("refresh_token=a%2Fb%2Bc", &["a/b+c"], 200);
        assert_eq!(line, "refresh_token=[redacted]");
    }

    #[test]
    fn control_characters_and_newlines_become_single_spaces() {
        let line = one_line("  a\r\n\tb\u{7}\u{1b}[31mc  ", &[], 200);
        assert_eq!(line, "a b [31mc");
    }

    #[test]
    fn excerpt_is_at_most_200_chars_even_with_multibyte_text() {
        let line = excerpt(&"ü✓".repeat(500), &[]);
        assert_eq!(line.chars().count(), 200);
    }

    #[test]
    fn empty_secret_is_ignored() {
        assert_eq!(one_line("abc", &[""], 200), "abc");
    }

    #[test]
    fn html_tags_are_dropped() {
        let text = html_text("<html><body><h1>502 Bad Gateway</h1></body></html>");
        assert_eq!(one_line(&text, &[], 200), "502 Bad Gateway");
    }
}
