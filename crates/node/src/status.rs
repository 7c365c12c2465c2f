//! `tsoracle-paxos status`: each node's role, ballot, indices, high-water
//! and lag, read from the nodes' metrics endpoints.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tsoracle_paxos_metrics::{
    BALLOT, COMPACTED, DECIDED, HIGH_WATER, LEADER, PENDING, ROLE, parse,
};

use crate::error::Error;

/// Fetches `http://<addr>/metrics` (plain HTTP/1.0, bounded by a timeout).
async fn fetch(addr: &str) -> Result<String, Error> {
    let request = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    match tokio::time::timeout(Duration::from_secs(3), request).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(err)) => Err(Error::Client(format!("{addr}: {err}"))),
        Err(_) => Err(Error::Client(format!("{addr}: no answer within 3 s"))),
    }
}

/// Renders the status table of the nodes behind `endpoints`.
pub(crate) async fn run(endpoints: &[String]) -> Result<String, Error> {
    let mut rows = Vec::new();
    for addr in endpoints {
        match fetch(addr).await {
            Ok(page) => rows.push((addr.clone(), Some(parse(&page)))),
            Err(err) => rows.push((format!("{addr} ({err})"), None)),
        }
    }
    let max_decided = rows
        .iter()
        .filter_map(|(_, m)| m.as_ref()?.get(DECIDED).copied())
        .fold(0.0, f64::max);
    let mut out = format!(
        "{:<24} {:<9} {:>7} {:>7} {:>10} {:>10} {:>20} {:>8} {:>6}\n",
        "node", "role", "ballot", "leader", "decided", "compacted", "high-water", "pending", "lag"
    );
    for (addr, metrics) in rows {
        let Some(m) = metrics else {
            out.push_str(&format!("{addr:<24} unreachable\n"));
            continue;
        };
        let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        let role = match get(ROLE) as i64 {
            2 => "leader",
            1 => "follower",
            _ => "unknown",
        };
        out.push_str(&format!(
            "{addr:<24} {role:<9} {:>7} {:>7} {:>10} {:>10} {:>20} {:>8} {:>6}\n",
            get(BALLOT),
            get(LEADER),
            get(DECIDED),
            get(COMPACTED),
            get(HIGH_WATER),
            get(PENDING),
            max_decided - get(DECIDED),
        ));
    }
    Ok(out)
}
