//! The channel benchmark between two *domains*: two container domains on one busybox base,
//! each running the in-domain agent, joined by a channel (made after the policy allows it),
//! a pipe pair and a Unix socket pair — the same two processes for all three transports.
//! One domain drives (round trips, then bulk), the other echoes; a control pipe tells the
//! echoing side which case comes next.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use channel::Channel;
use container::backend::ContainerBackend;
use domain::{Backend, Decision, Domain, DomainKind, DomainStatus, Role, UpOpts};

use crate::ipc::{pipe, placements, Row, Transport};
use crate::stats::median;
use crate::{Error, Result};

/// One case's samples: transport, message size, round trips (µs), bandwidths (MiB/s).
type Samples = (Transport, usize, Vec<f64>, Vec<f64>);

fn domain(name: &str, cpus: usize, command: &[&str]) -> Domain {
    Domain {
        name: name.into(),
        role: Role::Common,
        kind: DomainKind::Container {
            command: command.iter().map(|s| s.to_string()).collect(),
        },
        rootfs: None,
        cpus: Some(cpus.to_string()),
        cpu_weight: 100,
        memory_bytes: None,
        pids: Some(64),
        exclusive_devices: Vec::new(),
        shared_devices: Vec::new(),
        passthrough: Vec::new(),
        realtime: None,
    }
}

/// The policy of the benchmark's two-domain device: `a` may open "bench" to `b`.
const POLICY: &str = r#"
name = "bench"
base = "rootfs"
[[domain]]
name = "a"
role = "common"
command = ["/bin/true"]
[[domain]]
name = "b"
role = "common"
command = ["/bin/true"]
[[allow]]
from = "a"
to = "b"
channel = "bench"
buffer = "4M"
"#;

