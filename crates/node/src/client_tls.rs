//! TLS on the client port, with a certificate that reloads without a
//! restart: the acceptor asks [`ReloadingCert`] for the current
//! certificate at every handshake, and [`ReloadingCert::reload`] swaps it
//! (on SIGHUP, or when the files change). A reload that fails keeps the
//! certificate in use and says why. Connections are accepted by the peer
//! transport's `tls_incoming`, as the peer port's.
//!
//! With a client CA the port requires client certificates signed by it
//! (mutual TLS); the CA itself is read once, at start.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ClientTlsFiles;
use crate::error::Error;

/// The client port's certificate, swapped by [`reload`](Self::reload).
pub(crate) struct ReloadingCert {
    files: ClientTlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times at the last load.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads `files` (refused when unreadable, malformed, or when the key
    /// does not match the certificate).
    pub(crate) fn load(files: &ClientTlsFiles) -> Result<Arc<Self>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = stamps(files);
        let key = certified_key(files, &provider)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            current: RwLock::new(Arc::new(key)),
            loaded: Mutex::new(stamps),
            provider,
        }))
    }

    /// Reads the files again and, if they make a valid certificate, serves
    /// it from the next handshake on.
    pub(crate) fn reload(&self) -> Result<(), Error> {
        let stamps = stamps(&self.files);
        let key = certified_key(&self.files, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
        Ok(())
    }

    /// Whether the certificate or key file changed since the last load.
    pub(crate) fn changed(&self) -> bool {
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) != stamps(&self.files)
    }

    /// The TLS server configuration of the port: HTTP/2 only, this
    /// certificate, and client certificates when a CA is configured.
    pub(crate) fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, Error> {
        let tls = |err: rustls::Error| Error::Tls(format!("the client port's TLS: {err}"));
        let builder = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(tls)?;
        let builder = match &self.files.ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(ca, "client CA")? {
                    roots.add(cert).map_err(tls)?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&self.provider),
                )
                .build()
                .map_err(|err| Error::Tls(format!("the client CA {}: {err}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

fn stamps(files: &ClientTlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(&files.cert), modified(&files.key))
}

fn read_certs(path: &std::path::Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
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
