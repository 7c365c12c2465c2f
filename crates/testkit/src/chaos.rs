//! `tsoracle-paxos-testkit chaos`: real node processes, real faults, a checked
//! history.
//!
//! It starts `--nodes` `serve` child processes on 127.0.0.1 whose peer links
//! all pass through a [`FaultProxy`] (one listener per directed link; the
//! clients connect to the nodes directly), drives the real tsoracle client
//! from `--workers` workers (one client and one request in flight each,
//! `get_ts` and every tenth a `get_seq`), and meanwhile injects faults from
//! a seeded schedule ([`plan()`]): `kill -9` of a node (often the leader) and
//! its restart, a link cut between two nodes, a one-way cut, the isolation
//! of the leader from its peers while clients still reach it, and a pause
//! (SIGSTOP, then SIGCONT) of the leader or sometimes another node while
//! requests keep flowing to it from workers pinned to it ([`pinned`]). One
//! fault at a time, so a majority stays connected. After the last fault
//! everything is healed and a quiet period follows, in which progress must
//! resume within its length (liveness).
//!
//! Then the shared checker runs over the recorded history (duplicates,
//! real-time order, per-worker order, dense blocks against the final
//! counter) and a report gives operations by kind, faults by kind,
//! availability (the share of 100 ms buckets with a successful operation,
//! and the longest gap) and the verdicts; `--report` writes it as JSON. The
//! run exits non-zero on a violation, a liveness failure, or a node that
//! exited on its own. Every child is stopped on every exit path (the
//! [`Cluster`] guard), Ctrl-C and SIGTERM included.

mod pinned;
mod plan;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tsoracle_client::{Client, RetryPolicy};
use tsoracle_paxos_checker::{History, check};
use tsoracle_paxos_testkit::cluster::{Cluster, Serve, Setup};

use self::pinned::PinnedLoad;
use self::plan::{Fault, Kind, Step, Who, plan};
use self::report::{
    ChaosReport, Check, Event, FaultKind, Faults, Latency, OpCount, Ops, Pinned, availability,
    ok_counts, recovery_ms, worst_gaps,
};

use crate::error::Error;
use crate::fault_proxy::{FaultProxy, Mode};
use crate::load::{
    Mix, Shared, collect, connect_with, forge, read_final_counter, ready_client_with,
    spawn_workers, verdicts,
};
use crate::run::{RunDir, interrupted, println_out, serve_nodes};

/// The per-attempt deadline of the regular workers' clients (which know
/// every endpoint). Well under a pause: with the client's default of 2 s
/// every worker whose leader cache points at a paused leader would wait
/// out the pause on it, nobody would be served by its successor while it
/// is stopped, and a resumed leader answering from its old window would go
/// unnoticed. Still far above a request's latency outside faults.
const WORKER_ATTEMPT_DEADLINE: Duration = Duration::from_millis(300);

/// The nodes' timestamp window, `tsoracle-server`'s default, passed
/// explicitly: an aligned pause is timed against it (see
/// [`plan::ALIGN_MARGIN`]).
const WINDOW_AHEAD: Duration = Duration::from_secs(3);

fn worker_policy() -> RetryPolicy {
    RetryPolicy {
        per_attempt_deadline: WORKER_ATTEMPT_DEADLINE,
        ..RetryPolicy::default()
    }
}

