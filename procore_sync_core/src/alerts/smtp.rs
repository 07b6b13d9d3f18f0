//! Alert emails: `procore_sync.smtp_url` read into an [`SmtpEndpoint`], and one message sent
//! through lettre's blocking SMTP transport (rustls with the ring provider).
//!
//! The URL follows lettre's own convention, so its examples apply:
//! - `smtp://host[:port]`: plain SMTP, no TLS, for a relay on this machine (port 25);
//! - `smtp://host[:port]?tls=required`, or the scheme `smtp+starttls://` (also
//!   `starttls://`): STARTTLS, refusing a server that does not offer it (port 587);
//! - `smtps://host[:port]`: TLS from the first byte (port 465).
//!
//! Each takes an optional `user:password@` (percent-encoded) for AUTH PLAIN or LOGIN, and
//! an optional path naming us in EHLO. lettre's `tls=opportunistic` is refused: a man in the
//! middle can strip the STARTTLS offer and read the password.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{SmtpTransport, Transport};
use url::{Host, Url};

use super::compose::Message;
use super::error::{is_timeout, AlertError};
use super::scrub::scrub_line;
use crate::procore::Secret;

const SETTING: &str = "procore_sync.smtp_url";

/// Longest server reply or transport error kept in an [`AlertError`], in characters.
const DETAIL_CHARS: usize = 300;

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// No TLS at all (`smtp://`).
    Plain,
    /// Plain connect, then STARTTLS before anything else, required.
    StartTls,
    /// TLS from the first byte (`smtps://`).
    ImplicitTls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpLogin {
    pub user: String,
    pub password: Secret,
}

/// `procore_sync.smtp_url`, read. Its `Debug` shows no password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpEndpoint {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub login: Option<SmtpLogin>,
    /// The name sent with EHLO; lettre uses the machine's host name when `None`.
    pub hello_name: Option<String>,
}

impl SmtpEndpoint {
    /// Reads an SMTP URL. Errors name what is wrong, never the URL: it may hold a password.
    pub fn parse(smtp_url: &Secret) -> Result<SmtpEndpoint, AlertError> {
        let config = |what: String| AlertError::Config(format!("{SETTING}: {what}"));
        let url =
            Url::parse(smtp_url.expose().trim()).map_err(|e| config(format!("not a URL ({e})")))?;

        let mut tls_parameter = None;
        for (name, value) in url.query_pairs() {
            match name.as_ref() {
                "tls" => tls_parameter = Some(value.into_owned()),
                other => {
                    return Err(config(format!(
                        "unknown parameter '{other}' (only tls=required is understood)"
                    )))
                }
            }
        }
        let security = match (url.scheme(), tls_parameter.as_deref()) {
            ("smtp", None) => SmtpSecurity::Plain,
            ("smtp", Some("required")) => SmtpSecurity::StartTls,
            ("smtp", Some("opportunistic")) => {
                return Err(config(
                    "tls=opportunistic would fall back to plain text and expose the password: \
                     use tls=required or smtps://"
                        .into(),
                ))
            }
            ("smtp+starttls" | "starttls", None | Some("required")) => SmtpSecurity::StartTls,
            ("smtps", None | Some("required")) => SmtpSecurity::ImplicitTls,
            ("smtp" | "smtp+starttls" | "starttls" | "smtps", Some(_)) => {
                return Err(config("the tls parameter takes only 'required'".into()))
            }
            (scheme, _) => {
                return Err(config(format!(
                    "scheme '{scheme}' is not one of smtp, smtp+starttls or smtps"
                )))
            }
        };

        let host = match url.host() {
            Some(Host::Domain(domain)) if !domain.is_empty() => domain.to_ascii_lowercase(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(config("no host".into())),
        };
        let port = url.port().unwrap_or(match security {
            SmtpSecurity::Plain => 25,
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::ImplicitTls => 465,
        });

        let decode = |part: &str, what: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| config(format!("the {what} is not UTF-8 once percent-decoded")))
        };
        let login = match (url.username(), url.password()) {
            ("", None) => None,
            ("", Some(_)) => return Err(config("a password without a user".into())),
            (_, None) => return Err(config("a user without a password".into())),
            (user, Some(password)) => Some(SmtpLogin {
                user: decode(user, "user")?,
                password: Secret::new(decode(password, "password")?),
            }),
        };
        if login.is_some() && security == SmtpSecurity::Plain && !is_local(&url) {
            return Err(config(format!(
                "plain smtp:// would send the password unencrypted to {host}: use smtps:// \
                 or ?tls=required (plain SMTP with a login is for a relay on this machine)"
            )));
        }

