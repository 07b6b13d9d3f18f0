//! The shared secret of a hook: Procore sends back, on every delivery, the `Authorization`
//! value the hook was created with (`destination_headers`). It signs nothing, so this value
//! is the receiver's only proof that a delivery came from Procore.

use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::procore::Secret;

/// Shortest secret accepted: a guessable value would let anyone queue fetches.
const MIN_SECRET_CHARS: usize = 32;

/// Whether a delivery's `Authorization` header carries the hook's secret.
///
/// Accepts exactly the stored value, nothing derived from it: Procore sends the configured
/// header value verbatim (its own example configures `"Bearer <token>"` whole), and
/// [`crate::procore::Client::create_hook`] configures the stored value itself, so there is no
/// `Bearer` prefix to add or strip. Only the spaces and tabs HTTP allows around a field value
/// are ignored. No header, an empty stored secret or a different length never match. The
/// comparison takes the same time wherever the first difference is, so a timing probe
/// learns nothing but the length.
pub fn authorization_matches(header: Option<&str>, stored: &Secret) -> bool {
    let Some(header) = header else {
        return false;
    };
    let stored = stored.expose().as_bytes();
    if stored.is_empty() {
        return false;
    }
    let sent = header.trim_matches([' ', '\t']).as_bytes();
    bool::from(sent.ct_eq(stored))
}

/// Whether a value can be a hook's secret: at least 32 characters of visible ASCII and
/// inner spaces, so it travels unchanged as a header value and resists guessing. The
/// message names the rule, never the value.
pub fn check_authorization_secret(secret: &Secret) -> Result<(), String> {
    let value = secret.expose();
    if value.chars().count() < MIN_SECRET_CHARS {
        return Err(format!(
            "the webhook secret must be at least {MIN_SECRET_CHARS} characters"
        ));
    }
    let header_safe = value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        && !value.starts_with(' ')
        && !value.ends_with(' ');
    if !header_safe {
        return Err(
            "the webhook secret must be visible ASCII, with spaces only between words".into(),
        );
    }
    Ok(())
}

/// A fresh secret for a hook: 32 bytes from the operating system's generator, as 64
/// hexadecimal digits.
pub fn new_authorization_secret() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut text = String::with_capacity(64);
    for byte in bytes {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    Secret::new(text)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stored_value_matches() {
        let stored = Secret::new("Bearer 0123456789abcdef0123456789abcdef");
        assert!(authorization_matches(
            Some("Bearer 0123456789abcdef0123456789abcdef"),
            &stored
        ));
        assert!(authorization_matches(
            Some(" Bearer 0123456789abcdef0123456789abcdef\t"),
            &stored
        ));
        for wrong in [
            "Bearer 0123456789abcdef0123456789abcdeF",
            "bearer 0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef",
            "Bearer 0123456789abcdef0123456789abcde",
            "Bearer 0123456789abcdef0123456789abcdef0",
            "",
        ] {
            assert!(!authorization_matches(Some(wrong), &stored), "{wrong:?}");
        }
        assert!(!authorization_matches(None, &stored));
    }

    #[test]
    fn no_bearer_prefix_is_added_or_removed() {
        let stored = Secret::new("0123456789abcdef0123456789abcdef");
        assert!(authorization_matches(
            Some("0123456789abcdef0123456789abcdef"),
            &stored
        ));
        assert!(!authorization_matches(
            Some("Bearer 0123456789abcdef0123456789abcdef"),
            &stored
        ));
    }

    #[test]
    fn an_empty_stored_secret_matches_nothing() {
        assert!(!authorization_matches(Some(""), &Secret::new("")));
        assert!(!authorization_matches(Some("  "), &Secret::new("")));
    }

    #[test]
    fn secrets_must_be_long_and_header_safe() {
        assert!(check_authorization_secret(&Secret::new("x".repeat(32))).is_ok());
        assert!(
            check_authorization_secret(&Secret::new(format!("Bearer {}", "x".repeat(32)))).is_ok()
        );
        for bad in [
            "x".repeat(31),
            format!("{}\r\nX-Evil: 1", "x".repeat(32)),
            format!(" {}", "x".repeat(32)),
            format!("{}é", "x".repeat(32)),
        ] {
            let error = check_authorization_secret(&Secret::new(bad.clone()));
            assert!(error.is_err(), "{bad:?}");
            assert!(!error.err().unwrap_or_default().contains("xxxx"));
        }
    }

    #[test]
    fn new_secrets_are_valid_and_differ() {
        let a = new_authorization_secret();
        let b = new_authorization_secret();
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(check_authorization_secret(&a).is_ok());
        assert_ne!(a, b);
        assert!(authorization_matches(Some(a.expose()), &a));
    }
}
