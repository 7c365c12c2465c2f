//! `tsoracle-paxos member list|add|remove|replace|move-leader`: the
//! operator's side of membership changes and leader moves, over a node's
//! admin service (on its peer port, behind its mutual TLS).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use tonic::Code;
use tsoracle_paxos_tonic::{TlsFiles, TlsMaterial};

use crate::admin::proto::change_request::Change;
use crate::admin::proto::{ChangeRequest, Member, MembersReply, MoveLeaderRequest};
use crate::admin::{AdminTarget, DEFAULT_CHANGE_WAIT, connect, members_of, request};
use crate::error::Error;

/// How long `replace` waits, at most, between looks at the new member.
const CATCH_UP_POLL: Duration = Duration::from_millis(200);

/// Which cluster, which nodes to ask, and how to authenticate.
#[derive(Debug, Clone, Args)]
pub(crate) struct AdminArgs {
    /// The cluster's name (as its nodes' --cluster-id).
    #[arg(long, env = "TSORACLE_PAXOS_CLUSTER_ID")]
    cluster_id: String,
    /// A member's peer address, `ID=HOST:PORT` (repeat for several; they
    /// are tried in order until one answers).
    #[arg(long = "node", value_name = "ID=HOST:PORT", required = true)]
    nodes: Vec<String>,
    /// PEM file of the cluster CA (with mutual TLS between peers).
    #[arg(long, value_name = "FILE", env = "TSORACLE_PAXOS_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// PEM admin client certificate: it must name `tsoracle-admin` to
    /// change members (any certificate of the CA may list them).
    #[arg(long, value_name = "FILE", env = "TSORACLE_PAXOS_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the admin certificate.
    #[arg(long, value_name = "FILE", env = "TSORACLE_PAXOS_TLS_KEY", requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// How long a change may take before the command gives up waiting (the
    /// change goes on; repeat the command to wait again).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_CHANGE_WAIT.as_secs())]
    wait_secs: u64,
}

/// The new member of `add` and `replace`.
#[derive(Debug, Clone, Args)]
pub(crate) struct NewMember {
    /// The new member's id: never used in this cluster before (1..=4096).
    #[arg(long)]
    id: u64,
    /// Its peer address, HOST:PORT (as its --peer-listen is reached).
    #[arg(long, value_name = "HOST:PORT")]
    peer_address: String,
    /// Its client address, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    client_address: String,
}

/// `member`'s commands.
#[derive(Debug, Subcommand)]
pub(crate) enum MemberCommand {
    /// Print the member list of the newest configuration the first
    /// answering node runs, the leader it sees, and a change in progress.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Add a member. Start it first or right after, with an empty data
    /// directory and `--initial-cluster-state join`; it catches up on its
    /// own.
    Add {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        member: NewMember,
    },
    /// Remove a member (the leader too: a member that stays takes the lead
    /// of the next configuration at once). The removed node stops by
    /// itself, exit code 0.
    Remove {
        #[command(flatten)]
        admin: AdminArgs,
        /// The member's id.
        #[arg(long)]
        id: u64,
    },
    /// Replace a member: add the new one, wait until it applied the new
    /// configuration's start (caught up), then remove the old one.
    Replace {
        #[command(flatten)]
        admin: AdminArgs,
        /// The id of the member to replace.
        #[arg(long)]
        old: u64,
        #[command(flatten)]
        member: NewMember,
    },
    /// Move leadership to another member (before maintenance of the
    /// leader's machine): the leader stops serving, releases its lease and
    /// lets the successor take over at once, without waiting out an
    /// election or the lease. `serve` does the same by itself on SIGTERM.
    MoveLeader {
        #[command(flatten)]
        admin: AdminArgs,
        /// The successor's id (default: the leader picks, among the
        /// followers that granted its lease rounds, so are up and follow
        /// it, the one furthest in the log).
        #[arg(long)]
        to: Option<u64>,
    },
}

impl MemberCommand {
    /// Runs the command; returns what to print.
    pub(crate) async fn run(self) -> Result<String, Error> {
        match self {
            Self::List { admin } => {
                let admin = Admin::new(admin)?;
                let (target, reply) = admin.ask_members().await?;
                Ok(describe(target.node, &reply))
            }
            Self::Add { admin, member } => {
                let admin = Admin::new(admin)?;
                let reply = admin.change(Change::Add(member.wire())).await?;
                Ok(format!(
                    "added node {}\n{}",
                    member.id,
                    describe(reply.node, &reply)
                ))
            }
            Self::MoveLeader { admin, to } => {
                let admin = Admin::new(admin)?;
                let leader = admin.move_leader(to).await?;
                Ok(format!("node {leader} leads"))
            }
            Self::Remove { admin, id } => {
                let admin = Admin::new(admin)?;
                let reply = admin.change(Change::Remove(id)).await?;
                Ok(format!(
                    "removed node {id}\n{}",
                    describe(reply.node, &reply)
                ))
            }
            Self::Replace { admin, old, member } => {
                if old == member.id {
                    return Err(Error::Config(format!(
                        "--old and --id are both {old}: a replacement needs a new id"
                    )));
                }
                let admin = Admin::new(admin)?;
                // A repeated replace (the first one's answer was lost, or it
                // stopped waiting) finds the new node added already.
                let configuration = match admin.change(Change::Add(member.wire())).await {
                    Ok(added) => added.configuration,
                    Err(err) if err.to_string().contains("is already a member") => {
                        let (_, now) = admin.ask_members().await?;
                        eprintln!(
                            "node {} is already a member (configuration {}); going on",
                            member.id, now.configuration
                        );
                        now.configuration
                    }
                    Err(err) => return Err(err),
                };
                eprintln!(
                    "added node {} (configuration {configuration}); waiting until it caught up",
                    member.id
                );
                admin.await_caught_up(&member, configuration).await?;
                eprintln!("node {} caught up; removing node {old}", member.id);
                let reply = admin.change(Change::Remove(old)).await?;
                Ok(format!(
                    "replaced node {old} by node {}\n{}",
                    member.id,
                    describe(reply.node, &reply)
                ))
            }
        }
    }
}

