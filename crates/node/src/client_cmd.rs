//! `get-ts` and `seq`: one-shot calls with the real tsoracle client.

use tsoracle_client::{Client, ClientBuilder};

use crate::error::Error;

async fn connect(endpoints: &[String]) -> Result<Client, Error> {
    if endpoints.is_empty() {
        return Err(Error::Config(
            "give at least one --endpoint HOST:PORT".to_owned(),
        ));
    }
    ClientBuilder::endpoints(endpoints.to_vec())
        .build()
        .await
        .map_err(|err| Error::Client(format!("cannot connect to {endpoints:?}: {err}")))
}

/// Prints `count` timestamps, one per line.
pub(crate) async fn get_ts(endpoints: &[String], count: u32) -> Result<Vec<u64>, Error> {
    let client = connect(endpoints).await?;
    let timestamps = client
        .get_ts_batch(count)
        .await
        .map_err(|err| Error::Client(format!("get_ts failed: {err}")))?;
    Ok(timestamps.into_iter().map(|ts| ts.0).collect())
}

/// Takes a dense block of `count` for `key`; returns its start.
pub(crate) async fn seq(endpoints: &[String], key: &str, count: u32) -> Result<u64, Error> {
    let client = connect(endpoints).await?;
    let block = client
        .get_seq(key, count)
        .await
        .map_err(|err| Error::Client(format!("get_seq failed: {err}")))?;
    Ok(block.start)
}
