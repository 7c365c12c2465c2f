//! `cargo xtask image`: the container image of `deploy/Dockerfile`, built
//! and run where the machine can.
//!
//! A full build of the Dockerfile pulls two base images (`rust`, `debian`)
//! from an image registry and compiles for 15 minutes in release mode. This
//! step builds the file's runtime stage instead, the part an operator runs,
//! around the node binary the tests' build made (debug sections stripped),
//! on a Debian base made locally with debootstrap for the host's own release
//! (so the binary's glibc and libstdc++ are the ones it was linked against).
//! Then it runs the image as a three-node cluster and checks that:
//! - the image's user is 10001:10001 and the node runs as uid 10001;
//! - all three containers become ready (`/readyz`) and serve timestamps to
//!   the host's `tsoracle-paxos get-ts` through their client ports;
//! - `podman stop` (SIGTERM) ends each with exit status 0;
//! - started again, they serve from the state their volumes kept: above
//!   every timestamp handed out before.
//!
//! Where podman, debootstrap or root is missing, the host is not Debian, or
//! debootstrap cannot reach the Debian archive (only its first run needs
//! it), it says which and skips; with `XTASK_REQUIRE_IMAGE=1` a
//! skip fails instead (for a CI host that must check the image). After
//! that, every failure fails it.
//!
//! The images and containers it makes are named after this process and
//! labelled `tsoracle-paxos-ci`; they are removed when it ends, and a run
//! first removes what a killed run left (the base image stays: it is made
//! once per machine).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tsoracle_paxos_testkit::process::{CommandLine, free_port, http_get};

use crate::cmd::{Bins, Step};

/// The label on every image and container this step makes, but the base.
const LABEL: &str = "tsoracle-paxos-ci";
/// Set to 1: a skip fails the step.
const REQUIRE: &str = "XTASK_REQUIRE_IMAGE";
/// The uid and gid the Dockerfile gives the node.
const NODE_UID: &str = "10001";
/// What debootstrap prints when the Debian archive cannot be reached.
const ARCHIVE_UNREACHABLE: &[&str] = &[
    "Failed getting release file",
    "Temporary failure resolving",
    "Could not resolve",
    "Connection refused",
    "Network is unreachable",
];
/// How long a node may take to become ready, and a client call to answer.
const READY_WITHIN: Duration = Duration::from_secs(60);

pub(crate) fn check(bins: &Bins) -> Result<()> {
    Step::new(
        "container image (deploy/Dockerfile's runtime stage, podman)",
        "",
    )
    .run_fn(|| {
        let skip = |Skip(why)| {
            if std::env::var_os(REQUIRE).is_some_and(|value| value == "1") {
                bail!("the image cannot be checked here ({REQUIRE}=1): {why}");
            }
            eprintln!("  skipped: {why}");
            Ok(())
        };
        let podman = match Podman::detect() {
            Ok(podman) => podman,
            Err(why) => return skip(why),
        };
        podman.remove_leftovers();
        let base = match podman.base()? {
            Ok(base) => base,
            Err(why) => return skip(why),
        };
        let images = Images::new(&podman);
        podman.build(&base, &bins.node, &images)?;
        podman.run_cluster(&bins.node, &images)
    })
}

/// This run's two images (named after the process), removed on drop.
struct Images<'a> {
    podman: &'a Podman,
    /// The image of `deploy/Dockerfile` this run builds.
    node: String,
    /// The image holding the binary at `/out/tsoracle-paxos` (`BINARY_IMAGE`).
    binary: String,
}

impl<'a> Images<'a> {
    fn new(podman: &'a Podman) -> Self {
        let pid = std::process::id();
        Self {
            podman,
            node: format!("localhost/tsoracle-paxos-ci/node:{pid}"),
            binary: format!("localhost/tsoracle-paxos-ci/binary:{pid}"),
        }
    }
}

impl Drop for Images<'_> {
    fn drop(&mut self) {
        if let Err(err) =
            self.podman
                .quiet(&["rmi", "--force", "--ignore", &self.node, &self.binary])
        {
            eprintln!("  could not remove the images: {err:#}");
        }
    }
}

/// Why the step cannot run on this machine.
struct Skip(String);

