//! The listener's TLS server configuration, read from PEM files once at start.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::{ListenerError, TlsFiles};

pub(super) fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ListenerError> {
    let certs = certificates(&files.cert_pem)?;
    let key = private_key(&files.key_pem)?;
    // Explicit provider, as for the client: a process-wide default could have been
    // installed, or left ambiguous, by another library in the same Postgres backend.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |source| ListenerError::Tls {
        cert: files.cert_pem.clone(),
        key: files.key_pem.clone(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(tls_error)?;
    // Only HTTP/1.1 is served; saying so lets a client that offers h2 fall back cleanly.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ListenerError> {
    fs::read(path).map_err(|source| ListenerError::ReadPem {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ListenerError> {
    let pem = read("certificate", path)?;
    // A PEM block that does not decode counts as absent: the error names the file, and
    // the file's content stays out of messages.
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    match certs.is_empty() {
        true => Err(ListenerError::EmptyPem {
            what: "certificate",
            path: path.to_owned(),
        }),
        false => Ok(certs),
    }
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ListenerError> {
    let pem = read("private key", path)?;
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(key)) => Ok(key),
        _ => Err(ListenerError::EmptyPem {
            what: "private key",
            path: path.to_owned(),
        }),
    }
}