impl NewMember {
    fn wire(&self) -> Member {
        Member {
            id: self.id,
            peer: self.peer_address.clone(),
            client: self.client_address.clone(),
        }
    }
}

pub(crate) struct Admin {
    pub(crate) cluster_id: String,
    pub(crate) targets: Vec<AdminTarget>,
    pub(crate) tls: Option<TlsMaterial>,
    pub(crate) wait: Duration,
}

impl Admin {
    pub(crate) fn new(args: AdminArgs) -> Result<Self, Error> {
        let targets = args
            .nodes
            .iter()
            .map(|spec| parse_target(spec))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match (args.tls_ca, args.tls_cert, args.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(
                TlsMaterial::load(&TlsFiles { ca, cert, key })
                    .map_err(|err| Error::Tls(err.to_string()))?,
            ),
            _ => None,
        };
        Ok(Self {
            cluster_id: args.cluster_id,
            targets,
            tls,
            wait: Duration::from_secs(args.wait_secs.max(1)),
        })
    }

    /// The member list of the first node that answers.
    pub(crate) async fn ask_members(&self) -> Result<(AdminTarget, MembersReply), Error> {
        let mut failures = Vec::new();
        for target in &self.targets {
            match members_of(target, &self.cluster_id, self.tls.as_ref(), self.wait).await {
                Ok(reply) => return Ok((target.clone(), reply)),
                Err(err) => failures.push(err.to_string()),
            }
        }
        Err(Error::Client(format!(
            "no node answered: {}",
            failures.join("; ")
        )))
    }

    /// The targets to ask for a change: the leader first (only it proposes
    /// one; the answering node names it), then the `--node`s in order.
    pub(crate) async fn leader_first(&self) -> Vec<AdminTarget> {
        let mut order = Vec::new();
        if let Ok((_, reply)) = self.ask_members().await
            && let Some(leader) = reply.members.iter().find(|m| m.id == reply.leader)
        {
            order.push(AdminTarget {
                node: leader.id,
                address: leader.peer.clone(),
            });
        }
        let leader = order.first().map(|l| l.node);
        order.extend(
            self.targets
                .iter()
                .filter(|t| Some(t.node) != leader)
                .cloned(),
        );
        order
    }

    /// Asks the leader (as the first answering node sees it) to hand its
    /// leadership to `to`; returns the node then leading.
    async fn move_leader(&self, to: Option<u64>) -> Result<u64, Error> {
        let (_, reply) = self.ask_members().await?;
        let Some(leader) = reply.members.iter().find(|m| m.id == reply.leader) else {
            return Err(Error::Client(
                "no leader is known right now: nothing to move (check `member list`)".to_owned(),
            ));
        };
        if to == Some(leader.id) {
            return Ok(leader.id);
        }
        let target = AdminTarget {
            node: leader.id,
            address: leader.peer.clone(),
        };
        let mut client = connect(&target, self.tls.as_ref()).await?;
        let wait = self.wait.min(Duration::from_secs(60));
        let wire = MoveLeaderRequest {
            to: to.unwrap_or(0),
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let deadline = wait + Duration::from_secs(5);
        client
            .move_leader(request(&self.cluster_id, wire, deadline)?)
            .await
            .map(|reply| reply.into_inner().leader)
            .map_err(|status| Error::Client(format!("node {}: {}", leader.id, status.message())))
    }

    /// Asks for `change`, the leader first, until a node carries it out; a
    /// node that cannot be reached, has no quorum or does not lead is
    /// passed over (three rounds, the leader asked again each time), a
    /// refusal ends the command.
    async fn change(&self, change: Change) -> Result<MembersReply, Error> {
        let mut failures = Vec::new();
        for round in 0..3 {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            match self.change_once(&change, &mut failures).await {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(err) => return Err(err),
            }
        }
        Err(Error::Client(format!(
            "no node could carry out the change: {}",
            failures.join("; ")
        )))
    }

    /// One round of [`change`](Self::change): `None` when every node was
    /// passed over (the reasons pushed to `failures`).
    async fn change_once(
        &self,
        change: &Change,
        failures: &mut Vec<String>,
    ) -> Result<Option<MembersReply>, Error> {
        for target in &self.leader_first().await {
            let mut client = match connect(target, self.tls.as_ref()).await {
                Ok(client) => client,
                Err(err) => {
                    failures.push(err.to_string());
                    continue;
                }
            };
            let wire = ChangeRequest {
                change: Some(change.clone()),
                wait_ms: u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX),
            };
            // The server's own wait ends first; this deadline only covers
            // a node that stopped answering.
            let deadline = self.wait + Duration::from_secs(5);
            match client
                .change_membership(request(&self.cluster_id, wire, deadline)?)
                .await
            {
                Ok(reply) => return Ok(Some(reply.into_inner())),
                Err(status) => match status.code() {
                    Code::Unavailable | Code::Unknown | Code::Cancelled => {
                        failures.push(format!("node {}: {}", target.node, status.message()));
                    }
                    Code::DeadlineExceeded => {
                        return Err(Error::Client(format!(
                            "node {}: {} (the change goes on: repeat the command to wait for it, \
                             and check `member list`)",
                            target.node,
                            status.message()
                        )));
                    }
                    _ => {
                        return Err(Error::Client(format!(
                            "node {} refused the change: {}",
                            target.node,
                            status.message()
                        )));
                    }
                },
            }
        }
        Ok(None)
    }

