//! `tsoracle-paxos status`: every member's role, ballot, indices, lag,
//! identity, health and links, asked of each member's admin service (its
//! `Status` call, on the peer port), as a table or as JSON. The command
//! fails (non-zero exit) when a member does not answer or no member leads.

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use tonic::Response;

use crate::admin::proto::{StatusReply, StatusRequest};
use crate::admin::{AdminTarget, connect, request};
use crate::error::Error;
use crate::member_cmd::{Admin, AdminArgs};

/// How long one member may take to answer.
const ASK_WAIT: Duration = Duration::from_secs(3);

/// `status`'s arguments.
#[derive(Debug, Clone, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Print one JSON object (every member, and the problems found)
    /// instead of a table.
    #[arg(long)]
    json: bool,
}

/// One member as `status` reports it.
#[derive(Debug, Serialize)]
struct MemberView {
    id: u64,
    peer_address: String,
    /// How far its decided index trails the furthest member's (`None`
    /// when it did not answer).
    lag: Option<u64>,
    /// Its own view, as it answered (`None` when it did not).
    status: Option<StatusReply>,
    /// Why it did not answer.
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    cluster_id: String,
    members: Vec<MemberView>,
    /// Empty when every member answered and one leads.
    problems: Vec<String>,
}

/// Runs `status`: what to print, and the problems that make it fail.
pub(crate) async fn run(args: StatusArgs) -> Result<(String, Vec<String>), Error> {
    let json = args.json;
    let mut admin = Admin::new(args.admin)?;
    // A frozen member must not hold the command for the change deadline.
    admin.wait = admin.wait.min(ASK_WAIT);
    let mut targets = match admin.ask_members().await {
        Ok((_, reply)) => reply
            .members
            .iter()
            .map(|m| AdminTarget {
                node: m.id,
                address: m.peer.clone(),
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    // The `--node`s the member list does not name (a node that left, or
    // no member answered at all).
    for given in &admin.targets {
        if !targets.iter().any(|t: &AdminTarget| t.node == given.node) {
            targets.push(given.clone());
        }
    }
    targets.sort_by_key(|t| t.node);
    let mut members = Vec::with_capacity(targets.len());
    for target in &targets {
        let answer = ask(&admin, target).await;
        members.push(match answer {
            Ok(reply) => MemberView {
                id: target.node,
                peer_address: target.address.clone(),
                lag: None,
                status: Some(reply),
                error: None,
            },
            Err(err) => MemberView {
                id: target.node,
                peer_address: target.address.clone(),
                lag: None,
                status: None,
                error: Some(err.to_string()),
            },
        });
    }
    let furthest = members
        .iter()
        .filter_map(|m| m.status.as_ref().map(|s| s.decided))
        .max()
        .unwrap_or(0);
    for member in &mut members {
        member.lag = member
            .status
            .as_ref()
            .map(|status| furthest.saturating_sub(status.decided));
    }
    let report = Report {
        cluster_id: admin.cluster_id.clone(),
        problems: problems(&members),
        members,
    };
    let text = if json {
        let mut text =
            serde_json::to_string_pretty(&report).map_err(|err| Error::runtime("JSON", err))?;
        text.push('\n');
        text
    } else {
        table(&report)
    };
    Ok((text, report.problems))
}

async fn ask(admin: &Admin, target: &AdminTarget) -> Result<StatusReply, Error> {
    let call = async {
        let mut client = connect(target, admin.tls.as_ref()).await?;
        client
            .status(request(&admin.cluster_id, StatusRequest {}, ASK_WAIT)?)
            .await
            .map(Response::into_inner)
            .map_err(|status| {
                Error::Client(format!(
                    "node {} refused its status: {}",
                    target.node,
                    status.message()
                ))
            })
    };
    tokio::time::timeout(ASK_WAIT, call).await.map_err(|_| {
        Error::Client(format!(
            "node {} at {}: no answer within {ASK_WAIT:?}",
            target.node, target.address
        ))
    })?
}

/// What makes `status` fail: a member that did not answer, no leader, or
/// more than one node serving as leader.
fn problems(members: &[MemberView]) -> Vec<String> {
    let mut problems: Vec<String> = members
        .iter()
        .filter_map(|m| {
            m.error
                .as_ref()
                .map(|err| format!("node {} is unreachable: {err}", m.id))
        })
        .collect();
    let leaders: Vec<u64> = members
        .iter()
        .filter(|m| m.status.as_ref().is_some_and(|s| s.role == "leader"))
        .map(|m| m.id)
        .collect();
    match leaders.as_slice() {
        [] => problems.push("no member serves as leader".to_owned()),
        [_] => {}
        several => problems.push(format!("several members serve as leader: {several:?}")),
    }
    problems
}

fn table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<4} {:<9} {:>6} {:>9} {:>6} {:>10} {:>10} {:>6} {:>20} {:<5} {:<5} {:<14} links \
         (peer:up/rtt)",
        "id",
        "role",
        "leader",
        "ballot",
        "config",
        "decided",
        "applied",
        "lag",
        "high-water",
        "live",
        "ready",
        "instance/inc",
    );
    for member in &report.members {
        let Some(s) = &member.status else {
            let _ = writeln!(
                out,
                "{:<4} unreachable  {}",
                member.id,
                member.error.as_deref().unwrap_or_default()
            );
            continue;
        };
        let links: Vec<String> = s
            .peers
            .iter()
            .map(|p| {
                let state = if p.up { "up" } else { "DOWN" };
                match p.round_trip_us {
                    Some(us) => format!("{}:{state}/{:.1}ms", p.id, us as f64 / 1000.0),
                    None => format!("{}:{state}", p.id),
                }
            })
            .collect();
        let instance: String = s.instance.chars().take(8).collect();
        let _ = writeln!(
            out,
            "{:<4} {:<9} {:>6} {:>9} {:>6} {:>10} {:>10} {:>6} {:>20} {:<5} {:<5} {:<14} {}",
            member.id,
            s.role,
            s.leader,
            format!("{}.{}", s.ballot, s.ballot_node),
            s.configuration,
            s.decided,
            s.applied,
            member.lag.unwrap_or_default(),
            s.high_water,
            if s.live { "yes" } else { "NO" },
            if s.ready { "yes" } else { "NO" },
            format!("{instance}/{}", s.incarnation),
            links.join(" ")
        );
    }
    for problem in &report.problems {
        let _ = writeln!(out, "problem: {problem}");
    }
    out
}