/// `chaos` flags.
#[derive(Debug, Clone, Args)]
pub(crate) struct ChaosArgs {
    /// The whole run, faults and the final quiet period included: `60s`,
    /// `60` (seconds), `2m` or `1500ms`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule; printed at the start, and the same seed
    /// replays the same schedule. Random when not given.
    #[arg(long)]
    seed: Option<u64>,
    /// Only these kinds of fault, comma-separated (by default: kill,
    /// link-cut, one-way-cut, isolation, pause, restart: SIGTERM, a planned
    /// restart in which a leader hands over first). `replace` (only when
    /// named) replaces the leader or a drawn node by a new member under
    /// load, once, after the other faults.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KINDS")]
    faults: Vec<Kind>,
    /// Cluster size, 3 to 9.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Concurrent client workers, each with one request in flight, all
    /// knowing every node. (A pause adds its own workers, pinned to the
    /// paused node.)
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// The fault-free period at the end of the run; after the final heal
    /// an operation must complete within it, or the run fails.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    quiet: Duration,
    /// Keep the data and node logs here (by default a temporary directory,
    /// kept only when the run fails).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Run the nodes with this `tsoracle-paxos` binary (by default with
    /// this binary's own copy of its command line).
    #[arg(long, value_name = "PATH")]
    node_bin: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Also write the recorded history (every successful operation with
    /// its worker, invocation and response times in µs since the load
    /// started, and result) as JSON to this file, to study a violation.
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Test hook: corrupt the recorded history before checking it (swap two
    /// timestamps of operations far apart), to show the checker can fail.
    #[arg(long, hide = true)]
    forge_history: bool,
}

/// Parses `60`, `60s`, `2m` or `1500ms`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 60s, 60, 2m, 1500ms)"))?;
    match unit.trim() {
        "" | "s" => Ok(Duration::from_secs(number)),
        "ms" => Ok(Duration::from_millis(number)),
        "m" => Ok(Duration::from_secs(number.saturating_mul(60))),
        other => Err(format!(
            "unknown unit {other:?} in {text:?} (use ms, s or m)"
        )),
    }
}

/// Runs chaos; `Ok(true)` when every check passed.
pub(crate) async fn run(args: ChaosArgs) -> Result<bool, Error> {
    if !(3..=9).contains(&args.nodes) {
        return Err(Error::Config(
            "--nodes must be 3 to 9: a fault takes one node out and the rest must keep a quorum"
                .to_owned(),
        ));
    }
    if !(1..=64).contains(&args.workers) {
        return Err(Error::Config("--workers must be 1 to 64".to_owned()));
    }
    if args.quiet < Duration::from_secs(1) {
        return Err(Error::Config(format!(
            "--quiet {:?} is too short: progress needs at least 1s to show after the final heal",
            args.quiet
        )));
    }
    if args.duration < args.quiet + Duration::from_secs(3) {
        return Err(Error::Config(format!(
            "--duration {:?} is too short: it must be at least --quiet ({:?}) + 3s",
            args.duration, args.quiet
        )));
    }
    if args.duration > Duration::from_secs(24 * 3600) {
        return Err(Error::Config("--duration must be at most 24h".to_owned()));
    }
    let seed = args.seed.unwrap_or_else(random_seed);
    let dir = RunDir::new(args.dir.as_deref(), "chaos")?;
    let mut nodes = serve_nodes(args.node_bin.as_deref(), "chaos")?;
    nodes.add_args([
        "--window-ahead-ms".to_owned(),
        WINDOW_AHEAD.as_millis().to_string(),
    ]);
    let mut cluster = Cluster::plan(nodes, Setup::new(args.nodes, dir.path()))?;
    let targets: Vec<_> = cluster
        .ids()
        .filter_map(|id| cluster.peer_listen(id).map(|addr| (id, addr)))
        .collect();
    let proxy = FaultProxy::start(&targets).await?;
    for (from, _) in &targets {
        for (to, _) in &targets {
            if let Some(via) = proxy.addr(*from, *to) {
                cluster.launcher_mut().set_route(*from, *to, via);
            }
        }
    }
    // Waits (blocking) until every node listens.
    tokio::task::block_in_place(|| cluster.start())?;
    let result = tokio::select! {
        result = drive(&mut cluster, &proxy, &args, seed) => result,
        signal = interrupted() => Err(Error::runtime("chaos", format!("interrupted by {signal}"))),
    };
    cluster.stop();
    drop(proxy);
    let passed = matches!(result, Ok(true));
    dir.finish(!passed);
    if !passed {
        println_out(&format!("replay this schedule with --seed {seed}"));
    }
    result
}

fn random_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(nanos) ^ (u64::from(std::process::id()) << 32)
}

