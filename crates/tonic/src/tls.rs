//! Mutual TLS from PEM files.
//!
//! # Identity convention
//!
//! Every node holds one certificate, signed by the cluster's CA, whose DNS
//! subject alternative names include `node-<id>` (see
//! [`node_dns_name`]) and whose extended key usage
//! allows both server and client authentication: the same certificate
//! serves the node's peer server and authenticates its outbound links.
//!
//! - A sender verifies the receiver's server certificate against the CA and
//!   the name `node-<receiver id>` (the TLS server name is set to it; the
//!   address may be an IP).
//! - A receiver requires a client certificate signed by the CA, then checks
//!   that it names `node-<sender id>` for the sender id claimed in the link
//!   metadata: a node cannot speak for another one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use omnipaxos::util::NodeId;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::node_dns_name;
use crate::error::Error;

/// Paths of a node's TLS material, all PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate(s) that sign every node certificate.
    pub ca: PathBuf,
    /// This node's certificate chain (leaf first), naming `node-<id>`.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// A node's TLS material, loaded and checked. Clones share it: after
/// [`reload`](Self::reload), every clone's next handshake (an accepted link,
/// a new outbound link, an admin call) uses the new files; links already
/// up keep their session.
#[derive(Clone)]
pub struct TlsMaterial {
    current: Arc<RwLock<Arc<Loaded>>>,
    /// Where it was read from (`None`: PEM given as bytes, not reloadable).
    files: Option<TlsFiles>,
}

/// One load of the files.
struct Loaded {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    leaf: CertificateDer<'static>,
    /// The peer server's rustls configuration: this certificate, and
    /// client certificates of the CA required.
    server: Arc<rustls::ServerConfig>,
    /// The files' stamps when read.
    stamps: Vec<Option<FileStamp>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

const CA: &str = "CA certificate";
const CERT: &str = "certificate";
const KEY: &str = "private key";

impl TlsMaterial {
    /// Reads and checks the three PEM files; errors name the file at fault.
    pub fn load(files: &TlsFiles) -> Result<Self, Error> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| Error::TlsFile {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let stamps = stamps(files);
        let ca = read(CA, &files.ca)?;
        let cert = read(CERT, &files.cert)?;
        let key = read(KEY, &files.key)?;
        let mut loaded = Self::parse(
            ca,
            cert,
            key,
            [&files.ca, &files.cert, &files.key].map(|p| p.display().to_string()),
        )?;
        loaded.stamps = stamps;
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(loaded))),
            files: Some(files.clone()),
        })
    }

    /// Reads the files again and, when they hold a valid CA, certificate
    /// and key whose certificate still names `node-<node>` (with `Some`),
    /// uses them from the next handshake on. On an error nothing changes.
    pub fn reload(&self, node: Option<NodeId>) -> Result<(), Error> {
        let Some(files) = &self.files else {
            return Err(Error::InvalidConfig(
                "TLS material given as bytes cannot be reloaded".to_owned(),
            ));
        };
        let fresh = Self::load(files)?;
        if let Some(node) = node
            && !fresh.names_node(node)
        {
            return Err(Error::TlsIdentity {
                expected: node_dns_name(node),
            });
        }
        // A start takes its files as they are (a handshake tells what is
        // wrong); a reload must not swap a working certificate for one the
        // peers would refuse.
        chains_to_its_ca(&fresh.loaded()).map_err(|reason| Error::TlsPem {
            what: CERT,
            origin: files.cert.display().to_string(),
            reason,
        })?;
        let loaded = Arc::clone(&fresh.loaded());
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(())
    }

    /// Whether one of the files changed (or appeared, or went) since the
    /// last load.
    pub fn changed(&self) -> bool {
        self.files
            .as_ref()
            .is_some_and(|files| stamps(files) != self.loaded().stamps)
    }

    fn loaded(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Checks PEM given as bytes (CA, certificate chain, private key).
    pub fn from_pem(
        ca: impl Into<Vec<u8>>,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<Self, Error> {
        let loaded = Self::parse(
            ca.into(),
            cert.into(),
            key.into(),
            [CA, CERT, KEY].map(|what| format!("memory ({what})")),
        )?;
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(loaded))),
            files: None,
        })
    }

    fn parse(
        ca_pem: Vec<u8>,
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        [ca_origin, cert_origin, key_origin]: [String; 3],
    ) -> Result<Loaded, Error> {
        let bad = |what, origin: &String, reason: String| Error::TlsPem {
            what,
            origin: origin.clone(),
            reason,
        };
        let certs = |what, origin: &String, pem: &[u8]| {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| bad(what, origin, err.to_string()))?;
            if certs.is_empty() {
                return Err(bad(what, origin, "no PEM certificate found".into()));
            }
            Ok(certs)
        };
        let roots = certs(CA, &ca_origin, &ca_pem)?;
        let chain = certs(CERT, &cert_origin, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|err| bad(KEY, &key_origin, err.to_string()))?;
        let server = server_config(roots, chain.clone(), key)
            .map_err(|reason| bad(CERT, &cert_origin, reason))?;
        let mut chain = chain.into_iter();
        let Some(leaf) = chain.next() else {
            return Err(bad(CERT, &cert_origin, "no PEM certificate found".into()));
        };
        webpki::EndEntityCert::try_from(&leaf).map_err(|err| {
            bad(
                CERT,
                &cert_origin,
                format!("not a valid X.509 certificate: {err}"),
            )
        })?;
        Ok(Loaded {
            ca_pem,
            cert_pem,
            key_pem,
            leaf,
            server,
            stamps: Vec::new(),
        })
    }

    /// Whether this node's certificate names `node-<node>`.
    pub fn names_node(&self, node: NodeId) -> bool {
        certificate_names_node(&self.loaded().leaf, node)
    }

    /// The peer server's rustls configuration as of the last load: this
    /// certificate, client certificates signed by the CA required, HTTP/2.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.loaded().server)
    }

    /// The client side of a connection to node `peer`: this certificate
    /// presented, the server's checked against the CA and `node-<peer>`
    /// (also what a node's admin client uses).
    pub fn client_config(&self, peer: NodeId) -> ClientTlsConfig {
        let loaded = self.loaded();
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&loaded.ca_pem))
            .identity(Identity::from_pem(&loaded.cert_pem, &loaded.key_pem))
            .domain_name(node_dns_name(peer))
    }
}

