//! `tsoracle-paxos export`: the cluster's state at a linearized point,
//! written to a versioned JSON file (see [`crate::export`]) from which
//! `serve --restore-from` starts a new cluster above it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use tonic::{Code, Response};

use crate::admin::proto::ExportRequest;
use crate::admin::{connect, request};
use crate::error::Error;
use crate::export::Document;
use crate::member_cmd::{Admin, AdminArgs};

/// `export`'s arguments.
#[derive(Debug, Clone, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Where to write the export (JSON). Written aside, synced and renamed
    /// into place: a crash leaves the old file or the whole new one.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
    /// Export the first answering node's own applied state, without the
    /// barrier through the log: for a cluster that lost its quorum. NOT
    /// linearized: it may miss what the lost majority decided; add margins
    /// (--add-ms, --add-dense). See docs/operations.md, "Lose quorum".
    #[arg(long)]
    local: bool,
    /// Milliseconds to add to the exported high-water (the new cluster's
    /// timestamps start above it).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    add_ms: u64,
    /// A number to add to every exported dense counter (the new cluster's
    /// blocks start above it).
    #[arg(long, value_name = "N", default_value_t = 0)]
    add_dense: u64,
}

/// Runs `export`; returns what to print.
pub(crate) async fn run(args: ExportArgs) -> Result<String, Error> {
    if args.out.exists() && !args.force {
        return Err(Error::Config(format!(
            "{} exists; give --force to replace it",
            args.out.display()
        )));
    }
    let admin = Admin::new(args.admin)?;
    let mut failures = Vec::new();
    let targets = if args.local {
        // The node named first that answers: one survivor's own state.
        admin.targets.clone()
    } else {
        admin.leader_first().await
    };
    for target in targets {
        let answer = async {
            let mut client = connect(&target, admin.tls.as_ref()).await?;
            client
                .export(request(
                    &admin.cluster_id,
                    ExportRequest { local: args.local },
                    admin.wait,
                )?)
                .await
                .map(Response::into_inner)
                .map_err(|status| {
                    let retry = status.code() == Code::FailedPrecondition;
                    Error::Client(format!(
                        "node {}{}: {}",
                        target.node,
                        if retry { " (not the leader)" } else { "" },
                        status.message()
                    ))
                })
        }
        .await;
        match answer {
            Ok(reply) => {
                let mut document: Document =
                    serde_json::from_slice(&reply.document).map_err(|err| {
                        Error::Client(format!(
                            "node {} sent no export document: {err}",
                            target.node
                        ))
                    })?;
                document.add_margins(args.add_ms, args.add_dense);
                let bytes = serde_json::to_vec_pretty(&document)
                    .map_err(|err| Error::runtime("JSON", err))?;
                write_atomically(&args.out, &bytes)?;
                return Ok(format!(
                    "exported cluster {:?} from node {} ({}) at decided index {}: high-water {}, \
                     {} dense keys, {} leases -> {}\n",
                    document.cluster_id,
                    document.exported_by,
                    if document.linearized {
                        "linearized"
                    } else {
                        "this node's own state, NOT linearized"
                    },
                    document.decided_index,
                    document.high_water,
                    document.dense.len(),
                    document.leases.len(),
                    args.out.display()
                ));
            }
            Err(err) => failures.push(err.to_string()),
        }
    }
    Err(Error::Client(format!(
        "no node exported the state (a leader and a quorum are needed): {}",
        failures.join("; ")
    )))
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or
/// the whole new one: a temporary file beside it, synced, renamed, and the
/// directory synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let failed = |what: &str, err: std::io::Error| {
        Error::Client(format!("cannot {what} {}: {err}", path.display()))
    };
    let aside = path.with_extension("partial");
    let mut file = std::fs::File::create(&aside).map_err(|err| failed("create", err))?;
    file.write_all(bytes).map_err(|err| failed("write", err))?;
    file.sync_all().map_err(|err| failed("sync", err))?;
    drop(file);
    std::fs::rename(&aside, path).map_err(|err| failed("rename into", err))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| failed("sync the directory of", err))
}
