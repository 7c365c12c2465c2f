//! `get-ts` and `seq`: one-shot calls with the real tsoracle client, over
//! TLS when `--tls-ca` is given.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tsoracle_client::{Client, ClientBuilder};

use crate::error::Error;

/// How long a client command may take to connect to one endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// TLS to the client port: the `--tls-*` flags of `get-ts`, `seq` and the
/// test kit's `bench`.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientTlsArgs {
    /// PEM CA that signed the nodes' client port certificates: connect
    /// with TLS (without it, plaintext).
    #[arg(long = "tls-ca", value_name = "FILE", env = "TSORACLE_PAXOS_CLIENT_CA")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a client port that requires one
    /// (`serve --client-tls-ca`).
    #[arg(long = "tls-cert", value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long = "tls-key", value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// The name the nodes' certificates must carry (default: each
    /// endpoint's host).
    #[arg(long = "tls-domain", value_name = "NAME", requires = "tls_ca")]
    tls_domain: Option<String>,
}

impl ClientTlsArgs {
    fn config(&self) -> Result<Option<ClientTlsConfig>, Error> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|err| {
                Error::Tls(format!("cannot read the {what} {}: {err}", path.display()))
            })
        };
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "CA")?));
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config = config.identity(Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        if let Some(domain) = &self.tls_domain {
            config = config.domain_name(domain.clone());
        }
        Ok(Some(config))
    }
}

impl ClientTlsArgs {
    /// A client builder for `endpoints`, over TLS when `--tls-ca` was
    /// given (leader hints are dialled with TLS too).
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when a file cannot be read.
    pub fn client_builder(&self, endpoints: Vec<String>) -> Result<ClientBuilder, Error> {
        let mut builder = ClientBuilder::endpoints(endpoints);
        if let Some(config) = self.config()? {
            builder = builder.channel_connector(move |endpoint: &str| {
                // Leader hints name the host and port; any scheme becomes https.
                let address = endpoint
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .to_owned();
                let config = config.clone();
                async move {
                    let channel = Endpoint::from_shared(format!("https://{address}"))?
                        .connect_timeout(CONNECT_TIMEOUT)
                        .tls_config(config)?
                        .connect()
                        .await?;
                    Ok(channel)
                }
            });
        }
        Ok(builder)
    }
}

async fn connect(endpoints: &[String], tls: &ClientTlsArgs) -> Result<Client, Error> {
    if endpoints.is_empty() {
        return Err(Error::Config(
            "give at least one --endpoint HOST:PORT".to_owned(),
        ));
    }
    tls.client_builder(endpoints.to_vec())?
        .build()
        .await
        .map_err(|err| Error::Client(format!("cannot connect to {endpoints:?}: {err}")))
}

/// Prints `count` timestamps, one per line.
pub(crate) async fn get_ts(
    endpoints: &[String],
    tls: &ClientTlsArgs,
    count: u32,
) -> Result<Vec<u64>, Error> {
    let client = connect(endpoints, tls).await?;
    let timestamps = client
        .get_ts_batch(count)
        .await
        .map_err(|err| Error::Client(format!("get_ts failed: {err}")))?;
    Ok(timestamps.into_iter().map(|ts| ts.0).collect())
}

/// Takes a dense block of `count` for `key`; returns its start.
pub(crate) async fn seq(
    endpoints: &[String],
    tls: &ClientTlsArgs,
    key: &str,
    count: u32,
) -> Result<u64, Error> {
    let client = connect(endpoints, tls).await?;
    let block = client
        .get_seq(key, count)
        .await
        .map_err(|err| Error::Client(format!("get_seq failed: {err}")))?;
    Ok(block.start)
}
