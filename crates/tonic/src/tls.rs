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

use omnipaxos::util::NodeId;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

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

/// A node's TLS material, loaded and checked.
#[derive(Clone)]
pub struct TlsMaterial {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    leaf: CertificateDer<'static>,
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
        let ca = read(CA, &files.ca)?;
        let cert = read(CERT, &files.cert)?;
        let key = read(KEY, &files.key)?;
        Self::parse(
            ca,
            cert,
            key,
            [&files.ca, &files.cert, &files.key].map(|p| p.display().to_string()),
        )
    }

    /// Checks PEM given as bytes (CA, certificate chain, private key).
    pub fn from_pem(
        ca: impl Into<Vec<u8>>,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<Self, Error> {
        Self::parse(
            ca.into(),
            cert.into(),
            key.into(),
            [CA, CERT, KEY].map(|what| format!("memory ({what})")),
        )
    }

    fn parse(
        ca_pem: Vec<u8>,
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        [ca_origin, cert_origin, key_origin]: [String; 3],
    ) -> Result<Self, Error> {
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
        certs(CA, &ca_origin, &ca_pem)?;
        let chain = certs(CERT, &cert_origin, &cert_pem)?;
        PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|err| bad(KEY, &key_origin, err.to_string()))?;
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
        Ok(Self {
            ca_pem,
            cert_pem,
            key_pem,
            leaf,
        })
    }

    /// Whether this node's certificate names `node-<node>`.
    pub fn names_node(&self, node: NodeId) -> bool {
        certificate_names_node(&self.leaf, node)
    }

    pub(crate) fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// The client side of a connection to node `peer`: this certificate
    /// presented, the server's checked against the CA and `node-<peer>`
    /// (also what a node's admin client uses).
    pub fn client_config(&self, peer: NodeId) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(node_dns_name(peer))
    }
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