/// One placement: domain `a` (driver) on CPU `cpus.0`, `b` (echo) on `cpus.1`. Returns the
/// samples per (transport, size): (rtt µs, MiB/s).
fn placement(
    work: &Path,
    base: &Path,
    agent: &Path,
    cpus: (usize, usize),
    rounds: usize,
    quick: bool,
) -> Result<Vec<Samples>> {
    let profile = domain::profile::parse(POLICY, "bench.toml", Path::new("/"))
        .map_err(|e| Error::Msg(format!("the benchmark's profile: {e}")))?;
    let buffer = match profile.policy.check("a", "b", "bench", None) {
        Decision::Allow { buffer } => buffer,
        Decision::Deny(why) => return Err(Error::Msg(why)),
    };
    let run = work.join("run");
    crate::io(std::fs::create_dir_all(&run), || {
        format!("creating {}", run.display())
    })?;
    let dst = run.join("agent");
    if !dst.exists() {
        crate::io(std::fs::copy(agent, &dst), || {
            format!("copying {}", agent.display())
        })?;
    }
    let (ca, cb) = Channel::new(buffer)?;
    let (p_rx, p_tx) = pipe()?; // a -> b
    let (q_rx, q_tx) = pipe()?; // b -> a
    let (c_rx, c_tx) = pipe()?; // control, a -> b
    let (s_a, s_b) = crate::io(std::os::unix::net::UnixStream::pair(), || {
        "a socket pair".into()
    })?;
    let fds_a: Vec<RawFd> = ca
        .fds()
        .into_iter()
        .chain([
            q_rx.as_raw_fd(),
            p_tx.as_raw_fd(),
            s_a.as_raw_fd(),
            c_tx.as_raw_fd(),
        ])
        .collect();
    let fds_b: Vec<RawFd> = cb
        .fds()
        .into_iter()
        .chain([
            p_rx.as_raw_fd(),
            q_tx.as_raw_fd(),
            s_b.as_raw_fd(),
            c_rx.as_raw_fd(),
        ])
        .collect();
    let be = ContainerBackend::new(&work.join("state"), &format!("bench{}", std::process::id()));
    let mode = if quick { "quick" } else { "full" };
    let rounds_s = rounds.to_string();
    let b = domain("b", cpus.1, &["/run/cellvisor/agent", "bench-echo"]);
    let a = domain(
        "a",
        cpus.0,
        &["/run/cellvisor/agent", "bench-drive", &rounds_s, mode],
    );
    let opts = |fds: Vec<RawFd>| UpOpts {
        base: Some(base),
        run_dir: Some(&run),
        devices: Vec::new(),
        fds,
    };
    let r = (|| {
        be.up(&b, &opts(fds_b)).map_err(Error::Backend)?;
        be.up(&a, &opts(fds_a)).map_err(Error::Backend)?;
        // The domains hold their ends now; ours go without closing the channel.
        ca.release();
        cb.release();
        drop((p_rx, p_tx, q_rx, q_tx, c_rx, c_tx, s_a, s_b));
        let end = Instant::now() + Duration::from_secs(600);
        while be.status("a").map_err(Error::Backend)? != DomainStatus::Stopped {
            if Instant::now() > end {
                return Err(Error::Msg("the driving domain did not finish".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log_path = be.log_path("a").unwrap_or_default();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        parse(&log)
            .ok_or_else(|| Error::Msg(format!("the driving domain's output: {}", log.trim())))
    })();
    let _ = be.destroy("a");
    let _ = be.destroy("b");
    r
}

fn parse(log: &str) -> Option<Vec<Samples>> {
    let line = log.lines().find(|l| l.starts_with("{\"bench\""))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let nums = |x: &serde_json::Value| -> Vec<f64> {
        x.as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_f64())
            .collect()
    };
    v["rows"]
        .as_array()?
        .iter()
        .map(|r| {
            let t = match r["transport"].as_str()? {
                "channel" => Transport::Channel,
                "pipe" => Transport::Pipe,
                _ => Transport::Unix,
            };
            Some((
                t,
                r["message_bytes"].as_u64()? as usize,
                nums(&r["rtt_us"]),
                nums(&r["bandwidth_mib_s"]),
            ))
        })
        .collect()
}

/// Run the benchmark between two domains on `base` with the static agent `agent`, on one CPU
/// and on two, and report medians as [`Row`]s.
pub fn run(base: &Path, agent: &Path, rounds: usize, quick: bool) -> Result<Vec<Row>> {
    let work = std::env::temp_dir().join(format!("cellvisor-bench-domains-{}", std::process::id()));
    let mut rows = Vec::new();
    for (name, cpus) in placements() {
        let r = placement(&work, base, agent, cpus, rounds, quick);
        let samples = match r {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                return Err(e);
            }
        };
        for (t, size, rtt, bw) in samples {
            rows.push(Row {
                transport: t,
                placement: name,
                message_bytes: size,
                rtt_us: median(&rtt).unwrap_or(f64::NAN),
                bandwidth_mib_s: (size == 1 << 20).then(|| median(&bw).unwrap_or(f64::NAN)),
            });
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(rows)
}

/// Between what `bench channel` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Between {
    /// Two plain processes.
    Processes,
    /// Two container domains (root; needs the agent).
    Domains,
}

/// `--between`'s values, or the one-line error.
pub fn between(names: &[String]) -> Result<Vec<Between>> {
    names
        .iter()
        .map(|b| match b.as_str() {
            "processes" => Ok(Between::Processes),
            "domains" => Ok(Between::Domains),
            _ => Err(Error::Msg(format!(
                "--between: {b:?} is not processes or domains"
            ))),
        })
        .collect()
}

/// What `bench channel` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelReport {
    pub benchmark: &'static str,
    pub rounds: usize,
    pub host: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<Row>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domains: Option<Vec<Row>>,
}

/// What `bench channel` tells as it goes: how far it is, and each part's rows once done.
pub enum Event<'a> {
    Step(&'a str),
    Done(Between, &'a [Row]),
}

/// The channel against a pipe and a Unix socket, between two processes (1 B, 4 KiB, 1 MiB)
/// and between two domains (with `agent`, on a busybox base of its own), as `between` asks.
/// `progress` hears each part's rows as soon as it has them (a later part may fail).
pub fn channel(
    between: &[Between],
    rounds: usize,
    quick: bool,
    agent: Option<&Path>,
    progress: &mut dyn FnMut(Event),
) -> Result<ChannelReport> {
    let mut r = ChannelReport {
        benchmark: "channel vs pipe vs unix socket",
        rounds,
        host: crate::host::facts(),
        processes: None,
        domains: None,
    };
    if between.contains(&Between::Processes) {
        let rows = crate::ipc::run(&[1, 4096, 1 << 20], rounds, quick, &mut |done, all| {
            progress(Event::Step(&format!(
                "between two processes: round {done}/{all}"
            )))
        })?;
        progress(Event::Done(Between::Processes, &rows));
        r.processes = Some(rows);
    }
    if between.contains(&Between::Domains) {
        let agent = agent.ok_or_else(|| Error::Msg("between domains: no agent".into()))?;
        progress(Event::Step(&format!(
            "between two domains: {rounds} rounds..."
        )));
        let work =
            std::env::temp_dir().join(format!("cellvisor-bench-channel-{}", std::process::id()));
        let base = work.join("base");
        let rows = crate::rootfs::busybox(&base).and_then(|()| run(&base, agent, rounds, quick));
        let _ = std::fs::remove_dir_all(&work);
        let rows = rows?;
        progress(Event::Done(Between::Domains, &rows));
        r.domains = Some(rows);
    }
    Ok(r)
}
