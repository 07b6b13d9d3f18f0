//! A string that must never reach a log line or an error message.

use std::fmt;

/// An OAuth token, authorization code or client secret.
///
/// `Debug` and `Display` print `[redacted]` so that a secret cannot leak through `{:?}` in a
/// log line or through a derived `Debug` on a struct that holds one; the value is reachable only
/// through the deliberately named [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("tok-123");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(s.expose(), "tok-123");
    }

    #[test]
    fn derived_debug_of_a_holder_hides_the_value() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Secret,
        }
        let shown = format!(
            "{:?}",
            Holder {
                token: Secret::new("tok-123")
            }
        );
        assert!(!shown.contains("tok-123"), "{shown}");
    }

    #[test]
    fn clones_compare_equal() {
        let s = Secret::new("a");
        assert_eq!(s.clone(), s);
        assert_ne!(Secret::new("a"), Secret::new("b"));
    }
}
