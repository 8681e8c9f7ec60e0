//! `cellvisor bench rt`: how late a realtime domain's periodic work runs while the other
//! domains load the device. The agent's wake-up probe (`rt-probe`, cyclictest's method: an
//! absolute clock_nanosleep every interval, latency = wake-up less the time asked for, memory
//! locked) runs in the realtime domain of a two-domain device — SCHED_FIFO 80 with a budget,
//! on a core of its own — while a common domain runs CPU hogs, a fork storm, a message
//! storm, memory and page-cache pressure and fsynced writes (`load all`) on every core it may
//! use. Variants, one after another in one run:
//! - `unloaded`: the realtime domain alone;
//! - `loaded`: with the load, the realtime configuration in force;
//! - `control`: the same probe in a common domain (no policy, no core of its own), the load
//!   on every core: the device without the realtime configuration;
//! - `native`: the probe as a host process, SCHED_FIFO 80 on the realtime core, the same load;
//! - `cyclictest`: rt-tests' cyclictest in the realtime domain under the same load (when
//!   installed), a cross-check of the probe.
//!
//! For each: the latency histogram and its p50/p99/p99.9/max, and the steal time the outer
//! hypervisor took meanwhile (this machine is a VM); for `loaded`, the CPU time the load got
//! on the realtime core (per-CPU accounting of its cgroup).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use container::backend::ContainerBackend;
use domain::{Backend, DomainStatus, UpOpts};
use serde::Serialize;

use crate::{io, Error, Result};

/// What the run measures and how.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Wake-ups per variant, over all rounds.
    pub samples: u64,
    /// Rounds: each runs every variant once, on samples / rounds wake-ups.
    pub rounds: u32,
    pub interval_us: u64,
    /// With a guest: the microVM variants too, the probe inside it.
    pub guest: Option<crate::vm::Guest>,
    /// Senders (and receivers) in each message group of the load: hackbench's 20; 4 with
    /// `--quick` (a smoke run: the emulated test host's kernel has been seen to give way under
    /// the full storm).
    pub group: usize,
}

impl Plan {
    /// 100,000 wake-ups of 1 ms per variant (cyclictest's usual) in 5 rounds, `quick` 3,000
    /// in one.
    pub fn new(
        quick: bool,
        samples: Option<u64>,
        rounds: Option<u32>,
        interval_us: u64,
        guest: Option<crate::vm::Guest>,
    ) -> Result<Plan> {
        let samples = samples.unwrap_or(if quick { 3_000 } else { 100_000 });
        let rounds = rounds.unwrap_or(if quick { 1 } else { 5 });
        if samples == 0 || interval_us == 0 || rounds == 0 {
            return Err(Error::Msg(
                "--samples, --rounds and --interval-us must be at least 1".into(),
            ));
        }
        if samples < u64::from(rounds) {
            return Err(Error::Msg(format!(
                "--samples {samples} is fewer than one wake-up a round ({rounds} rounds)"
            )));
        }
        Ok(Plan {
            samples,
            rounds,
            interval_us,
            guest,
            group: if quick { 4 } else { 20 },
        })
    }
}

/// One variant's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub name: &'static str,
    pub what: &'static str,
    /// The policy the probe ran with, as the kernel said.
    pub policy: String,
    pub samples: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: f64,
    /// Steal time during the variant, % of all CPUs' time.
    pub steal_pct: f64,
    /// The load's CPU time on the realtime core, ms (loaded variants with a core of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_ms_on_rt_core: Option<f64>,
    /// Each round's p99, µs (the ratios are taken round by round).
    pub p99_us_rounds: Vec<u64>,
    /// Runs done again because the guest failed before its probe ended (microVM variants).
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// For a microVM: its VMM's threads as the host saw them while the probe ran — name,
    /// policy, CPUs each (e.g. `vcpu0 SCHED_FIFO 80 cpus 1`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vmm_threads: Vec<String>,
    /// [µs, samples] for every non-empty µs.
    pub hist: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub interval_us: u64,
    /// Every variant runs once a round, the rounds one after another.
    pub rounds: u32,
    pub rt_cpu: u32,
    pub host: serde_json::Value,
    pub variants: Vec<Variant>,
    /// Variants that could not run (cyclictest not installed, no RT budget for the host).
    pub failed: Vec<(String, String)>,
    /// loaded p99 / unloaded p99 (the realtime configuration under load), the median over the
    /// rounds of the ratio within a round; the same for the others.
    pub loaded_over_unloaded_p99: Option<f64>,
    /// loaded p99 / control p99 (with the configuration vs without it).
    pub loaded_over_control_p99: Option<f64>,
    /// The same for the microVM: vm-loaded p99 / vm-unloaded p99, vm-loaded / vm-control.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_loaded_over_unloaded_p99: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_loaded_over_control_p99: Option<f64>,
}