        let hello_name = match url.path().trim_matches('/') {
            "" => None,
            name => Some(decode(name, "EHLO name")?),
        };
        Ok(SmtpEndpoint {
            host,
            port,
            security,
            login,
            hello_name,
        })
    }

    /// `host:port`, for messages.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The password and the forms it takes on the wire (AUTH PLAIN and LOGIN send base64),
    /// should a server echo them in a reply.
    fn secrets(&self) -> Vec<String> {
        let Some(login) = &self.login else {
            return Vec::new();
        };
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let password = login.password.expose();
        vec![
            password.to_owned(),
            b64(&format!("\0{}\0{password}", login.user)),
            b64(password),
        ]
    }
}

fn is_local(url: &Url) -> bool {
    match url.host() {
        // An IPv4 address in a URL of a scheme the url crate does not know is a domain.
        Some(Host::Domain(domain)) => {
            domain.eq_ignore_ascii_case("localhost")
                || domain
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Sends `message` as a plain-text email from `from` to every address in `to`, through the
/// server in `smtp_url`, waiting at most `timeout` for each step (connect, each reply).
/// `ca_file` adds the PEM certificates in it to the trusted roots (a private CA, a test's
/// self-signed certificate).
pub fn send_email(
    smtp_url: &Secret,
    from: &str,
    to: &[String],
    message: &Message,
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<(), AlertError> {
    let endpoint = SmtpEndpoint::parse(smtp_url)?;
    let email = email(from, to, message)?;
    let transport = transport(&endpoint, timeout, ca_file)?;
    transport
        .send(&email)
        .map(drop)
        .map_err(|e| smtp_error(&endpoint, timeout, &e))
}

fn email(from: &str, to: &[String], message: &Message) -> Result<lettre::Message, AlertError> {
    let address = |setting: &str, text: &str| {
        text.trim().parse::<Mailbox>().map_err(|e| {
            AlertError::Config(format!(
                "{setting}: '{}' is not an email address ({e})",
                scrub_line(text, &[], 100)
            ))
        })
    };
    if to.iter().all(|address| address.trim().is_empty()) {
        return Err(AlertError::Config(
            "procore_sync.alert_email_to names no recipient".into(),
        ));
    }
    let mut builder = lettre::Message::builder()
        .from(address("procore_sync.alert_email_from", from)?)
        .subject(message.subject.as_str())
        .message_id(None)
        .header(ContentType::TEXT_PLAIN)
        // RFC 3834: vacation responders and ticket systems must not answer an alert.
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ));
    for recipient in to.iter().filter(|r| !r.trim().is_empty()) {
        builder = builder.to(address("procore_sync.alert_email_to", recipient)?);
    }
    builder
        .body(message.text.clone())
        .map_err(|e| AlertError::Config(format!("cannot build the alert email: {e}")))
}

fn transport(
    endpoint: &SmtpEndpoint,
    timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<SmtpTransport, AlertError> {
    let mut builder = SmtpTransport::builder_dangerous(endpoint.host.as_str())
        .port(endpoint.port)
        .timeout(Some(timeout));
    builder = match endpoint.security {
        SmtpSecurity::Plain => builder.tls(Tls::None),
        SmtpSecurity::StartTls => builder.tls(Tls::Required(tls_parameters(endpoint, ca_file)?)),
        SmtpSecurity::ImplicitTls => builder.tls(Tls::Wrapper(tls_parameters(endpoint, ca_file)?)),
    };
    if let Some(login) = &endpoint.login {
        builder = builder.credentials(Credentials::new(
            login.user.clone(),
            login.password.expose().to_owned(),
        ));
    }
    if let Some(name) = &endpoint.hello_name {
        builder = builder.hello_name(ClientId::Domain(name.clone()));
    }
    Ok(builder.build())
}

/// The webpki roots (lettre's default without a platform verifier), plus `ca_file`'s.
fn tls_parameters(
    endpoint: &SmtpEndpoint,
    ca_file: Option<&Path>,
) -> Result<TlsParameters, AlertError> {
    let mut builder = TlsParameters::builder(endpoint.host.clone());
    if let Some(path) = ca_file {
        let shown = path.display();
        let pem = std::fs::read(path)
            .map_err(|e| AlertError::Config(format!("cannot read CA file {shown}: {e}")))?;
        let certificates = rustls_pemfile::certs(&mut pem.as_slice())
            .filter(Result::is_ok)
            .count();
        if certificates == 0 {
            return Err(AlertError::Config(format!(
                "CA file {shown} contains no PEM certificates"
            )));
        }
        let roots = Certificate::from_pem(&pem)
            .map_err(|e| AlertError::Config(format!("cannot use CA file {shown}: {e}")))?;
        builder = builder.add_root_certificate(roots);
    }
    builder
        .build_rustls()
        .map_err(|e| AlertError::Config(format!("TLS setup for SMTP failed: {e}")))
}

fn smtp_error(
    endpoint: &SmtpEndpoint,
    timeout: Duration,
    error: &lettre::transport::smtp::Error,
) -> AlertError {
    let secrets = endpoint.secrets();
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    // The source holds the server's reply or the transport's error; lettre's own text only
    // adds its kind ("permanent error (535)"), which the variant says better.
    let detail = match std::error::Error::source(error) {
        Some(source) => source.to_string(),
        None => error.to_string(),
    };
    let detail = scrub_line(&detail, &secrets, DETAIL_CHARS);
    let server = endpoint.server();
    if let Some(code) = error.status() {
        let code = u16::from(code);
        return if endpoint.login.is_some() && matches!(code, 534 | 535) {
            AlertError::SmtpLoginRefused { server, code }
        } else {
            AlertError::SmtpRejected {
                server,
                code,
                detail,
            }
        };
    }
    if is_timeout(error) {
        AlertError::SmtpTimeout {
            server,
            seconds: timeout.as_secs().max(1),
        }
    } else if error.is_tls() || is_tls_failure(error) {
        AlertError::SmtpTls { server, detail }
    } else if error.is_client() || error.is_response() {
        AlertError::SmtpProtocol { server, detail }
    } else {
        AlertError::SmtpConnection { server, detail }
    }
}

/// lettre reports a failed handshake (an untrusted certificate) as a connection error with
/// rustls' error inside.
fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
            {
                return true;
            }
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<SmtpEndpoint, AlertError> {
        SmtpEndpoint::parse(&Secret::new(url))
    }

    fn login(user: &str, password: &str) -> Option<SmtpLogin> {
        Some(SmtpLogin {
            user: user.into(),
            password: Secret::new(password),
        })
    }

    #[test]
    fn schemes_map_to_tls_modes_and_default_ports() {
        let cases = [
            ("smtp://localhost", SmtpSecurity::Plain, 25),
            ("smtp://relay.internal:2525", SmtpSecurity::Plain, 2525),
            (
                "smtp://mail.example.com?tls=required",
                SmtpSecurity::StartTls,
                587,
            ),
            (
                "smtp+starttls://mail.example.com",
                SmtpSecurity::StartTls,
                587,
            ),
            (
                "starttls://mail.example.com:2587",
                SmtpSecurity::StartTls,
                2587,
            ),
            ("smtps://mail.example.com", SmtpSecurity::ImplicitTls, 465),
            (
                "SMTPS://Mail.Example.com:4650",
                SmtpSecurity::ImplicitTls,
                4650,
            ),
        ];
        for (url, security, port) in cases {
            let endpoint = parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                (endpoint.security, endpoint.port),
                (security, port),
                "{url}"
            );
            assert_eq!(endpoint.login, None, "{url}");
        }
        assert_eq!(
            parse("SMTPS://Mail.Example.com").map(|e| e.host).ok(),
            Some("mail.example.com".to_owned())
        );
        assert_eq!(
            parse("smtp://[::1]:2525").map(|e| e.server()).ok(),
            Some("[::1]:2525".to_owned())
        );
    }

    #[test]
    fn user_and_password_are_percent_decoded() {
        let endpoint = parse("smtps://alerts%40example.com:p%40ss%3Aw%2Frd@mail.example.com:465")
            .expect("parses");
        assert_eq!(endpoint.login, login("alerts@example.com", "p@ss:w/rd"));
        assert_eq!(endpoint.host, "mail.example.com");
        assert_eq!(endpoint.server(), "mail.example.com:465");

        let endpoint = parse("smtp://user:pass@mail.example.com?tls=required").expect("parses");
        assert_eq!(endpoint.security, SmtpSecurity::StartTls);
        assert_eq!(endpoint.login, login("user", "pass"));

        let endpoint = parse("smtp://user:pass@127.0.0.1:25").expect("a local relay");
        assert_eq!(endpoint.security, SmtpSecurity::Plain);
        assert_eq!(endpoint.login, login("user", "pass"));
    }

    #[test]
    fn the_path_names_us_in_ehlo() {
        assert_eq!(
            parse("smtps://mail.example.com/db1.example.com")
                .map(|e| e.hello_name)
                .ok(),
            Some(Some("db1.example.com".to_owned()))
        );
        assert_eq!(
            parse("smtps://mail.example.com/")
                .map(|e| e.hello_name)
                .ok(),
            Some(None)
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let endpoint = parse("smtps://user:hunter2@mail.example.com").expect("parses");
        let shown = format!("{endpoint:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("[redacted]"),
            "{shown}"
        );
    }

    #[test]
    fn bad_urls_are_refused_without_showing_the_url() {
        let cases = [
            ("//user:hunter2@mail.example.com", "not a URL"),
            ("http://user:hunter2@mail.example.com", "scheme 'http'"),
            (
                "smtp://user:hunter2@mail.example.com?tls=opportunistic",
                "opportunistic",
            ),
            (
                "smtps://user:hunter2@mail.example.com?tls=none",
                "only 'required'",
            ),
            (
                "smtps://user:hunter2@mail.example.com?auth=x",
                "unknown parameter 'auth'",
            ),
            ("smtps://user@mail.example.com", "a user without a password"),
            (
                "smtps://:hunter2@mail.example.com",
                "a password without a user",
            ),
            ("smtp://user:hunter2@mail.example.com", "unencrypted"),
            ("smtps://user:hunter2@:465", "not a URL"),
            ("smtps://user:%FF@mail.example.com", "not UTF-8"),
        ];
        for (url, expected) in cases {
            match parse(url) {
                Ok(endpoint) => panic!("{url} parsed: {endpoint:?}"),
                Err(e) => {
                    let text = e.to_string();
                    assert!(text.contains(expected), "{url}: {text}");
                    assert!(text.starts_with("alert settings: procore_sync.smtp_url: "));
                    assert!(!text.contains("hunter2") && !text.contains('@'), "{text}");
                }
            }
        }
    }

    #[test]
    fn recipients_and_sender_are_checked() {
        let message = Message {
            subject: "s".into(),
            text: "t".into(),
            json: serde_json::Value::Null,
            alert_ids: vec![1],
        };
        let to = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let refused = |from: &str, list: &[&str]| match email(from, &to(list), &message) {
            Ok(_) => panic!("{from} -> {list:?} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(refused("a@example.com", &[]).contains("names no recipient"));
        assert!(refused("a@example.com", &[" "]).contains("names no recipient"));
        assert!(refused("not an address", &["b@example.com"])
            .contains("procore_sync.alert_email_from: 'not an address' is not an email address"));
        assert!(refused("a@example.com", &["b@example.com", "bad@"])
            .contains("procore_sync.alert_email_to: 'bad@'"));

        let email = email(
            "procore_sync <alerts@example.com>",
            &to(&["ops@example.com", " dba@example.com "]),
            &message,
        )
        .expect("builds");
        let envelope = email.envelope();
        assert_eq!(
            envelope.from().map(|a| a.to_string()),
            Some("alerts@example.com".into())
        );
        let recipients: Vec<String> = envelope.to().iter().map(|a| a.to_string()).collect();
        assert_eq!(recipients, ["ops@example.com", "dba@example.com"]);
        let raw = String::from_utf8_lossy(&email.formatted()).into_owned();
        assert!(raw.contains("Auto-Submitted: auto-generated\r\n"), "{raw}");
    }
}