/// The run's state while faults are injected.
struct Run<'a> {
    cluster: &'a mut Cluster<Serve>,
    proxy: &'a FaultProxy,
    client: Arc<Client>,
    shared: Arc<Shared>,
    faults: Faults,
    events: Vec<Event>,
    /// Nodes that exited without being killed: a crash, always a failure.
    crashed: Vec<String>,
    /// Each fault's kind and start (µs since the load started).
    started: Vec<(FaultKind, u64)>,
    /// The workers pinned to paused nodes.
    pinned: PinnedLoad,
    next_progress: Duration,
    last_ok: u64,
}

/// How to undo a fault.
enum Undo {
    Restart(u64),
    Open(Vec<(u64, u64)>),
    /// SIGCONT the node, paused at this time (µs since the load started).
    Resume(u64, u64),
    /// Nothing to undo (a replacement).
    Nothing,
}

async fn drive(
    cluster: &mut Cluster<Serve>,
    proxy: &FaultProxy,
    args: &ChaosArgs,
    seed: u64,
) -> Result<bool, Error> {
    let (client, ready) = ready_client_with(
        cluster.endpoints(),
        worker_policy(),
        Duration::from_secs(60),
    )
    .await?;
    let faults_end = args.duration - args.quiet;
    let steps = plan(seed, args.nodes, &args.faults, faults_end);
    println_out(&format!(
        "chaos: seed {seed} (replay with --seed {seed}); {} nodes up in {ready:.1?}, \
         peer links through the fault proxy; {} workers for {:.0?}; {} faults until {:.0?}, \
         then a quiet period of {:.0?}",
        args.nodes,
        args.workers,
        args.duration,
        steps.len(),
        faults_end,
        args.quiet
    ));
    // One client per worker, each with its own leader cache: while the
    // leader is isolated some workers may still be talking to it as others
    // already reach its successor, the case real-time order is about.
    // The first is also the run's view of the leader.
    let mut clients = vec![Arc::clone(&client)];
    for _ in 1..args.workers {
        clients.push(connect_with(cluster.endpoints(), worker_policy()).await?);
    }
    let shared = Arc::new(Shared::new(None));
    let tasks = spawn_workers(args.workers, &clients, &shared, Mix::DENSE_EVERY_TENTH);
    let mut run = Run {
        cluster,
        proxy,
        client: Arc::clone(&client),
        shared: Arc::clone(&shared),
        faults: Faults::default(),
        events: Vec::new(),
        crashed: Vec::new(),
        started: Vec::new(),
        pinned: PinnedLoad::new(args.workers),
        next_progress: Duration::from_secs(5),
        last_ok: 0,
    };
    let (healed_at, load_end) = run.faults_then_quiet(&steps, args).await?;
    // Every request is bounded by the client's own deadline (10 s); this
    // bounds the wait even if one were not.
    let (mut history, mut latency) = tokio::time::timeout(Duration::from_secs(30), collect(tasks))
        .await
        .map_err(|_| Error::runtime("chaos", "the client workers did not stop within 30 s"))??;
    let pinned = run.pinned.finish(&mut history, &mut latency).await?;
    let counter_read = read_final_counter(&client, &mut history, Duration::from_secs(10)).await;
    if args.forge_history {
        forge(&mut history);
    }
    if let Some(path) = &args.history {
        write_history(&history, path)?;
        println_out(&format!("history written to {}", path.display()));
    }
    let report = assess(
        args,
        seed,
        Observed {
            history,
            latency,
            failed: shared.errors.load(Ordering::Relaxed),
            seq_failed: shared.dense_errors.load(Ordering::Relaxed),
            counter_read,
            healed_at,
            load_end,
            faults: run.faults,
            events: run.events,
            crashed: run.crashed,
            started: run.started,
            pinned,
        },
    );
    report.print();
    if let Some(path) = &args.report {
        report.write(path)?;
        println_out(&format!("report written to {}", path.display()));
    }
    Ok(report.pass)
}