/// Whether the certificate chains to the CA and is valid now, for server
/// and for client authentication (a node's certificate serves both).
fn chains_to_its_ca(loaded: &Loaded) -> Result<(), String> {
    let parse = |pem: &[u8]| {
        CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| err.to_string())
    };
    let roots = parse(&loaded.ca_pem)?;
    let anchors = roots
        .iter()
        .map(|root| webpki::anchor_from_trusted_cert(root).map(|anchor| anchor.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("the CA: {err}"))?;
    let chain = parse(&loaded.cert_pem)?;
    let intermediates = chain.get(1..).unwrap_or_default();
    let leaf = webpki::EndEntityCert::try_from(&loaded.leaf).map_err(|err| err.to_string())?;
    let algorithms = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    let now = rustls_pki_types::UnixTime::now();
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        leaf.verify_for_usage(algorithms, &anchors, intermediates, now, usage, None, None)
            .map_err(|err| {
                format!("does not chain to the CA, or is not valid now, for server and client use: {err:?}")
            })?;
    }
    Ok(())
}

/// The files' stamps, in the order CA, certificate, key.
fn stamps(files: &TlsFiles) -> Vec<Option<FileStamp>> {
    [&files.ca, &files.cert, &files.key]
        .iter()
        .map(|path| file_stamp(path))
        .collect()
}

/// What tells one version of a file from another without reading it: its
/// modification and status-change times, inode and length. A file replaced
/// by one with the same modification time (`cp -p`, an unpacked archive, a
/// tool that keeps times) still differs in its inode or change time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    changed: (i64, i64),
    inode: u64,
    len: u64,
}

/// The stamp of the file at `path` (following links, so a Kubernetes
/// Secret's symlink swap is seen); `None` when it cannot be read.
#[must_use]
pub fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: metadata.modified().ok(),
        changed: (metadata.ctime(), metadata.ctime_nsec()),
        inode: metadata.ino(),
        len: metadata.len(),
    })
}

/// A rustls server configuration (ring) presenting `chain` and `key`,
/// requiring client certificates signed by one of `roots`, speaking
/// HTTP/2 (gRPC).
fn server_config(
    roots: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root).map_err(|err| format!("the CA: {err}"))?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(store), Arc::clone(&provider))
            .build()
            .map_err(|err| format!("the CA: {err}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|err| format!("the certificate and key do not fit: {err}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The DNS name an operator's client certificate carries to change a
/// cluster's members through a node's admin service.
pub const ADMIN_DNS_NAME: &str = "tsoracle-admin";

/// Whether the DER certificate `cert` carries the DNS name `node-<node>`.
/// Chain and validity were already checked by the TLS handshake.
pub(crate) fn certificate_names_node(cert: &CertificateDer<'_>, node: NodeId) -> bool {
    certificate_names(cert, &node_dns_name(node))
}

/// Whether the DER certificate `cert` carries the DNS name `name`. Chain
/// and validity were already checked by the TLS handshake.
pub fn certificate_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(name) = ServerName::try_from(name.to_owned()) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .and_then(|cert| cert.verify_is_valid_for_subject_name(&name))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file replaced by another with the same modification time and
    /// length (`cp -p` of a renewed certificate) has another stamp.
    #[test]
    fn a_file_replaced_with_the_same_modification_time_has_another_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, "old certificate").unwrap();
        let before = file_stamp(&path).unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let aside = dir.path().join("cert.pem.new");
        std::fs::write(&aside, "new certificate").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&aside)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        std::fs::rename(&aside, &path).unwrap();
        let after = file_stamp(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            modified
        );
        assert_ne!(before, after);
        assert_eq!(file_stamp(&path), Some(after), "a stamp is stable");
        assert_eq!(file_stamp(&dir.path().join("missing")), None);
    }
}