const PRIORITY: u8 = 80;
/// The realtime domain's budget: far more than a probe needs, within what the host grants.
const BUDGET: &str = "200ms/1s";

/// (steal, total) jiffies of all CPUs.
fn steal_jiffies() -> (u64, u64) {
    let v = crate::host::cpu_stat();
    (v.get(7).copied().unwrap_or(0), v.iter().take(8).sum())
}

/// The microVM a probe runs in: the guest's kernel and initramfs, and its root (the probe
/// domains' busybox root as an ext4 image, copy-on-write).
struct VmProbe {
    kernel: PathBuf,
    initrd: PathBuf,
    image: PathBuf,
}

/// The device's profile: a probe domain running `probe` (realtime on `rt_cpu`, or common when
/// not `rt`; with `vm`, a microVM running it inside, one vCPU) and, with `load`, a common
/// domain running the load with `threads` workers each.
fn profile(
    base: &Path,
    rt: bool,
    rt_cpu: u32,
    probe: &[String],
    load: Option<(usize, usize)>,
    vm: Option<&VmProbe>,
) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut p = format!(
        "name = \"rtbench\"\nbase = {:?}\n[[domain]]\nname = \"probe\"\nrole = \"{}\"\n",
        base.display().to_string(),
        if rt { "realtime" } else { "common" }
    );
    match vm {
        // The guest runs the probe as its command, at the same priority inside; then waits
        // for the console to drain its long line (the init's reboot would cut it short).
        Some(v) => {
            let cmd = format!("{} --fifo {PRIORITY}; sleep 2", probe.join(" "));
            let cmdline = format!(
                "{} loglevel=1 cellvisor.root=/dev/vda cellvisor.run=\"{cmd}\"",
                crate::vm::CMDLINE
            );
            p += &format!(
                "backend = \"microvm\"\nkernel = {:?}\ninitrd = {:?}\ncmdline = {cmdline:?}\ndisks = [{:?}]\nmemory = \"256M\"\n",
                v.kernel.display().to_string(),
                v.initrd.display().to_string(),
                format!("{},cow", v.image.display())
            );
        }
        None => p += &format!("command = [{}]\n", list(probe)),
    }
    if rt {
        p += &format!(
            "cpus = \"{rt_cpu}\"\nrealtime = {{ policy = \"fifo\", priority = {PRIORITY}, budget = \"{BUDGET}\" }}\n"
        );
    }
    if let Some((t, g)) = load {
        p += &format!(
            "[[domain]]\nname = \"load\"\nrole = \"common\"\ncommand = [\"/bin/cellvisor-agent\", \"load\", \"all\", \"--threads\", \"{t}\", \"--group\", \"{g}\"]\n"
        );
    }
    p
}

/// The load domain's CPU time on `cpu`, ns (v1 cpuacct).
fn cpu_time_on(be: &ContainerBackend, cpu: u32) -> Option<u64> {
    let dir = crate::host::cgroup_dir("cpuacct", &format!("cellvisor/{}", be.container_id("load")));
    crate::host::read(&dir.join("cpuacct.usage_percpu"))
        .split_whitespace()
        .nth(cpu as usize)?
        .parse()
        .ok()
}

/// What a probe said: its policy, samples, histogram ([µs, samples]) and maximum (µs).
type Probed = (String, u64, Vec<(u64, u64)>, f64);

/// A probe's JSON line (`rt-probe`), or cyclictest's histogram (`-h`).
fn parse_probe(out: &str) -> Option<Probed> {
    if let Some(line) = out.lines().find(|l| l.starts_with("{\"rt\"")) {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let rt = &v["rt"];
        let hist = rt["hist"]
            .as_array()?
            .iter()
            .filter_map(|b| Some((b[0].as_u64()?, b[1].as_u64()?)))
            .collect();
        return Some((
            rt["policy"].as_str()?.to_string(),
            rt["samples"].as_u64()?,
            hist,
            rt["max_us"].as_f64()?,
        ));
    }
    // cyclictest -q -h N: "000012 000345" per µs, then "# Max Latencies: 00123".
    let mut hist = Vec::new();
    let mut max = None;
    for l in out.lines() {
        if let Some(m) = l.strip_prefix("# Max Latencies:") {
            max = m
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok());
            continue;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [us, n] = f[..] {
            if let (Ok(us), Ok(n)) = (us.parse::<u64>(), n.parse::<u64>()) {
                if n > 0 {
                    hist.push((us, n));
                }
            }
        }
    }
    let samples = hist.iter().map(|b| b.1).sum();
    (samples > 0).then(|| {
        (
            "SCHED_FIFO (cyclictest -p)".to_string(),
            samples,
            hist,
            max.unwrap_or(0.0),
        )
    })
}