/// Writes `history` as JSON to `path` (its directory created).
fn write_history(history: &History, path: &std::path::Path) -> Result<(), Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|err| Error::runtime("chaos history", err))?;
    }
    let json =
        serde_json::to_string(history).map_err(|err| Error::runtime("chaos history", err))?;
    std::fs::write(path, json + "\n").map_err(|err| {
        Error::runtime(
            "chaos history",
            format!("cannot write {}: {err}", path.display()),
        )
    })
}

/// What a run observed, for [`assess`].
struct Observed {
    history: History,
    latency: Histogram<u64>,
    /// Failed requests, and among them `get_seq`s.
    failed: u64,
    seq_failed: u64,
    /// Whether the final dense counter was read (into `history`).
    counter_read: bool,
    /// When the final heal happened and the load stopped (µs since start).
    healed_at: u64,
    load_end: u64,
    faults: Faults,
    events: Vec<Event>,
    crashed: Vec<String>,
    started: Vec<(FaultKind, u64)>,
    pinned: Pinned,
}

/// Checks the history and liveness and puts the report together.
fn assess(args: &ChaosArgs, seed: u64, seen: Observed) -> ChaosReport {
    let checked = check(&seen.history);
    let completions: Vec<u64> = seen.history.ops.iter().map(|op| op.completed).collect();
    let recovery = recovery_ms(&completions, seen.healed_at);
    let mut checks: Vec<Check> = verdicts(&checked)
        .into_iter()
        .map(|(pass, rule)| Check {
            pass,
            rule: rule.to_owned(),
        })
        .collect();
    checks.extend([
        Check {
            pass: recovery.is_some_and(|ms| ms <= args.quiet.as_secs_f64() * 1000.0),
            rule: format!(
                "an operation completed within {:.0?} of the final heal",
                args.quiet
            ),
        },
        Check {
            pass: seen.counter_read,
            rule: "the final dense counter could be read".to_owned(),
        },
        Check {
            pass: seen.crashed.is_empty(),
            rule: if seen.crashed.is_empty() {
                "no node exited on its own".to_owned()
            } else {
                format!("no node exited on its own ({})", seen.crashed.join("; "))
            },
        },
    ]);
    let (ts_ok, seq_ok) = ok_counts(&seen.history);
    let ms = |q: f64| seen.latency.value_at_quantile(q) as f64 / 1000.0;
    ChaosReport {
        // Any violation fails the run, also one of a rule the lines above
        // do not name.
        pass: checked.is_ok() && checks.iter().all(|c| c.pass),
        seed,
        nodes: args.nodes,
        workers: args.workers,
        duration_s: seen.load_end as f64 / 1e6,
        ops: Ops {
            get_ts: OpCount {
                ok: ts_ok,
                failed: seen.failed.saturating_sub(seen.seq_failed),
            },
            get_seq: OpCount {
                ok: seq_ok,
                failed: seen.seq_failed,
            },
        },
        timestamps: checked.timestamps,
        dense_blocks: checked.dense_blocks,
        faults: seen.faults,
        pinned: seen.pinned,
        availability: availability(&completions, 0, seen.load_end),
        quiet_availability: availability(&completions, seen.healed_at, seen.load_end),
        recovery_ms: recovery,
        recovery_bound_ms: u64::try_from(args.quiet.as_millis()).unwrap_or(u64::MAX),
        latency_ms: Latency {
            p50: ms(0.5),
            p99: ms(0.99),
            max: seen.latency.max() as f64 / 1000.0,
        },
        checks,
        violation_count: checked.violations.len(),
        violations: checked
            .violations
            .iter()
            .take(20)
            .map(ToString::to_string)
            .collect(),
        worst_gaps_ms: worst_gaps(&completions, &seen.started, seen.load_end),
        events: seen.events,
    }
}

