//! TLS 1.3 with mutual authentication over a migration's connections (rustls with
//! the `ring` provider): the destination takes only sources whose certificate the CA
//! signed, the source checks the destination's name against its certificate. Every
//! stream of a multi-stream migration is its own TLS session, authenticated the same
//! way. Keys, certificates and the CA are PEM files.

use std::boxed::Box;
use std::format;
use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::string::{String, ToString};
use std::sync::Arc;
use std::vec::Vec;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, StreamOwned};

use super::listen::{ConnIo, Wrap};
use super::RuntimeError;

/// A TLS connection from the source to a destination.
pub type TlsClientStream = StreamOwned<ClientConnection, TcpStream>;

/// The three PEM files of one side: its certificate (chain), its private key, and
/// the CA that signs the other side's certificates.
#[derive(Clone, Debug)]
pub struct TlsFiles<'a> {
    /// This side's certificate chain, PEM.
    pub cert: &'a Path,
    /// This side's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: &'a Path,
    /// The CA certificate(s) the peer's certificate must chain to, PEM.
    pub ca: &'a Path,
}

fn tls_error(what: impl Into<String>, e: impl core::fmt::Display) -> RuntimeError {
    RuntimeError::Tls(format!("{}: {e}", what.into()))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, RuntimeError> {
    std::fs::read(path)
        .map_err(|e| RuntimeError::io(format!("reading {what} {}", path.display()), e))
}

/// The certificate chain, key and CA roots of `files`.
fn load(
    files: &TlsFiles<'_>,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        RootCertStore,
    ),
    RuntimeError,
> {
    let cert_pem = read(files.cert, "--tls-cert")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(format!("--tls-cert {}", files.cert.display()), e))?;
    if certs.is_empty() {
        return Err(RuntimeError::Tls(format!(
            "--tls-cert {}: no certificate in the file",
            files.cert.display()
        )));
    }
    let key_pem = read(files.key, "--tls-key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| tls_error(format!("--tls-key {}", files.key.display()), e))?;
    let ca_pem = read(files.ca, "--tls-ca")?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&ca_pem) {
        let ca = ca.map_err(|e| tls_error(format!("--tls-ca {}", files.ca.display()), e))?;
        roots
            .add(ca)
            .map_err(|e| tls_error(format!("--tls-ca {}", files.ca.display()), e))?;
    }
    if roots.is_empty() {
        return Err(RuntimeError::Tls(format!(
            "--tls-ca {}: no CA certificate in the file",
            files.ca.display()
        )));
    }
    Ok((certs, key, roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The destination's TLS configuration: TLS 1.3 only, a client certificate signed by
/// the CA required.
pub fn server_config(files: &TlsFiles<'_>) -> Result<Arc<ServerConfig>, RuntimeError> {
    let (certs, key, roots) = load(files)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| tls_error("--tls-ca", e))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("TLS 1.3", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls_error("--tls-cert and --tls-key", e))?;
    Ok(Arc::new(config))
}

/// The source's TLS configuration: TLS 1.3 only, the destination's certificate must
/// chain to the CA, and this side presents its own.
pub fn client_config(files: &TlsFiles<'_>) -> Result<Arc<ClientConfig>, RuntimeError> {
    let (certs, key, roots) = load(files)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("TLS 1.3", e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| tls_error("--tls-cert and --tls-key", e))?;
    Ok(Arc::new(config))
}

/// The [`Wrap`] of a listener: a TLS server session over each accepted connection
/// (the handshake runs on the connection's first reads, within its header deadline).
pub fn server_wrap(config: Arc<ServerConfig>) -> Wrap {
    Arc::new(move |tcp: TcpStream| -> io::Result<Box<dyn ConnIo>> {
        let conn = rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?;
        Ok(Box::new(StreamOwned::new(conn, tcp)))
    })
}

/// A TLS session to the destination `name` (a DNS name or an IP address that its
/// certificate must carry) over a connected `tcp`; the handshake runs on the first
/// write.
pub fn connect(
    config: Arc<ClientConfig>,
    name: &str,
    tcp: TcpStream,
) -> Result<TlsClientStream, RuntimeError> {
    let server = ServerName::try_from(name.to_string())
        .map_err(|e| tls_error(format!("the destination's name '{name}'"), e))?;
    let conn = ClientConnection::new(config, server).map_err(|e| tls_error("starting TLS", e))?;
    Ok(StreamOwned::new(conn, tcp))
}
