//! The node's command line under test: the `tsoracle-paxos` binary. The
//! helpers (layout, processes killed on drop, client calls retried) are the
//! test kit's `process` module, shared with the test kit's own tests.

use std::time::{Duration, Instant};

use tsoracle_paxos_testkit::process::{CommandLine, metrics};
pub(crate) use tsoracle_paxos_testkit::process::{Layout, ServeChild, tree};

/// `tsoracle-paxos <subcommand> ...`.
pub(crate) fn cli() -> CommandLine {
    CommandLine::new(env!("CARGO_BIN_EXE_tsoracle-paxos"), &[])
}

/// Node `id`'s arguments with its metrics endpoint on.
pub(crate) fn with_metrics(layout: &Layout, mut args: Vec<String>, id: u64) -> Vec<String> {
    args.extend([
        "--metrics-listen".to_owned(),
        format!("127.0.0.1:{}", layout.metrics[&id]),
    ]);
    args
}

/// Waits (60 s at most) until node `id`'s metric `name` reads `value`.
pub(crate) fn wait_metric(layout: &Layout, id: u64, name: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read = metrics(layout.metrics[&id]).and_then(|page| page.get(name).copied());
        if read == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {id}: {name} is {read:?} after 60 s, not {value}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts node `id` with `args` and its metrics endpoint on, logging to
/// `node-<id>-<life>`.
pub(crate) fn start_with_metrics(
    cli: &CommandLine,
    layout: &Layout,
    id: u64,
    args: Vec<String>,
    life: u32,
) -> ServeChild {
    cli.spawn(
        &with_metrics(layout, args, id),
        &layout.log(&format!("node-{id}-{life}")),
    )
}

/// Three founding nodes with their metrics endpoints on, each serving once
/// a first timestamp was handed out.
pub(crate) fn founding_three(
    cli: &CommandLine,
    layout: &Layout,
) -> std::collections::BTreeMap<u64, ServeChild> {
    let nodes = (1..=3)
        .map(|id| (id, start_with_metrics(cli, layout, id, layout.args(id), 1)))
        .collect();
    cli.get_ts(&layout.endpoints(), 1);
    nodes
}

/// Sends signal `name` (`STOP`, `CONT`, `HUP`...) to `node`.
pub(crate) fn signal(node: &ServeChild, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &node.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

/// A test certificate authority.
pub(crate) struct TestCa {
    /// Its certificate, PEM.
    pub(crate) pem: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        Self {
            pem: issuer.pem(),
            issuer,
        }
    }

    /// A certificate for `names` (server and client use) and its key, PEM.
    pub(crate) fn issue(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}