impl Run<'_> {
    /// Injects the planned faults one at a time, then heals everything and
    /// runs the quiet period; stops the workers at the end. Returns when the
    /// final heal happened and when the load stopped (µs since its start).
    async fn faults_then_quiet(
        &mut self,
        steps: &[Step],
        args: &ChaosArgs,
    ) -> Result<(u64, u64), Error> {
        for step in steps {
            self.wait_until(step.at).await;
            if !self.crashed.is_empty() {
                break; // no more faults on top of a crash; report it
            }
            let (undo, end) = self.inject(step).await?;
            self.wait_until(end).await;
            self.undo(undo)?;
        }
        self.wait_until(args.duration - args.quiet).await;
        // The final heal: every link open, every node running.
        self.proxy.heal_all();
        for id in self.cluster.members() {
            if self.cluster.is_paused(id) {
                self.cluster.resume(id)?;
                self.event(format!("final heal: SIGCONT node {id}"));
            }
            if !self.cluster.is_up(id) {
                self.cluster.restart(id)?;
                self.event(format!("final heal: restart node {id}"));
            }
        }
        let healed_at = self.shared.micros();
        self.event("final heal: every link open, every node up".to_owned());
        self.wait_until(args.duration).await;
        self.shared.stop.store(true, Ordering::Relaxed);
        let load_end = self.shared.micros();
        self.check_crashes();
        Ok((healed_at, load_end))
    }

    fn event(&mut self, what: String) {
        let at = self.shared.micros();
        println_out(&format!("{:>7.1}s  {what}", at as f64 / 1e6));
        self.events.push(Event {
            at_ms: at / 1000,
            what,
        });
    }

    /// The node the client last saw leading.
    fn leader(&self) -> Option<u64> {
        self.client
            .cached_leader()
            .and_then(|e| self.cluster.node_of(&e))
    }

    /// Sleeps until `at` (since the load started), printing progress every
    /// 5 s and noticing nodes that exit on their own.
    async fn wait_until(&mut self, at: Duration) {
        let deadline = Instant::from_std(self.shared.start) + at;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let tick = (now + Duration::from_millis(250)).min(deadline);
            tokio::time::sleep_until(tick).await;
            self.check_crashes();
            let elapsed = self.shared.start.elapsed();
            if elapsed >= self.next_progress {
                self.next_progress += Duration::from_secs(5);
                let ok = self.shared.ok.load(Ordering::Relaxed);
                let leader = self
                    .leader()
                    .map_or_else(|| "?".to_owned(), |id| id.to_string());
                println_out(&format!(
                    "{:>7.1}s  {ok} ok (+{}), {} failed, leader: node {leader}",
                    elapsed.as_secs_f64(),
                    ok - self.last_ok,
                    self.shared.errors.load(Ordering::Relaxed)
                ));
                self.last_ok = ok;
            }
        }
    }

    fn check_crashes(&mut self) {
        for (id, status) in self.cluster.exited() {
            if self.cluster.is_retired(id) && status.success() {
                self.event(format!("node {id} left the cluster ({status})"));
                continue;
            }
            let what = format!("node {id} exited on its own ({status})");
            self.event(what.clone());
            self.crashed.push(what);
        }
    }

    /// Resolves whom a node fault hits, and whether it is the leader the
    /// client sees: a leader target falls back to its drawn node when no
    /// leader is known.
    fn resolve(&self, who: Who) -> (u64, bool) {
        let leader = self.leader();
        match who {
            Who::Leader { fallback } => leader.map_or((fallback, false), |id| (id, true)),
            Who::Node(id) => (id, leader == Some(id)),
        }
    }

    /// Starts `step`'s fault; returns how to undo it and when (since the
    /// load started): `hold` after it started, which an aligned pause
    /// may put up to `slack` after `at`.
    async fn inject(&mut self, step: &Step) -> Result<(Undo, Duration), Error> {
        let kind = match step.fault {
            Fault::Kill(_) => FaultKind::Kill,
            Fault::LinkCut(..) => FaultKind::LinkCut,
            Fault::OneWayCut { .. } => FaultKind::OneWayCut,
            Fault::LeaderIsolation { .. } => FaultKind::Isolation,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Terminate(_) => FaultKind::Restart,
            Fault::Replace(_) => FaultKind::Replace,
        };
        self.started.push((kind, self.shared.micros()));
        let hold = step.hold;
        let role = |leads: bool| if leads { " (the leader)" } else { "" };
        let end = step.at + hold;
        Ok(match step.fault {
            Fault::Kill(who) => {
                let (node, leads) = self.resolve(who);
                self.cluster.kill(node);
                self.faults.kills += 1;
                self.faults.leader_kills += u64::from(leads);
                self.event(format!(
                    "kill -9 node {node}{}; restart in {hold:.1?}",
                    role(leads)
                ));
                (Undo::Restart(node), end)
            }
            Fault::Terminate(who) => {
                let (node, leads) = self.resolve(who);
                let from = self.cluster.log_len(node);
                // Waits for the exit: the hand-over takes up to 2 s.
                let status = tokio::task::block_in_place(|| self.cluster.terminate(node));
                let handed = self
                    .cluster
                    .log_since(node, from)
                    .contains("leadership handed over before stopping");
                self.faults.terminations += 1;
                self.faults.leader_terminations += u64::from(leads);
                self.faults.hand_overs += u64::from(handed);
                let exit =
                    status.map_or_else(|| "it was not running".to_owned(), |s| s.to_string());
                self.event(format!(
                    "SIGTERM node {node}{}: {exit}{}; restart in {hold:.1?}",
                    role(leads),
                    if handed {
                        ", after handing its leadership over"
                    } else {
                        ""
                    }
                ));
                if status.is_some_and(|status| !status.success()) {
                    let what = format!("node {node} did not exit 0 on SIGTERM ({exit})");
                    self.event(what.clone());
                    self.crashed.push(what);
                }
                (Undo::Restart(node), end)
            }
            Fault::LinkCut(a, b) => {
                self.proxy.set(a, b, Mode::Cut);
                self.proxy.set(b, a, Mode::Cut);
                self.faults.link_cuts += 1;
                self.event(format!(
                    "cut the links between node {a} and node {b} for {hold:.1?}"
                ));
                (Undo::Open(vec![(a, b), (b, a)]), end)
            }
            Fault::OneWayCut { from, to } => {
                self.proxy.set(from, to, Mode::Stall);
                self.faults.one_way_cuts += 1;
                self.event(format!(
                    "stall node {from} -> node {to} (one way; {to} -> {from} still flows) \
                     for {hold:.1?}"
                ));
                (Undo::Open(vec![(from, to)]), end)
            }
            Fault::LeaderIsolation { fallback } => {
                let (node, leads) = self.resolve(Who::Leader { fallback });
                let links = self.proxy.links_of(node);
                for &(from, to) in &links {
                    self.proxy.set(from, to, Mode::Cut);
                }
                if leads {
                    self.faults.leader_isolations += 1;
                } else {
                    self.faults.other_isolations += 1;
                }
                self.event(format!(
                    "isolate node {node}{} from its peers (clients still reach it) \
                     for {hold:.1?}",
                    role(leads)
                ));
                (Undo::Open(links), end)
            }
            Fault::Pause { who, align } => {
                let (node, leads) = self.resolve(who);
                let endpoint = self
                    .cluster
                    .endpoint(node)
                    .ok_or_else(|| Error::runtime("chaos", format!("no node {node}")))?;
                let clients = PinnedLoad::connect(&endpoint, hold, leads).await?;
                let mut timing = "";
                if align && leads {
                    // Whatever of the slack the connecting left.
                    let within = (step.at + step.slack).saturating_sub(self.shared.start.elapsed());
                    timing = match clients.first() {
                        Some(client)
                            if pinned::await_window(
                                client,
                                WINDOW_AHEAD,
                                hold + plan::ALIGN_MARGIN,
                                within,
                            )
                            .await =>
                        {
                            " (inside its timestamp window)"
                        }
                        _ => " (its window's end unknown)",
                    };
                }
                self.cluster.pause(node)?;
                let stopped = self.shared.micros();
                self.faults.pauses += 1;
                self.faults.leader_pauses += u64::from(leads);
                let from = Duration::from_micros(stopped);
                let end = from + hold;
                let pinned = self.pinned.start(clients, &self.shared, from, end);
                self.event(format!(
                    "SIGSTOP node {node}{} for {hold:.1?}{timing}; {pinned} workers pinned \
                     to it keep sending",
                    role(leads)
                ));
                (Undo::Resume(node, stopped), end)
            }
            Fault::Replace(who) => {
                let (old, leads) = self.resolve(who);
                let started = self.shared.start.elapsed();
                let new = tokio::task::block_in_place(|| self.cluster.add_node())?;
                self.event(format!(
                    "replace node {old}{}: node {new} started in join mode",
                    role(leads)
                ));
                let output = self.member_replace(old, new).await?;
                if !output.status.success() {
                    let what = format!(
                        "member replace of node {old} by node {new} failed: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    );
                    self.event(what.clone());
                    self.crashed.push(what);
                    return Ok((Undo::Nothing, self.shared.start.elapsed()));
                }
                // It leaves by itself (exit 0) once the change is done.
                self.cluster.retire(old);
                self.faults.replacements += 1;
                self.faults.leader_replacements += u64::from(leads);
                let took = self.shared.start.elapsed().saturating_sub(started);
                self.event(format!(
                    "node {old} replaced by node {new} in {took:.1?} ({})",
                    String::from_utf8_lossy(&output.stdout)
                        .lines()
                        .next()
                        .unwrap_or_default()
                ));
                (Undo::Nothing, end.max(self.shared.start.elapsed()))
            }
        })
    }

    /// Runs `member replace --old old --id new`, asking the other members
    /// in turn (bounded: the command's own wait, 60 s, and a kill after 90 s).
    async fn member_replace(&self, old: u64, new: u64) -> Result<std::process::Output, Error> {
        let address = |id: u64| {
            self.cluster
                .peer_listen(id)
                .ok_or_else(|| Error::runtime("chaos", format!("no node {id}")))
        };
        let client = self
            .cluster
            .endpoint(new)
            .ok_or_else(|| Error::runtime("chaos", format!("no node {new}")))?;
        let mut command = self.cluster.launcher().member_command("replace");
        for id in self.cluster.members() {
            if id != old && id != new {
                command.args(["--node", &format!("{id}={}", address(id)?)]);
            }
        }
        command
            .args(["--old", &old.to_string(), "--id", &new.to_string()])
            .args(["--peer-address", &address(new)?.to_string()])
            .args(["--client-address", &client])
            .args(["--wait-secs", "60"])
            .stdin(std::process::Stdio::null());
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(90), command.output())
            .await
            .map_err(|_| Error::runtime("chaos", "member replace ran for 90 s"))?
            .map_err(|err| Error::runtime("chaos: member replace", err))
    }

    fn undo(&mut self, undo: Undo) -> Result<(), Error> {
        match undo {
            Undo::Restart(node) => {
                self.cluster.restart(node)?;
                self.faults.restarts += 1;
                self.event(format!("restart node {node}"));
            }
            Undo::Open(links) => {
                for &(from, to) in &links {
                    self.proxy.set(from, to, Mode::Open);
                }
                self.faults.heals += 1;
                self.event("heal".to_owned());
            }
            Undo::Resume(node, stopped) => {
                self.cluster.resume(node)?;
                self.pinned.paused(stopped, self.shared.micros());
                self.faults.resumes += 1;
                self.event(format!("SIGCONT node {node}"));
            }
            Undo::Nothing => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_or_without_a_unit() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5h").unwrap_err().contains("unknown unit"));
    }
}
