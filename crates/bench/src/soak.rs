//! Soak (`cellvisor bench soak`): the same lifecycles over and over, then a look for what they
//! left. Three phases: containers through the OCI CLI (create, start, wait for the exit,
//! delete), a daemon's platform (up, foreground switches, a channel opened and closed, down),
//! and microVMs (`cellvisor vm run` of a guest that ends by itself, with a tap device when the
//! host has /dev/net/tun). Before and after each phase: the mounts, cgroups, processes, state
//! files, sockets and tap devices of the run, and this process's descriptors; for the daemon,
//! its descriptors and RSS after the first cycle and after the last (and its keeper's).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::device::Device;
use crate::{io, Error, Result};

/// How many cycles of each phase (0 skips it).
#[derive(Debug, Clone)]
pub struct Plan {
    pub oci: usize,
    pub daemon: usize,
    pub vms: usize,
    /// The microVMs' guest: a kernel that ends by itself (scripts/mktiny.sh's tiny guest).
    pub vm_kernel: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize)]
pub struct Phase {
    pub name: String,
    pub cycles: usize,
    pub seconds: f64,
    /// What the phase left that was not there before it (empty: nothing).
    pub leaked: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct DaemonFigures {
    pub fds_first: usize,
    pub fds_last: usize,
    pub rss_kib_first: u64,
    pub rss_kib_last: u64,
    pub keeper_fds_first: usize,
    pub keeper_fds_last: usize,
    pub keeper_rss_kib_first: u64,
    pub keeper_rss_kib_last: u64,
    /// The daemon's RSS after every tenth of the cycles: flat, or growing.
    pub rss_kib_by_tenth: Vec<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub host: serde_json::Value,
    pub phases: Vec<Phase>,
    pub daemon: Option<DaemonFigures>,
}

impl Report {
    /// Did any phase leave something, or the daemon's descriptors grow?
    pub fn leaked(&self) -> bool {
        self.phases.iter().any(|p| !p.leaked.is_empty())
            || self
                .daemon
                .as_ref()
                .is_some_and(|d| d.fds_last > d.fds_first || d.keeper_fds_last > d.keeper_fds_first)
    }
}

/// What a run can leave on the host, as names to compare.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Snapshot {
    items: std::collections::BTreeSet<String>,
    fds: usize,
}

/// The run's traces: mounts under `work`, cgroups and tap devices named with `prefix`,
/// processes whose command line names either (or our zombie children), files under the
/// state directories in `states`, and this process's descriptors.
pub(crate) fn snapshot(work: &Path, prefix: &str, states: &[PathBuf]) -> Snapshot {
    let w = work.to_string_lossy().into_owned();
    let mut items = std::collections::BTreeSet::new();
    for l in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        if let Some(p) = l.split_whitespace().nth(4).filter(|p| p.starts_with(&w)) {
            items.insert(format!("mount {p}"));
        }
    }
    for c in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for sub in [c.path(), c.path().join("cellvisor")] {
            for e in std::fs::read_dir(&sub).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    items.insert(format!("cgroup {}", e.path().display()));
                }
            }
        }
    }
    for e in std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix[..prefix.len().min(6)]) {
            items.insert(format!("link {n}"));
        }
    }
    let me = std::process::id() as i32;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        let zombie_child = container::util::proc_parent(pid) == Some(('Z', me));
        if cmd.contains(&w) || cmd.contains(prefix) || zombie_child {
            items.insert(format!("process {pid}: {}", cmd.trim()));
        }
    }
    for s in states {
        let mut stack = vec![s.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p.clone());
                }
                items.insert(format!("file {}", p.display()));
            }
        }
    }
    Snapshot {
        items,
        fds: crate::host::fd_count("self"),
    }
}

pub(crate) fn leaks(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut v: Vec<String> = after.items.difference(&before.items).cloned().collect();
    if after.fds > before.fds {
        v.push(format!(
            "{} descriptors of this process (from {})",
            after.fds, before.fds
        ));
    }
    v
}