/// The latency below which a `q` share of the samples fall, µs.
fn quantile(hist: &[(u64, u64)], samples: u64, q: f64) -> u64 {
    agent::rt::quantile(hist.iter().copied(), samples, q)
        .unwrap_or_else(|| hist.last().map_or(0, |b| b.0))
}

/// The threads of process `pid`: name, policy and allowed CPUs each, as /proc says.
fn threads_of(pid: i32) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .flatten()
        .filter_map(|t| {
            let dir = t.path();
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_string())
            };
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            let f: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
            // Fields 40 (rt_priority) and 41 (policy).
            let policy = match f.get(38).copied() {
                Some("1") => format!("SCHED_FIFO {}", f.get(37)?),
                Some("2") => format!("SCHED_RR {}", f.get(37)?),
                Some("0") => "SCHED_OTHER".to_string(),
                other => format!("policy {}", other.unwrap_or("?")),
            };
            Some(format!(
                "{} {policy} cpus {}",
                field("Name:")?,
                field("Cpus_allowed_list:")?
            ))
        })
        .collect();
    out.sort();
    out
}

/// A device of the benchmark, up: its domains on the rig's backends; with a realtime
/// domain, the host placed as cellvisord places it (this process and the interrupts off its
/// core; their record in `state`).
struct Device<'a> {
    rig: &'a Rig,
    /// Each domain, and whether it is a microVM.
    names: Vec<(String, bool)>,
    placed: Option<PathBuf>,
}

impl Drop for Device<'_> {
    fn drop(&mut self) {
        for (n, vm) in &self.names {
            let _ = self.rig.backend(*vm).destroy(n);
        }
        if let Some(state) = &self.placed {
            daemon::placement::restore(state);
        }
    }
}

/// What every device of the run shares: the backends, the root, the state, the host.
struct Rig {
    be: ContainerBackend,
    /// The microVM backend and what its probe boots, when the run has a guest.
    vm: Option<(microvm::MicrovmBackend, VmProbe)>,
    base: PathBuf,
    state: PathBuf,
    host: domain::profile::Host,
    rt_cpu: u32,
    /// The load's message group size.
    group: usize,
}

impl Rig {
    fn backend(&self, vm: bool) -> &dyn Backend {
        match &self.vm {
            Some((b, _)) if vm => b,
            _ => &self.be,
        }
    }

    /// Bring up the device [`profile`] describes (the probe domain running `cmd`, in the
    /// microVM with `vm`), the load first; the probe starts last.
    fn device(
        &self,
        rt: bool,
        cmd: &[String],
        load: Option<usize>,
        vm: bool,
    ) -> Result<Device<'_>> {
        let guest = self.vm.as_ref().map(|(_, g)| g).filter(|_| vm);
        let load = load.map(|t| (t, self.group));
        let text = profile(&self.base, rt, self.rt_cpu, cmd, load, guest);
        let p = domain::profile::parse_on(&text, "rtbench.toml", Path::new("/"), &self.host)
            .map_err(|e| Error::Msg(format!("the benchmark's profile: {e}")))?;
        let mut dev = Device {
            rig: self,
            names: Vec::new(),
            placed: None,
        };
        if !daemon::placement::owned_cores(&p).is_empty() {
            dev.placed = Some(self.state.clone());
            daemon::placement::keep_off(&p, &self.state).map_err(Error::Msg)?;
        }
        let o = UpOpts {
            base: Some(&self.base),
            ..UpOpts::default()
        };
        let mut order: Vec<&domain::Domain> = p.domains.iter().collect();
        order.sort_by_key(|d| d.name == "probe");
        for d in order {
            let in_vm = d.vm().is_some();
            dev.names.push((d.name.clone(), in_vm));
            self.backend(in_vm).up(d, &o)?;
            if d.name == "load" {
                // The load at full tilt before the probe's first wake-up.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        Ok(dev)
    }
}

impl Device<'_> {
    /// Wait for the probe to end; its output.
    fn probe_output(&self, deadline: Duration) -> Result<String> {
        Ok(self.probe_run(deadline)?.0)
    }