/// The podman command line, with the options every `run` and `build` takes.
struct Podman {
    common: Vec<String>,
}

impl Podman {
    fn detect() -> std::result::Result<Self, Skip> {
        if !on_path("podman") {
            return Err(Skip(
                "podman is not installed (Debian: apt-get install podman runc debootstrap)"
                    .to_owned(),
            ));
        }
        let mut common = Vec::new();
        // crun, podman's default runtime on Debian, refuses hosts whose
        // cgroups are in hybrid mode; runc runs there as well as anywhere.
        if on_path("runc") {
            common.extend(["--runtime".to_owned(), "runc".to_owned()]);
        }
        // As root, podman raises the container's open-file and process
        // limits above the host's, which a host that withholds
        // CAP_SYS_RESOURCE refuses; a node needs far less than these.
        common.extend(
            [
                "--ulimit",
                "nofile=4096:4096",
                "--ulimit",
                "nproc=4096:4096",
            ]
            .map(str::to_owned),
        );
        Ok(Self { common })
    }

    /// The runtime base: a debootstrap of the host's Debian release,
    /// imported once per machine and kept in podman's storage.
    fn base(&self) -> Result<std::result::Result<String, Skip>> {
        let Some(release) = host_debian_release() else {
            return Ok(Err(Skip(
                "the host is not Debian: the base image is a debootstrap of the host's release"
                    .to_owned(),
            )));
        };
        let tag = format!("localhost/tsoracle-paxos-ci/debian:{release}");
        // The archive is the only network this step needs; a machine that
        // cannot reach it cannot make the base, which is a skip.
        if self.quiet(&["image", "exists", &tag]).is_ok() {
            eprintln!("  base image {tag} (made earlier on this machine)");
            return Ok(Ok(tag));
        }
        if !on_path("debootstrap") {
            return Ok(Err(Skip(format!(
                "no {tag} yet, and debootstrap, which makes it, is not installed"
            ))));
        }
        if !crate::env::running_as_root() {
            return Ok(Err(Skip("debootstrap needs root".to_owned())));
        }
        eprintln!("  making the base image {tag} with debootstrap (once per machine)");
        let dir = tempfile::tempdir().context("a directory for the base's root")?;
        let rootfs = dir.path().join("rootfs");
        if let Err(err) = run(Command::new("debootstrap")
            .args(["--variant=minbase", &release])
            .arg(&rootfs))
        {
            // Unreachable archive: a skip; any other failure (a full disk,
            // a broken debootstrap) fails the step.
            let text = format!("{err:#}");
            if ARCHIVE_UNREACHABLE.iter().any(|sign| text.contains(sign)) {
                return Ok(Err(Skip(format!(
                    "debootstrap cannot reach the Debian archive: {text}"
                ))));
            }
            return Err(err.context("debootstrap"));
        }
        let tarball = dir.path().join("rootfs.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg("."))
        .context("packing the base's root")?;
        self.quiet(&["import", &path_str(&tarball)?, &tag])?;
        Ok(Ok(tag))
    }

    /// Removes the containers and images a killed run left behind.
    fn remove_leftovers(&self) {
        let filter = format!("label={LABEL}");
        // Names and tags carry the pid of the run that made them: only a
        // dead run's are left over (another checkout's run may be going).
        let dead = |name: &str| {
            run_pid(name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        };
        let listed = |args: &[&str]| -> Vec<String> {
            self.quiet(args)
                .map(|out| {
                    out.split_whitespace()
                        .filter(|name| dead(name))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let containers = listed(&["ps", "--all", "--format", "{{.Names}}", "--filter", &filter]);
        if !containers.is_empty() {
            eprintln!("  removing {containers:?}, left by a run that ended");
            let refs: Vec<&str> = containers.iter().map(String::as_str).collect();
            if let Err(err) = self.quiet(&[&["rm", "--force", "--volumes"][..], &refs].concat()) {
                eprintln!("  could not remove them: {err:#}");
            }
        }
        let images = listed(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            &filter,
        ]);
        if !images.is_empty() {
            eprintln!("  removing {images:?}, left by a run that ended");
            let refs: Vec<&str> = images.iter().map(String::as_str).collect();
            if let Err(err) = self.quiet(&[&["rmi", "--force", "--ignore"][..], &refs].concat()) {
                eprintln!("  could not remove them: {err:#}");
            }
        }
    }

    /// Builds `images.node` from `deploy/Dockerfile`, its binary (in
    /// `images.binary`) from `node`.
    fn build(&self, base: &str, node: &Path, images: &Images<'_>) -> Result<()> {
        let context = tempfile::tempdir().context("a build context for the binary")?;
        let out = context.path().join("out");
        std::fs::create_dir(&out).context("creating the binary's directory")?;
        let binary = out.join("tsoracle-paxos");
        // The dev build carries full debug sections (most of its size);
        // symbols stay, as in the Dockerfile's builder.
        run(Command::new("objcopy")
            .arg("--strip-debug")
            .arg(node)
            .arg(&binary))
        .context("stripping the node binary")?;
        let containerfile = context.path().join("Containerfile");
        std::fs::write(
            &containerfile,
            format!("FROM scratch\nLABEL {LABEL}=1\nCOPY out/tsoracle-paxos /out/tsoracle-paxos\n"),
        )
        .context("writing the binary's Containerfile")?;
        eprintln!("  building {} (the node binary alone)", images.binary);
        // --layers=false: no intermediate image per instruction, so
        // removing the tag removes everything the build made.
        self.quiet(&[
            "build",
            "--quiet",
            "--layers=false",
            "-f",
            &path_str(&containerfile)?,
            "-t",
            &images.binary,
            &path_str(context.path())?,
        ])?;
        let root = crate::bench::workspace_root();
        eprintln!("  building {} from deploy/Dockerfile", images.node);
        let mut args: Vec<String> = vec!["build".to_owned(), "--layers=false".to_owned()];
        args.extend(self.common.iter().cloned());
        args.extend(
            [
                "-f",
                "deploy/Dockerfile",
                "--ignorefile",
                "deploy/Dockerfile.dockerignore",
                "--build-arg",
                &format!("BINARY_IMAGE={}", images.binary),
                "--build-arg",
                &format!("RUNTIME_IMAGE={base}"),
                "--label",
                &format!("{LABEL}=1"),
                "-t",
                &images.node,
                ".",
            ]
            .map(str::to_owned),
        );
        run(Command::new("podman").args(&args).current_dir(&root))
            .context("podman build -f deploy/Dockerfile")?;
        let user = self.quiet(&[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}",
            &images.node,
        ])?;
        ensure!(
            user.trim() == format!("{NODE_UID}:{NODE_UID}"),
            "the image runs as {:?}, not {NODE_UID}:{NODE_UID}",
            user.trim()
        );
        Ok(())
    }

    /// Runs three containers of `images.node` as one cluster and checks
    /// them.
    fn run_cluster(&self, node: &Path, images: &Images<'_>) -> Result<()> {
        let cluster = Containers::create(self, &images.node)?;
        let client = CommandLine::new(node, &[]);
        cluster.wait_ready()?;
        for name in cluster.names() {
            let uids = cluster.process_uids(&name)?;
            ensure!(
                uids.len() == 4 && uids.iter().all(|uid| uid == NODE_UID),
                "{name}'s node runs with uids {uids:?} (real, effective, saved, filesystem), \
                 not {NODE_UID}"
            );
        }
        let before = cluster.get_ts(&client, 3)?;
        ensure!(
            before.windows(2).all(|pair| pair[0] < pair[1]),
            "timestamps out of order: {before:?}"
        );
        eprintln!("  three containers ready as uid {NODE_UID}; timestamps {before:?}");
        cluster.stop_cleanly()?;
        self.quiet(&[&["start"][..], &cluster.name_refs()].concat())?;
        cluster.wait_ready()?;
        let after = cluster.get_ts(&client, 1)?;
        let highest = before.iter().max().copied().unwrap_or(0);
        ensure!(
            after.iter().all(|&ts| ts > highest),
            "after a restart the cluster handed out {after:?}, not above {highest}"
        );
        eprintln!("  restarted from their volumes; timestamp {after:?} above {highest}");
        cluster.stop_cleanly()
    }

    /// `podman args...` with its output captured: stdout, or an error
    /// carrying stderr.
    fn quiet(&self, args: &[&str]) -> Result<String> {
        let output = Command::new("podman")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("could not start podman")?;
        if !output.status.success() {
            bail!(
                "podman {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Three containers of one cluster; removed, with their volumes, on drop
/// (a killed run's are removed by the next run: they carry [`LABEL`]).
struct Containers<'a> {
    podman: &'a Podman,
    /// Container name -> the port of its `/metrics`, `/livez`, `/readyz`.
    http: BTreeMap<String, u16>,
    client_endpoints: Vec<String>,
}

impl<'a> Containers<'a> {
    fn create(podman: &'a Podman, image: &str) -> Result<Self> {
        let ids = 1..=3_u64;
        let ports: Vec<(u64, u16, u16, u16)> = ids
            .map(|id| (id, free_port(), free_port(), free_port()))
            .collect();
        let peers = ports
            .iter()
            .map(|(id, peer, client, _)| format!("{id}=127.0.0.1:{peer},127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(";");
        let mut cluster = Self {
            podman,
            http: BTreeMap::new(),
            client_endpoints: Vec::new(),
        };
        for (id, peer, client, http) in ports {
            let name = format!("tsoracle-paxos-ci-{}-{id}", std::process::id());
            // Settings as environment variables, as the Kubernetes manifest
            // passes them. The host's network: the host's client reaches
            // the client ports on 127.0.0.1 without a bridge network.
            let env = [
                format!("TSORACLE_PAXOS_NODE_ID={id}"),
                "TSORACLE_PAXOS_CLUSTER_ID=image-check".to_owned(),
                "TSORACLE_PAXOS_DATA_DIR=/var/lib/tsoracle-paxos".to_owned(),
                format!("TSORACLE_PAXOS_PEER_LISTEN=127.0.0.1:{peer}"),
                format!("TSORACLE_PAXOS_CLIENT_LISTEN=127.0.0.1:{client}"),
                format!("TSORACLE_PAXOS_METRICS_LISTEN=127.0.0.1:{http}"),
                format!("TSORACLE_PAXOS_PEERS={peers}"),
                "TSORACLE_PAXOS_INITIAL_CLUSTER_STATE=new".to_owned(),
            ];
            let mut args: Vec<String> = ["run", "--detach", "--network", "host", "--label"]
                .map(str::to_owned)
                .to_vec();
            args.push(format!("{LABEL}=1"));
            args.push("--name".to_owned());
            args.push(name.clone());
            args.extend(podman.common.iter().cloned());
            for pair in env {
                args.extend(["--env".to_owned(), pair]);
            }
            args.push(image.to_owned());
            // Registered before it starts, so a failed start is removed too.
            cluster.http.insert(name, http);
            cluster.client_endpoints.push(format!("127.0.0.1:{client}"));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            podman.quiet(&refs)?;
        }
        Ok(cluster)
    }

    fn names(&self) -> Vec<String> {
        self.http.keys().cloned().collect()
    }

    fn name_refs(&self) -> Vec<&str> {
        self.http.keys().map(String::as_str).collect()
    }

    /// Waits until every container answers 200 on `/readyz`.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        for (name, &port) in &self.http {
            loop {
                let answer = http_get(port, "/readyz");
                if answer.as_ref().is_some_and(|(code, _)| *code == 200) {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "{name} not ready after {READY_WITHIN:?} (last answer {answer:?}); its log ends:\n{}",
                        self.log_tail(name)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    fn log_tail(&self, name: &str) -> String {
        self.podman
            .quiet(&["logs", "--tail", "20", name])
            .unwrap_or_else(|err| format!("(no log: {err:#})"))
    }

    /// The uids (real, effective, saved, filesystem) of the container's
    /// main process, read from the host's /proc (root podman: no user
    /// namespace, so they are the host's).
    fn process_uids(&self, name: &str) -> Result<Vec<String>> {
        let pid = self
            .podman
            .quiet(&["inspect", "--format", "{{.State.Pid}}", name])?;
        crate::env::process_uids(pid.trim())
            .with_context(|| format!("no uids readable for {name}'s process {}", pid.trim()))
    }

    /// `count` timestamps from the host's client, through every endpoint.
    fn get_ts(&self, client: &CommandLine, count: u32) -> Result<Vec<u64>> {
        let mut args = vec!["get-ts".to_owned(), "--count".to_owned(), count.to_string()];
        for endpoint in &self.client_endpoints {
            args.extend(["--endpoint".to_owned(), endpoint.clone()]);
        }
        let output = client
            .run_within(&args, READY_WITHIN)
            .map_err(|output| failed("get-ts", &output))?;
        ensure!(output.status.success(), "{}", failed("get-ts", &output));
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                line.trim()
                    .parse()
                    .with_context(|| format!("get-ts printed {line:?}"))
            })
            .collect()
    }

    /// `podman stop` (SIGTERM, 30 s grace) on all; each must exit 0.
    fn stop_cleanly(&self) -> Result<()> {
        let names = self.name_refs();
        self.podman
            .quiet(&[&["stop", "--time", "30"][..], &names].concat())?;
        for name in names {
            let code = self
                .podman
                .quiet(&["inspect", "--format", "{{.State.ExitCode}}", name])?;
            ensure!(
                code.trim() == "0",
                "{name} exited with status {} after SIGTERM; its log ends:\n{}",
                code.trim(),
                self.log_tail(name)
            );
        }
        Ok(())
    }
}

impl Drop for Containers<'_> {
    fn drop(&mut self) {
        let names = self.name_refs();
        if let Err(err) = self
            .podman
            .quiet(&[&["rm", "--force", "--volumes", "--ignore"][..], &names].concat())
        {
            eprintln!("  could not remove the containers {names:?}: {err:#}");
        }
    }
}

fn failed(what: &str, output: &Output) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// Runs `command` with its output captured; an error carries the end of it.
fn run(command: &mut Command) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start {:?}", command.get_program()))?;
    if !output.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{:?} failed ({}):\n{}",
            command.get_program(),
            output.status,
            tail.join("\n")
        );
    }
    Ok(())
}

/// The pid of the run that made a container (`tsoracle-paxos-ci-<pid>-<id>`)
/// or an image (`localhost/tsoracle-paxos-ci/<what>:<pid>`); `None` for
/// any other name (left alone).
fn run_pid(name: &str) -> Option<u32> {
    if let Some(rest) = name.strip_prefix("tsoracle-paxos-ci-") {
        return rest.split_once('-')?.0.parse().ok();
    }
    let (repository, tag) = name.rsplit_once(':')?;
    repository
        .starts_with("localhost/tsoracle-paxos-ci/")
        .then(|| tag.parse().ok())
        .flatten()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The host's Debian release name, or `None` on another system.
fn host_debian_release() -> Option<String> {
    debian_release(&std::fs::read_to_string("/etc/os-release").ok()?)
}

/// `VERSION_CODENAME` of an os-release file whose `ID` is `debian`.
fn debian_release(os_release: &str) -> Option<String> {
    let field = |key: &str| {
        os_release.lines().find_map(|line| {
            line.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .map(|value| value.trim_matches('"').to_owned())
        })
    };
    (field("ID")? == "debian")
        .then(|| field("VERSION_CODENAME"))
        .flatten()
        .filter(|name| !name.is_empty())
}

fn path_str(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_not_on_the_path() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-tsoracle-paxos"));
    }

    #[test]
    fn a_leftover_is_known_by_the_pid_in_its_name() {
        assert_eq!(run_pid("tsoracle-paxos-ci-4242-3"), Some(4242));
        assert_eq!(run_pid("localhost/tsoracle-paxos-ci/node:4242"), Some(4242));
        assert_eq!(run_pid("localhost/tsoracle-paxos-ci/binary:17"), Some(17));
        // The base image, and anything not ours, is left alone.
        assert_eq!(run_pid("localhost/tsoracle-paxos-ci/debian:bookworm"), None);
        assert_eq!(run_pid("localhost/other:4242"), None);
        assert_eq!(run_pid("tsoracle-paxos-ci-x-3"), None);
    }

    #[test]
    fn only_debian_names_a_release() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\n\
                      VERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(debian_release(debian).as_deref(), Some("bookworm"));
        let ubuntu = "ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n";
        assert_eq!(debian_release(ubuntu), None);
        let sid = "ID=debian\nVERSION_CODENAME=\n";
        assert_eq!(debian_release(sid), None);
    }
}