/// Wait until a snapshot shows no more than `before` (processes and descriptors go away
/// asynchronously), for 10 s at most; the last one taken.
pub(crate) fn settled(
    work: &Path,
    prefix: &str,
    states: &[PathBuf],
    before: &Snapshot,
) -> Snapshot {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let s = snapshot(work, prefix, states);
        if leaks(before, &s).is_empty() || Instant::now() > end {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run `c` to its end, its output to `out` (a file, not a pipe: a container's process may
/// hold the descriptors it inherited long after `create` returns); the output, and on
/// failure as the error.
fn run_ok(c: &mut Command, what: &str, out: &Path) -> Result<String> {
    let f = io(std::fs::File::create(out), || {
        format!("creating {}", out.display())
    })?;
    let f2 = io(f.try_clone(), || "a descriptor".into())?;
    let st = io(c.stdin(Stdio::null()).stdout(f).stderr(f2).status(), || {
        what.to_string()
    })?;
    let text = std::fs::read_to_string(out).unwrap_or_default();
    if !st.success() {
        return Err(Error::Msg(format!("{what}: {}", text.trim())));
    }
    Ok(text)
}

/// `cycles` containers through the OCI CLI (`me`, this program), each create, start, its
/// exit waited for, delete.
fn oci(
    me: &Path,
    work: &Path,
    prefix: &str,
    cycles: usize,
    tick: &mut dyn FnMut(usize),
) -> Result<Phase> {
    let bundle = work.join("bundle");
    crate::rootfs::busybox(&bundle.join("rootfs"))?;
    let mut spec = container::runtime::default_spec(false);
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["/bin/true"]);
    io(
        std::fs::write(bundle.join("config.json"), spec.to_string()),
        || "writing config.json".into(),
    )?;
    let root = work.join("oci");
    let states = [root.clone()];
    let log = work.join("oci.log");
    let before = snapshot(work, prefix, &states);
    let t = Instant::now();
    for i in 0..cycles {
        let id = format!("{prefix}-{i}");
        let cv = || {
            let mut c = Command::new(me);
            c.arg("--root").arg(&root);
            c
        };
        run_ok(
            cv().args(["create", "--bundle"]).arg(&bundle).arg(&id),
            &format!("create {id}"),
            &log,
        )?;
        run_ok(cv().args(["start", &id]), &format!("start {id}"), &log)?;
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let st = run_ok(cv().args(["state", &id]), &format!("state {id}"), &log)?;
            if st.contains("\"stopped\"") {
                break;
            }
            if Instant::now() > end {
                return Err(Error::Msg(format!("{id} did not stop")));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        run_ok(cv().args(["delete", &id]), &format!("delete {id}"), &log)?;
        tick(i + 1);
    }
    let seconds = t.elapsed().as_secs_f64();
    let after = settled(work, prefix, &states, &before);
    Ok(Phase {
        name: "oci: create, start, exit, delete".into(),
        cycles,
        seconds,
        leaked: leaks(&before, &after),
    })
}

/// The keeper of a daemon's state directory, if it runs.
fn keeper_pid(state: &Path) -> Option<u32> {
    let s = state.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.contains("--keeper") && cmd.contains(&s))
            .then(|| e.file_name().to_string_lossy().parse().ok())
            .flatten()
    })
}

/// `cycles` times on `dev`: up, foreground to common, a channel opened and closed, foreground
/// back to trusted, down; the daemon's and its keeper's figures.
fn cycle(dev: &Device, cycles: usize, tick: &mut dyn FnMut(usize)) -> Result<DaemonFigures> {
    use crate::host::{rss_kib, steady_fds};
    let pid = dev
        .pid()
        .ok_or_else(|| Error::Msg("the daemon is gone".into()))?;
    let chan = json!({"from": "common", "to": "trusted", "channel": "messages"});
    let mut figs = DaemonFigures::default();
    let mut keeper: Option<u32> = None;
    for i in 0..cycles {
        dev.api("POST", "/v1/up", None)?;
        dev.api("PUT", "/v1/foreground", Some(&json!({"name": "common"})))?;
        let c = dev.api("POST", "/v1/channels", Some(&chan))?;
        dev.api("DELETE", &format!("/v1/channels/{}", c["id"]), None)?;
        dev.api("PUT", "/v1/foreground", Some(&json!({"name": "trusted"})))?;
        dev.api("POST", "/v1/down", None)?;
        // Looked for again only when the one found is gone.
        if keeper.is_none_or(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            keeper = keeper_pid(&dev.dir.join("state"));
        }
        // The first cycle made what stays (the keeper, its connection): the mark.
        let first = i == 0;
        let fds = steady_fds(pid, (!first).then_some(figs.fds_first));
        let rss = rss_kib(pid);
        let (kfds, krss) = keeper
            .map(|k| {
                let goal = (!first).then_some(figs.keeper_fds_first);
                (steady_fds(k, goal), rss_kib(k))
            })
            .unwrap_or_default();
        if first {
            (figs.fds_first, figs.rss_kib_first) = (fds, rss);
            (figs.keeper_fds_first, figs.keeper_rss_kib_first) = (kfds, krss);
        }
        (figs.fds_last, figs.rss_kib_last) = (fds, rss);
        (figs.keeper_fds_last, figs.keeper_rss_kib_last) = (kfds, krss);
        if (i + 1) % cycles.div_ceil(10) == 0 || i + 1 == cycles {
            figs.rss_kib_by_tenth.push(rss);
        }
        tick(i + 1);
    }
    Ok(figs)
}

/// `cycles` of the platform on one daemon ([`cycle`]), and what they left.
fn platform(
    work: &Path,
    agent: &Path,
    cycles: usize,
    tick: &mut dyn FnMut(usize),
) -> Result<(Phase, DaemonFigures)> {
    let base = work.join("base");
    crate::rootfs::busybox(&base)?;
    let profile = crate::load::quiet(&crate::fg::profile(&base, "throttle")?)?;
    // Device::start's directory and prefix for the device "soak".
    let prefix = format!("benchsoak-{}", std::process::id());
    let states = [work.join("soak")];
    let before = snapshot(work, &prefix, &states);
    let t = Instant::now();
    let mut dev = Device::start("soak", work, &profile, agent)?;
    let figs = cycle(&dev, cycles, tick);
    dev.stop();
    let seconds = t.elapsed().as_secs_f64();
    let figs = figs?;
    let after = settled(work, &prefix, &states, &before);
    Ok((
        Phase {
            name: "daemon: up, fg, channel open and close, fg, down".into(),
            cycles,
            seconds,
            leaked: leaks(&before, &after),
        },
        figs,
    ))
}

