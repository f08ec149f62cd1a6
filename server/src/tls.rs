//! TLS for both listeners (`--tls-cert`, `--tls-key`, and with
//! `--tls-client-ca` client certificates required): one certificate and key
//! in PEM files, read at start, for the gRPC port (tonic's rustls) and the
//! HTTP port (tokio-rustls).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the server's certificate and key are, and optionally the CA
/// whose client certificates it requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Clients must present a certificate signed by one in this PEM file.
    pub client_ca: Option<PathBuf>,
}

/// Why TLS could not be set up; names the file.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

impl TlsError {
    /// An error from elsewhere (tonic's TLS setup), as text.
    pub fn from_display(error: &dyn std::fmt::Display) -> TlsError {
        TlsError(error.to_string())
    }
}

/// TLS ready for both listeners.
pub struct Tls {
    /// For the gRPC server.
    pub grpc: tonic::transport::ServerTlsConfig,
    /// For the HTTP listener.
    pub http: TlsAcceptor,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("reading the {what} {}: {e}", path.display())))
}

fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{}: not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{}: holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads the files and builds both configurations.
pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
    let cert_pem = read(&files.cert, "certificate")?;
    let key_pem = read(&files.key, "private key")?;
    let certs = certificates(&cert_pem, &files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        TlsError(format!(
            "{}: not a PEM private key: {e}",
            files.key.display()
        ))
    })?;
    let mut grpc = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(&cert_pem, &key_pem));
    let builder = rustls::ServerConfig::builder();
    let builder = match &files.client_ca {
        Some(path) => {
            let ca_pem = read(path, "client CA")?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(&ca_pem, path)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
            grpc = grpc.client_ca_root(tonic::transport::Certificate::from_pem(&ca_pem));
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut http = builder.with_single_cert(certs, key).map_err(|e| {
        TlsError(format!(
            "{} and {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        grpc,
        http: TlsAcceptor::from(Arc::new(http)),
    })
}