    /// Wait for the probe to end; its output and, for a microVM, its VMM's threads as they
    /// were once the guest had started the probe.
    fn probe_run(&self, deadline: Duration) -> Result<(String, Vec<String>)> {
        let vm = self.names.iter().any(|(n, vm)| n == "probe" && *vm);
        let be = self.rig.backend(vm);
        let log = be.log_path("probe").unwrap_or_default();
        // A guest boots first.
        let end = Instant::now()
            + deadline
            + if vm {
                crate::vm::BOOT_DEADLINE
            } else {
                Duration::ZERO
            };
        let mut threads = Vec::new();
        while be.status("probe")? != DomainStatus::Stopped {
            if Instant::now() > end {
                return Err(Error::Msg("the probe did not finish in time".into()));
            }
            if vm && threads.is_empty() && crate::host::read(&log).contains("GUEST-UP") {
                threads = be.pid("probe").map(threads_of).unwrap_or_default();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok((crate::host::read(&log), threads))
    }
}

/// The rig of a run in `work`: the shared root (busybox, the agent, cyclictest when the host
/// has it), the backends (the microVM's with its root image when `plan` has a guest), the
/// realtime core (the last CPU); cyclictest's path in the root.
fn rig(plan: &Plan, agent: &Path, work: &Path) -> Result<(Rig, Option<String>)> {
    let host = container::cgroups::rt::host();
    let cpus = host.cpus.clone().unwrap_or_default();
    if cpus.len() < 2 {
        return Err(Error::Msg(
            "bench rt needs two CPUs at least: one for the realtime domain, one for the rest"
                .into(),
        ));
    }
    let rt_cpu = *cpus.last().unwrap_or(&1);
    let base = work.join("base");
    crate::rootfs::busybox(&base)?;
    io(
        std::fs::copy(agent, base.join("bin/cellvisor-agent")),
        || format!("copying {}", agent.display()),
    )?;
    let cyclictest = crate::rootfs::install_program(&base, "cyclictest")?;
    let state = work.join("state");
    let prefix = format!("cvrt{}", std::process::id());
    let vm = match &plan.guest {
        Some(g) => {
            let image = work.join("probe-root.ext4");
            crate::vm::root_image(&base, &image, 16)?;
            let be = microvm::MicrovmBackend::new(
                ContainerBackend::new(&state, &format!("{prefix}v")),
                Some(g.vmm.clone()),
            );
            let files = VmProbe {
                kernel: g.kernel.clone(),
                initrd: g.initrd.clone(),
                image,
            };
            Some((be, files))
        }
        None => None,
    };
    let rig = Rig {
        be: ContainerBackend::new(&state, &prefix),
        vm,
        base: base.clone(),
        state,
        host,
        rt_cpu,
        group: plan.group,
    };
    Ok((rig, cyclictest))
}

/// Run the benchmark in `work` with the in-domain `agent` (and cyclictest when installed);
/// `progress` hears each variant as it starts.
pub fn run(
    plan: &Plan,
    agent: &Path,
    work: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Report> {
    let (rig, cyclictest) = rig(plan, agent, work)?;
    let base = rig.base.clone();
    let cpus = rig.host.cpus.clone().unwrap_or_default();
    let rt_cpu = rig.rt_cpu;
    let per_round = (plan.samples / u64::from(plan.rounds)).max(1);
    let samples = per_round.to_string();
    let interval = plan.interval_us.to_string();
    let probe: Vec<String> = [
        "/bin/cellvisor-agent",
        "rt-probe",
        "--samples",
        &samples,
        "--interval-us",
        &interval,
    ]
    .map(String::from)
    .to_vec();
    let cyclic: Option<Vec<String>> = cyclictest.as_ref().map(|prog| {
        let p = PRIORITY.to_string();
        [
            prog.as_str(),
            "-q",
            "-m",
            "-t",
            "1",
            "-p",
            &p,
            "-i",
            &interval,
            "-l",
            &samples,
            "-h",
            "20000",
        ]
        .map(String::from)
        .to_vec()
    });
    let ctx = Ctx {
        rig: &rig,
        probe: &probe,
        // Long enough for every wake-up, late ones too.
        deadline: Duration::from_micros(per_round * plan.interval_us * 3) + Duration::from_secs(60),
        threads: cpus.len(),
        agent: base.join("bin/cellvisor-agent"),
        cyclic,
    };
    let specs = specs(ctx.cyclic.is_some(), rig.vm.is_some());
    let mut acc: Vec<Acc> = specs.iter().map(|s| Acc::new(s.name, s.what)).collect();
    let mut failed = Vec::new();
    if cyclictest.is_none() {
        failed.push((
            "cyclictest".to_string(),
            "not installed (apt-get install rt-tests)".to_string(),
        ));
    }
    for round in 0..plan.rounds as usize {
        // Each round starts at another variant: none is always first (the machine's noise
        // drifts), and the ratios are taken round by round.
        for k in 0..specs.len() {
            let i = (k + round) % specs.len();
            let sp = &specs[i];
            if failed.iter().any(|(f, _)| f == sp.name) {
                continue;
            }
            progress(&format!(
                "round {}/{}: {}: {}",
                round + 1,
                plan.rounds,
                sp.name,
                sp.what
            ));
            let s0 = steal_jiffies();
            let mut r = (sp.run)(&ctx);
            // A guest under nested emulation now and then resets or hangs before its probe
            // has run: it runs again, twice at most, and the report counts it.
            let mut again = 0;
            while r.is_err() && sp.name.starts_with("vm-") && again < 2 {
                again += 1;
                acc[i].retries += 1;
                progress(&format!(
                    "{}: again, the guest failed: {}",
                    sp.name,
                    domain::chain(r.as_ref().unwrap_err())
                ));
                r = (sp.run)(&ctx);
            }
            let s1 = steal_jiffies();
            let steal = 100.0 * (s1.0 - s0.0) as f64 / (s1.1 - s0.1).max(1) as f64;
            match r.and_then(|ran| acc[i].add(ran, steal)) {
                Ok(()) => {}
                Err(e) if sp.optional => failed.push((sp.name.to_string(), domain::chain(&e))),
                Err(e) => return Err(e.within(sp.name)),
            }
        }
    }
    let variants: Vec<Variant> = acc
        .into_iter()
        .filter(|a| a.samples > 0)
        .map(Acc::variant)
        .collect();
    let ratio = |a: &str, b: &str| round_ratio(&variants, a, b);
    Ok(Report {
        benchmark: "real-time wake-up latency under load",
        interval_us: plan.interval_us,
        rounds: plan.rounds,
        rt_cpu,
        host: crate::host::facts(),
        loaded_over_unloaded_p99: ratio("loaded", "unloaded"),
        loaded_over_control_p99: ratio("loaded", "control"),
        vm_loaded_over_unloaded_p99: ratio("vm-loaded", "vm-unloaded"),
        vm_loaded_over_control_p99: ratio("vm-loaded", "vm-control"),
        variants,
        failed,
    })
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What one run of a variant gives: the probe's output, the load's CPU time on the realtime
/// core (ms), the VMM's threads.
type Ran = (String, Option<f64>, Vec<String>);

/// What every variant's run needs.
struct Ctx<'a> {
    rig: &'a Rig,
    probe: &'a [String],
    deadline: Duration,
    /// The load's workers of each kind.
    threads: usize,
    /// The agent on the host (the native probe).
    agent: PathBuf,
    /// cyclictest's command in the realtime domain, when it is installed.
    cyclic: Option<Vec<String>>,
}

/// One variant: its name, what it is, how it runs; an optional one (native, cyclictest) is
/// reported as failed instead of failing the run.
struct Spec {
    name: &'static str,
    what: &'static str,
    optional: bool,
    run: fn(&Ctx) -> Result<Ran>,
}

/// The probe of a device (realtime or not, loaded or not, in a microVM or not) to its end,
/// with the load's CPU time on the realtime core meanwhile.
fn probed(c: &Ctx, rt: bool, loaded: bool, vm: bool) -> Result<Ran> {
    let dev = c.rig.device(rt, c.probe, loaded.then_some(c.threads), vm)?;
    let t0 = cpu_time_on(&c.rig.be, c.rig.rt_cpu);
    let (out, threads) = dev.probe_run(c.deadline)?;
    let t1 = cpu_time_on(&c.rig.be, c.rig.rt_cpu);
    let on_rt = (rt && loaded)
        .then(|| t0.zip(t1).map(|(a, b)| b.saturating_sub(a) as f64 / 1e6))
        .flatten();
    Ok((out, on_rt, threads))
}

/// The native probe: the device as in `loaded`, its realtime domain asleep; the probe a host
/// process, SCHED_FIFO on the realtime core.
fn native(c: &Ctx) -> Result<Ran> {
    let sleep = ["/bin/sleep".to_string(), "1000000".into()];
    let _dev = c.rig.device(true, &sleep, Some(c.threads), false)?;
    let out = io(
        std::process::Command::new(&c.agent)
            .args(&c.probe[1..])
            .args([
                "--fifo",
                &PRIORITY.to_string(),
                "--cpu",
                &c.rig.rt_cpu.to_string(),
            ])
            .output(),
        || "running the native probe".into(),
    )?;
    if !out.status.success() {
        return Err(Error::Msg(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        None,
        Vec::new(),
    ))
}

/// The variants of a run: with `cyclic` (cyclictest's command) its cross-check, with `vm` the
/// microVM's three.
fn specs(cyclic: bool, vm: bool) -> Vec<Spec> {
    let mut v = vec![
        Spec {
            name: "unloaded",
            what: "the realtime domain alone",
            optional: false,
            run: |c| probed(c, true, false, false),
        },
        Spec {
            name: "loaded",
            what: "the realtime domain, the other domain loading its cores",
            optional: false,
            run: |c| probed(c, true, true, false),
        },
        Spec {
            name: "control",
            what: "the probe in a common domain, the load on every core",
            optional: false,
            run: |c| probed(c, false, true, false),
        },
        Spec {
            name: "native",
            what: "the probe as a host process, SCHED_FIFO on the realtime core, the same load",
            optional: true,
            run: native,
        },
    ];
    if vm {
        v.extend([
            Spec {
                name: "vm-unloaded",
                what: "the probe in a realtime microVM alone",
                optional: false,
                run: |c| probed(c, true, false, true),
            },
            Spec {
                name: "vm-loaded",
                what: "the probe in a realtime microVM (its vCPU SCHED_FIFO on the realtime core), the other domain loading its cores",
                optional: false,
                run: |c| probed(c, true, true, true),
            },
            Spec {
                name: "vm-control",
                what: "the same microVM as a common domain, the load on every core",
                optional: false,
                run: |c| probed(c, false, true, true),
            },
        ]);
    }
    if cyclic {
        v.push(Spec {
            name: "cyclictest",
            what: "rt-tests' cyclictest in the realtime domain, the same load",
            optional: true,
            run: |c| {
                let cmd = c.cyclic.as_deref().unwrap_or_default();
                let dev = c.rig.device(true, cmd, Some(c.threads), false)?;
                Ok((dev.probe_output(c.deadline)?, None, Vec::new()))
            },
        });
    }
    v
}

/// A variant's figures over the rounds: histograms merged, each round's p99 kept.
struct Acc {
    name: &'static str,
    what: &'static str,
    policy: String,
    samples: u64,
    hist: std::collections::BTreeMap<u64, u64>,
    max_us: f64,
    steal: Vec<f64>,
    load_ms: Option<f64>,
    vmm_threads: Vec<String>,
    p99_rounds: Vec<u64>,
    retries: u32,
}

impl Acc {
    fn new(name: &'static str, what: &'static str) -> Acc {
        Acc {
            name,
            what,
            policy: String::new(),
            samples: 0,
            hist: Default::default(),
            max_us: 0.0,
            steal: Vec::new(),
            load_ms: None,
            vmm_threads: Vec::new(),
            p99_rounds: Vec::new(),
            retries: 0,
        }
    }

    /// One round's run, with the steal time meanwhile (%).
    fn add(&mut self, (out, on_rt, threads): Ran, steal: f64) -> Result<()> {
        let (policy, samples, hist, max_us) = parse_probe(&out).ok_or_else(|| {
            Error::Msg(format!(
                "no figures from the probe: {}",
                out.lines().last().unwrap_or("")
            ))
        })?;
        self.p99_rounds.push(quantile(&hist, samples, 0.99));
        for (us, n) in hist {
            *self.hist.entry(us).or_default() += n;
        }
        self.samples += samples;
        self.max_us = self.max_us.max(max_us);
        self.policy = policy;
        self.steal.push(steal);
        if let Some(m) = on_rt {
            self.load_ms = Some(self.load_ms.unwrap_or(0.0) + m);
        }
        if self.vmm_threads.is_empty() {
            self.vmm_threads = threads;
        }
        Ok(())
    }

    fn variant(self) -> Variant {
        let hist: Vec<(u64, u64)> = self.hist.into_iter().collect();
        let q = |x| quantile(&hist, self.samples, x);
        Variant {
            name: self.name,
            what: self.what,
            policy: self.policy,
            samples: self.samples,
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.max_us,
            steal_pct: self.steal.iter().sum::<f64>() / self.steal.len().max(1) as f64,
            load_ms_on_rt_core: self.load_ms,
            vmm_threads: self.vmm_threads,
            p99_us_rounds: self.p99_rounds,
            retries: self.retries,
            hist,
        }
    }
}

/// The median over the rounds of `a`'s p99 / `b`'s p99 in the same round.
fn round_ratio(variants: &[Variant], a: &str, b: &str) -> Option<f64> {
    let of = |n: &str| variants.iter().find(|v| v.name == n);
    let (a, b) = (of(a)?, of(b)?);
    let r: Vec<f64> = a
        .p99_us_rounds
        .iter()
        .zip(&b.p99_us_rounds)
        .map(|(x, y)| *x as f64 / (*y).max(1) as f64)
        .collect();
    crate::stats::median(&r)
}

/// The terminal table.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "{} — {} µs interval, realtime core {}, {} round{}; latency = wake-up − asked, µs\n",
        r.benchmark,
        r.interval_us,
        r.rt_cpu,
        r.rounds,
        if r.rounds == 1 { "" } else { "s" }
    );
    s += &format!(
        "{:<11} {:>8} {:>7} {:>7} {:>8} {:>9} {:>7} {:>10}  {}\n",
        "variant", "samples", "p50", "p99", "p99.9", "max", "steal%", "load@rt ms", "policy"
    );
    for v in &r.variants {
        s += &format!(
            "{:<11} {:>8} {:>7} {:>7} {:>8} {:>9.1} {:>7.2} {:>10}  {}\n",
            v.name,
            v.samples,
            v.p50_us,
            v.p99_us,
            v.p999_us,
            v.max_us,
            v.steal_pct,
            v.load_ms_on_rt_core
                .map_or("-".into(), |m| format!("{m:.1}")),
            v.policy
        );
    }
    if let Some(x) = r.loaded_over_unloaded_p99 {
        s += &format!("loaded p99 / unloaded p99: {x:.2} (median over the rounds)\n");
    }
    if let Some(x) = r.loaded_over_control_p99 {
        s += &format!("loaded p99 / control p99: {x:.3} (median over the rounds)\n");
    }
    if let Some(x) = r.vm_loaded_over_unloaded_p99 {
        s += &format!("vm-loaded p99 / vm-unloaded p99: {x:.2} (median over the rounds)\n");
    }
    if let Some(x) = r.vm_loaded_over_control_p99 {
        s += &format!("vm-loaded p99 / vm-control p99: {x:.3} (median over the rounds)\n");
    }
    if r.rounds > 1 {
        for v in &r.variants {
            let by: Vec<String> = v.p99_us_rounds.iter().map(u64::to_string).collect();
            s += &format!("{} p99 by round: {}\n", v.name, by.join(" "));
        }
    }
    for v in r.variants.iter().filter(|v| v.retries > 0) {
        s += &format!(
            "{}: run again {} times (the guest failed first)\n",
            v.name, v.retries
        );
    }
    for v in r.variants.iter().filter(|v| !v.vmm_threads.is_empty()) {
        s += &format!("{} VMM threads: {}\n", v.name, v.vmm_threads.join("; "));
    }
    for (n, e) in &r.failed {
        s += &format!("could not run {n}: {e}\n");
    }
    s
}

/// The histograms as an SVG plot (samples per µs, log scale), into `dir`/rt-latency.svg.
pub fn plot(r: &Report, dir: &Path) -> Result<PathBuf> {
    let p = dir.join("rt-latency.svg");
    let series: Vec<(String, Vec<(f64, f64)>)> = r
        .variants
        .iter()
        .map(|v| {
            (
                v.name.to_string(),
                v.hist
                    .iter()
                    .map(|&(us, n)| (us as f64, n as f64))
                    .collect(),
            )
        })
        .collect();
    crate::plot::histograms(
        "Wake-up latency (samples per µs)",
        "latency, µs",
        &series,
        &p,
    )?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_and_cyclictest_parse() {
        let (policy, n, hist, max) = parse_probe(
            "noise\n{\"rt\":{\"samples\":3,\"interval_us\":1000,\"policy\":\"SCHED_FIFO 80\",\"p50_us\":2,\"p99_us\":9,\"p999_us\":9,\"max_us\":9.5,\"hist\":[[2,2],[9,1]]}}\n",
        )
        .unwrap();
        assert_eq!((policy.as_str(), n, max), ("SCHED_FIFO 80", 3, 9.5));
        assert_eq!(quantile(&hist, n, 0.5), 2);
        assert_eq!(quantile(&hist, n, 0.99), 9);
        let (_, n, hist, max) = parse_probe(
            "# /dev/cpu_dma_latency set to 0us\n000000 000000\n000003 000090\n000004 000009\n000050 000001\n# Total: 000000100\n# Min Latencies: 00003\n# Max Latencies: 00050\n",
        )
        .unwrap();
        assert_eq!((n, max), (100, 50.0));
        assert_eq!(quantile(&hist, n, 0.5), 3);
        assert_eq!(quantile(&hist, n, 0.995), 50);
        assert!(parse_probe("nothing here").is_none());
    }

    #[test]
    fn rounds_merge_and_ratios_are_taken_within_a_round() {
        let line = |p99: u64| {
            format!("{{\"rt\":{{\"samples\":100,\"policy\":\"SCHED_FIFO 80\",\"max_us\":{p99}.5,\"hist\":[[1,98],[{p99},2]]}}}}")
        };
        let run = |p99s: &[u64]| {
            let mut a = Acc::new("x", "x");
            for &p in p99s {
                a.add((line(p), Some(1.0), Vec::new()), 0.5).unwrap();
            }
            a
        };
        let mut loaded = run(&[10, 40, 12]).variant();
        loaded.name = "loaded";
        assert_eq!(
            (loaded.samples, loaded.p99_us_rounds.clone()),
            (300, vec![10, 40, 12])
        );
        assert_eq!(loaded.max_us, 40.5);
        assert_eq!(loaded.load_ms_on_rt_core, Some(3.0));
        assert_eq!(loaded.hist, vec![(1, 294), (10, 2), (12, 2), (40, 2)]);
        let mut control = run(&[100, 80, 400]).variant();
        control.name = "control";
        // Rounds 0.1, 0.5, 0.03: the median, not the merged figures' 40/400.
        let r = round_ratio(&[loaded, control], "loaded", "control").unwrap();
        assert!((r - 0.1).abs() < 1e-9, "{r}");
        let mut a = Acc::new("x", "x");
        assert!(a.add(("nothing".into(), None, Vec::new()), 0.0).is_err());
        assert!(Plan::new(false, Some(3), Some(5), 1000, None).is_err());
        assert_eq!(Plan::new(true, None, None, 1000, None).unwrap().rounds, 1);
    }

    #[test]
    fn a_processs_threads_say_their_policy_and_cpus() {
        let t = threads_of(std::process::id() as i32);
        assert!(!t.is_empty());
        assert!(
            t.iter()
                .all(|l| l.contains(" cpus ") && l.contains("SCHED_")),
            "{t:?}"
        );
        assert!(threads_of(-1).is_empty());
    }

    #[test]
    fn a_probe_in_a_microvm_is_its_guests_command() {
        let probe = ["/bin/cellvisor-agent".to_string(), "rt-probe".into()];
        let vm = VmProbe {
            kernel: "/bin/true".into(),
            initrd: "/bin/true".into(),
            image: "/bin/true".into(),
        };
        let host = domain::profile::Host {
            cpus: Some(vec![0, 1]),
            ..Default::default()
        };
        let text = profile(
            Path::new("/base"),
            true,
            1,
            &probe,
            Some((2, 20)),
            Some(&vm),
        );
        let p = domain::profile::parse_on(&text, "t.toml", Path::new("/"), &host).unwrap();
        let d = p.domain("probe").unwrap();
        assert!(d.realtime.is_some());
        let spec = d.vm().unwrap();
        assert_eq!(spec.vcpus, 1);
        let cl = spec.cmdline.as_deref().unwrap();
        assert!(
            cl.contains("cellvisor.run=\"/bin/cellvisor-agent rt-probe --fifo 80; sleep 2\""),
            "{cl}"
        );
        assert_eq!(p.domain("load").unwrap().cpus.as_deref(), Some("0"));
        let text = profile(
            Path::new("/base"),
            false,
            1,
            &probe,
            Some((2, 20)),
            Some(&vm),
        );
        let p = domain::profile::parse_on(&text, "t.toml", Path::new("/"), &host).unwrap();
        assert!(p.domain("probe").unwrap().realtime.is_none());
        assert_eq!(p.domain("load").unwrap().cpus, None);
    }

    #[test]
    fn the_devices_profile_places_the_load_off_the_realtime_core() {
        let probe = ["/bin/cellvisor-agent".to_string(), "rt-probe".into()];
        let text = profile(Path::new("/base"), true, 1, &probe, Some((2, 20)), None);
        let host = domain::profile::Host {
            cpus: Some(vec![0, 1]),
            ..Default::default()
        };
        let p = domain::profile::parse_on(&text, "t.toml", Path::new("/"), &host).unwrap();
        assert!(p.domain("probe").unwrap().realtime.is_some());
        assert_eq!(p.domain("load").unwrap().cpus.as_deref(), Some("0"));
        let text = profile(Path::new("/base"), false, 1, &probe, Some((2, 20)), None);
        let p = domain::profile::parse_on(&text, "t.toml", Path::new("/"), &host).unwrap();
        assert_eq!(p.domain("load").unwrap().cpus, None);
        assert_eq!(p.domain("probe").unwrap().realtime, None);
    }
}