    /// Waits until `member` applied the start of `configuration` (or a
    /// later one): it holds the cluster's state and votes.
    async fn await_caught_up(&self, member: &NewMember, configuration: u32) -> Result<(), Error> {
        let target = AdminTarget {
            node: member.id,
            address: member.peer_address.clone(),
        };
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        let mut reported = Instant::now();
        while started.elapsed() < self.wait {
            match members_of(
                &target,
                &self.cluster_id,
                self.tls.as_ref(),
                CATCH_UP_POLL * 5,
            )
            .await
            {
                Ok(reply) if reply.configuration >= configuration && reply.started => return Ok(()),
                Ok(reply) => {
                    last = format!(
                        "it runs configuration {} (started: {}, decided index {})",
                        reply.configuration, reply.started, reply.decided
                    );
                }
                Err(err) => last = err.to_string(),
            }
            if reported.elapsed() >= Duration::from_secs(5) {
                reported = Instant::now();
                eprintln!("still waiting for node {}: {last}", member.id);
            }
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
        Err(Error::Client(format!(
            "node {} did not catch up within {:?} ({last}); it stays a member: start it \
             (`serve --initial-cluster-state join`), then run `member remove --id ...` for \
             the old member yourself",
            member.id, self.wait
        )))
    }
}

/// `ID=HOST:PORT`.
fn parse_target(spec: &str) -> Result<AdminTarget, Error> {
    let bad = || Error::Config(format!("--node {spec:?}: expected ID=HOST:PORT"));
    let (id, address) = spec.split_once('=').ok_or_else(bad)?;
    let node: u64 = id.trim().parse().map_err(|_| bad())?;
    if address
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(bad());
    }
    Ok(AdminTarget {
        node,
        address: address.trim().to_owned(),
    })
}

/// The member list as printed.
fn describe(asked: u64, reply: &MembersReply) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "configuration {} (as node {asked} sees it{})",
        reply.configuration,
        if reply.started {
            ""
        } else {
            "; not started on it yet"
        }
    );
    let _ = writeln!(out, "{:>6}  {:<24}  {:<24}  role", "id", "peer", "client");
    for member in &reply.members {
        let role = if member.id == reply.leader {
            "leader"
        } else {
            "member"
        };
        let _ = writeln!(
            out,
            "{:>6}  {:<24}  {:<24}  {role}",
            member.id, member.peer, member.client
        );
    }
    if !reply.pending.is_empty() {
        let ids: Vec<String> = reply.pending.iter().map(|m| m.id.to_string()).collect();
        let _ = writeln!(
            out,
            "a change to [{}] is agreed and not finished (repeat its command to finish it)",
            ids.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_need_an_id_and_a_port() {
        let target = parse_target("3=10.0.0.3:6001").unwrap();
        assert_eq!((target.node, target.address.as_str()), (3, "10.0.0.3:6001"));
        for bad in ["10.0.0.3:6001", "x=h:1", "3=h", "3=:1", "3=h:99999"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_list_marks_the_leader_and_a_change_in_progress() {
        let member = |id| Member {
            id,
            peer: format!("h:{}", 6000 + id),
            client: format!("h:{}", 7000 + id),
        };
        let reply = MembersReply {
            configuration: 2,
            members: vec![member(1), member(2), member(4)],
            started: true,
            leader: 2,
            pending: vec![member(1), member(2)],
            node: 1,
            decided: 10,
        };
        let text = describe(1, &reply);
        assert!(
            text.starts_with("configuration 2 (as node 1 sees it)"),
            "{text}"
        );
        assert!(
            text.contains("h:6002                    h:7002                    leader"),
            "{text}"
        );
        assert_eq!(text.matches("member\n").count(), 2, "{text}");
        assert!(text.contains("a change to [1, 2] is agreed"), "{text}");
    }
}
