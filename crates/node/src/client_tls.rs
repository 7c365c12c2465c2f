//! TLS on the client port, reloaded without a restart: the acceptor asks
//! [`ClientTls`] for the current rustls configuration at every handshake,
//! and [`ClientTls::reload`] builds a new one from the files (on SIGHUP, or
//! when a file changes): the certificate, its key and, with mutual TLS, the
//! CA that client certificates must chain to. A reload that fails keeps the
//! configuration in use and says why. Connections are accepted by the peer
//! transport's `tls_incoming`, as the peer port's.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tsoracle_paxos_tonic::{FileStamp, file_stamp};

use crate::config::ClientTlsFiles;
use crate::error::Error;

/// The stamps of the certificate, key and CA files.
type Stamps = [Option<FileStamp>; 3];

/// The client port's TLS configuration, swapped by [`reload`](Self::reload).
pub(crate) struct ClientTls {
    files: ClientTlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// The files' stamps at the last load.
    loaded: Mutex<Stamps>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Loads `files` (refused when unreadable, malformed, when the key does
    /// not match the certificate, or when the CA holds no usable
    /// certificate).
    pub(crate) fn load(files: &ClientTlsFiles) -> Result<Arc<Self>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = stamps(files);
        let config = server_config(files, &provider)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            current: RwLock::new(config),
            loaded: Mutex::new(stamps),
            provider,
        }))
    }

    /// Reads the files again and, if they make a valid configuration, uses
    /// it from the next handshake on (connections already open keep theirs).
    pub(crate) fn reload(&self) -> Result<(), Error> {
        let stamps = stamps(&self.files);
        let config = server_config(&self.files, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
        Ok(())
    }

    /// Whether the certificate, key or CA file changed since the last load.
    pub(crate) fn changed(&self) -> bool {
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) != stamps(&self.files)
    }

    /// The configuration for the next handshake.
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The TLS server configuration of the port: HTTP/2 only, the certificate,
/// and client certificates when a CA is configured.
fn server_config(
    files: &ClientTlsFiles,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, Error> {
    let tls = |err: rustls::Error| Error::Tls(format!("the client port's TLS: {err}"));
    let key = certified_key(files, provider)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(tls)?;
    let builder = match &files.ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca, "client CA")? {
                roots.add(cert).map_err(tls)?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                    .build()
                    .map_err(|err| Error::Tls(format!("the client CA {}: {err}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn stamps(files: &ClientTlsFiles) -> Stamps {
    [
        file_stamp(&files.cert),
        file_stamp(&files.key),
        files.ca.as_deref().and_then(file_stamp),
    ]
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = std::fs::read(path)
        .map_err(|err| Error::Tls(format!("cannot read the {what} {}: {err}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| Error::Tls(format!("the {what} {}: {err}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "the {what} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn certified_key(files: &ClientTlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, Error> {
    let chain = read_certs(&files.cert, "client port certificate")?;
    let pem = std::fs::read(&files.key).map_err(|err| {
        Error::Tls(format!(
            "cannot read the client port key {}: {err}",
            files.key.display()
        ))
    })?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
        Error::Tls(format!(
            "the client port key {}: {err}",
            files.key.display()
        ))
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|err| {
        Error::Tls(format!(
            "the client port key {} does not fit its certificate {}: {err}",
            files.key.display(),
            files.cert.display()
        ))
    })
}