/// `cycles` microVMs of `kernel` run to their end, each with a tap device if the host can.
fn vms(
    me: &Path,
    work: &Path,
    kernel: &Path,
    cycles: usize,
    tick: &mut dyn FnMut(usize),
) -> Result<Phase> {
    // Tap names are at most 15 bytes: a short prefix of our own.
    let prefix = format!("cvsk{}", std::process::id() % 100000);
    let tun = Path::new("/dev/net/tun").exists();
    let before = snapshot(work, &prefix, &[]);
    let t = Instant::now();
    for i in 0..cycles {
        let console = work.join("console.log");
        let mut c = Command::new(me);
        c.args(["vm", "run", "--kernel"])
            .arg(kernel)
            .args(["--mem", "32M", "--console"])
            .arg(&console);
        if tun {
            c.args(["--net", &format!("{prefix}t,ip=10.231.{}.1/24", i % 250)]);
        }
        run_ok(&mut c, &format!("vm run {i}"), &work.join("vm.log"))?;
        tick(i + 1);
    }
    let seconds = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(work.join("console.log"));
    let after = settled(work, &prefix, &[], &before);
    Ok(Phase {
        name: format!(
            "microvm: vm run to the guest's end{}",
            if tun { ", with a tap" } else { "" }
        ),
        cycles,
        seconds,
        leaked: leaks(&before, &after),
    })
}

/// Run the phases `plan` asks for, with this program `me` (its `cellvisor` verbs) and the
/// in-domain `agent`; `progress` hears (phase, cycles done, cycles).
pub fn run(
    plan: &Plan,
    me: &Path,
    agent: &Path,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Report> {
    let work = std::env::temp_dir().join(format!("cellvisor-bench-soak-{}", std::process::id()));
    let mut report = Report {
        benchmark: "soak",
        host: crate::host::facts(),
        ..Report::default()
    };
    let r = (|| {
        io(std::fs::create_dir_all(&work), || {
            format!("creating {}", work.display())
        })?;
        if plan.oci > 0 {
            let prefix = format!("soak{}", std::process::id());
            let p = oci(me, &work, &prefix, plan.oci, &mut |i| {
                progress("oci", i, plan.oci)
            })?;
            report.phases.push(p);
        }
        if plan.daemon > 0 {
            let (p, f) = platform(&work, agent, plan.daemon, &mut |i| {
                progress("daemon", i, plan.daemon)
            })?;
            report.phases.push(p);
            report.daemon = Some(f);
        }
        if plan.vms > 0 {
            let k = plan
                .vm_kernel
                .as_deref()
                .ok_or_else(|| Error::Msg("microVM cycles need --vm-kernel".into()))?;
            let p = vms(me, &work, k, plan.vms, &mut |i| {
                progress("microvm", i, plan.vms)
            })?;
            report.phases.push(p);
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    r.map(|()| report)
}

pub fn table(r: &Report) -> String {
    let mut s = format!(
        "{:<52} {:>7} {:>9}  left behind\n",
        "phase", "cycles", "seconds"
    );
    for p in &r.phases {
        s += &format!(
            "{:<52} {:>7} {:>9.1}  {}\n",
            p.name,
            p.cycles,
            p.seconds,
            if p.leaked.is_empty() {
                "nothing".to_string()
            } else {
                p.leaked.join("; ")
            }
        );
    }
    if let Some(d) = &r.daemon {
        s += &format!(
            "daemon after the first cycle and after the last: {} -> {} descriptors, RSS {} -> {} KiB; its keeper: {} -> {} descriptors, RSS {} -> {} KiB\n",
            d.fds_first, d.fds_last, d.rss_kib_first, d.rss_kib_last,
            d.keeper_fds_first, d.keeper_fds_last, d.keeper_rss_kib_first, d.keeper_rss_kib_last
        );
        s += &format!(
            "daemon RSS after each tenth of the cycles, KiB: {}\n",
            d.rss_kib_by_tenth
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leak_is_what_is_new_after() {
        let mut before = Snapshot::default();
        before.items.insert("mount /x".into());
        before.fds = 5;
        let mut after = Snapshot::default();
        after.items.insert("mount /x".into());
        after
            .items
            .insert("cgroup /sys/fs/cgroup/pids/soak1-3".into());
        after.fds = 6;
        assert_eq!(
            leaks(&before, &after),
            [
                "cgroup /sys/fs/cgroup/pids/soak1-3",
                "6 descriptors of this process (from 5)"
            ]
        );
        after.items.remove("cgroup /sys/fs/cgroup/pids/soak1-3");
        after.fds = 4;
        assert!(leaks(&before, &after).is_empty());
    }
}
