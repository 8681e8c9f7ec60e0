//! Device profiles: TOML in, a validated [`Profile`] out. Every problem is reported, one line
//! each, as `FILE:LINE:COL: what is wrong`. raw.rs is the file's shape, check.rs the checks
//! (one per section or concern); this module holds what they produce.

mod check;
mod raw;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::policy::Policy;

/// How a domain is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// OS-level virtualization (namespaces, cgroups): the `container` crate.
    Container,
    /// Hardware-assisted full virtualization: a microVM whose VMM runs jailed in a container.
    Microvm,
}

impl BackendKind {
    /// As a profile spells it.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Container => "container",
            BackendKind::Microvm => "microvm",
        }
    }
}

/// What a domain is for, which decides how it is scheduled and what it may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Banking, messages: the preinstalled, protected applications.
    Trusted,
    /// Third-party applications.
    Common,
    /// Latency-bound work (a modem stack): pinned cores, never throttled or frozen.
    Realtime,
}

impl Role {
    /// As a profile spells it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Trusted => "trusted",
            Role::Common => "common",
            Role::Realtime => "realtime",
        }
    }
}

/// What happens to domains in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackgroundMode {
    /// Lower CPU weight; they keep running.
    #[default]
    Throttle,
    /// Frozen: no CPU at all, memory kept.
    Freeze,
}

/// How the scheduler moves the domains that are not realtime between the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SchedPolicy {
    /// Move domains from the busiest cores to the idlest while their loads differ by more
    /// than the spread.
    Balance,
    /// Pack the domains onto the fewest cores that keep each under the threshold.
    Power,
    /// Every domain stays on the cores its profile gives it.
    #[default]
    Fixed,
}

impl SchedPolicy {
    pub const ALL: [SchedPolicy; 3] =
        [SchedPolicy::Balance, SchedPolicy::Power, SchedPolicy::Fixed];

    /// As a profile and the API spell it.
    pub fn name(self) -> &'static str {
        match self {
            SchedPolicy::Balance => "balance",
            SchedPolicy::Power => "power",
            SchedPolicy::Fixed => "fixed",
        }
    }

    pub fn parse(s: &str) -> Option<SchedPolicy> {
        SchedPolicy::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// The profile's `[scheduler]`: the policy and its knobs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, Deserialize)]
pub struct SchedParams {
    pub policy: SchedPolicy,
    /// How often loads are sampled and the policy run.
    pub period_ms: u64,
    /// `balance` acts while the busiest and the idlest core's loads differ by more than this
    /// (0..1, a share of one core).
    pub spread: f64,
    /// `power` keeps every core it uses at or under this load.
    pub threshold: f64,
    /// `power` packs onto fewer cores only when each stays this far under the threshold.
    pub margin: f64,
    /// A domain the scheduler moved stays at least this long where it was put (but `power`
    /// spreads at once when a core is over its threshold).
    pub min_residency_ms: u64,
}

impl Default for SchedParams {
    /// `fixed`; a period of 1 s, a spread of 25%, 80% (where Linux EAS gives up packing)
    /// less a margin of 10%, 5 s on a core.
    fn default() -> SchedParams {
        SchedParams {
            policy: SchedPolicy::Fixed,
            period_ms: 1000,
            spread: 0.25,
            threshold: 0.8,
            margin: 0.1,
            min_residency_ms: 5000,
        }
    }
}

impl SchedParams {
    /// Every knob within its range, or what is not: one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(50..=60_000).contains(&self.period_ms) {
            out.push(format!(
                "scheduler.period: {} ms is not between 50ms and 60s",
                self.period_ms
            ));
        }
        for (name, v) in [("spread", self.spread), ("threshold", self.threshold)] {
            if !(v > 0.0 && v <= 1.0) {
                out.push(format!(
                    "scheduler.{name}: {v} is not a share of one core (above 0, at most 1)"
                ));
            }
        }
        if !(self.margin >= 0.0 && self.margin < self.threshold) {
            out.push(format!(
                "scheduler.margin: {} is not from 0 up to the threshold ({})",
                self.margin, self.threshold
            ));
        }
        if self.min_residency_ms > 3_600_000 {
            out.push(format!(
                "scheduler.min_residency: {} ms is more than an hour",
                self.min_residency_ms
            ));
        }
        out
    }
}

/// Devices that only the foreground domain holds.
pub const EXCLUSIVE_DEVICES: [&str; 3] = ["display", "input", "camera"];
/// Devices every domain that lists them shares.
pub const SHARED_DEVICES: [&str; 2] = ["audio", "network"];

/// One domain of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub role: Role,
    /// What runs in it: a container's command, or a microVM's guest.
    pub kind: DomainKind,
    /// The domain's root: the shared base (with a private writable layer) unless given. A
    /// microvm domain's is its VMM's jail.
    pub rootfs: Option<PathBuf>,
    pub cpus: Option<String>,
    pub cpu_weight: u32,
    pub memory_bytes: Option<u64>,
    pub pids: Option<i64>,
    pub exclusive_devices: Vec<String>,
    pub shared_devices: Vec<String>,
    pub passthrough: Vec<PathBuf>,
    /// A realtime domain's scheduling; its `cpus` are then its own, no other domain runs
    /// there.
    pub realtime: Option<RtPolicy>,
}

/// How a realtime domain's processes are scheduled (and, for fifo and rr, the real-time CPU
/// time its cgroup may use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtPolicy {
    /// SCHED_FIFO at `priority` (1..99).
    Fifo { priority: u8, budget: Budget },
    /// SCHED_RR at `priority` (1..99).
    Rr { priority: u8, budget: Budget },
    /// SCHED_DEADLINE: `runtime` ns of CPU in every `period` ns, done within `deadline` ns.
    Deadline {
        runtime_ns: u64,
        deadline_ns: u64,
        period_ns: u64,
    },
}

/// Real-time runtime per period (µs), what cgroup v1's RT group scheduling gives a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub runtime_us: u64,
    pub period_us: u64,
}

impl Budget {
    /// The share of one CPU it is, in millionths.
    pub fn millionths(&self) -> u64 {
        self.runtime_us * 1_000_000 / self.period_us.max(1)
    }
}

/// What the host grants: its CPUs (when known) and the real-time share of each CPU's time
/// (`kernel.sched_rt_runtime_us` / `sched_rt_period_us`). A profile is checked against one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The online CPUs, when known.
    pub cpus: Option<Vec<u32>>,
    /// Real-time runtime per period the host grants all groups together, µs (-1: no limit).
    pub rt_runtime_us: i64,
    pub rt_period_us: u64,
    /// Its cpuset controller is cgroup v1's, where cores that are not all of them become a
    /// root domain of their own (what SCHED_DEADLINE needs) only when the whole host stops
    /// load balancing.
    pub cpuset_v1: bool,
    /// Its kernel can hold a domain's cores exclusively: a v1 cpuset, or a v2 one with
    /// partitions apart from their parent (`cpuset.cpus.exclusive`, Linux 6.7; seen by the
    /// root's `cpuset.cpus.isolated`, 6.8).
    pub exclusive_cpus: bool,
    /// It has real-time group scheduling (cgroup v1's `cpu.rt_runtime_us`): a domain's budget
    /// is its own. Without it (cgroup v2, or a kernel built without it) real-time time is
    /// bounded host-wide only, by `kernel.sched_rt_runtime_us`.
    pub rt_group_budgets: bool,
}

impl Default for Host {
    /// The kernel's defaults (95% of each second), CPUs unknown.
    fn default() -> Host {
        Host {
            cpus: None,
            rt_runtime_us: 950_000,
            rt_period_us: 1_000_000,
            cpuset_v1: false,
            exclusive_cpus: true,
            rt_group_budgets: true,
        }
    }
}

/// `100ms`, `2ms`, `500us` (or `µs`), `1s`, `2000ns`: nanoseconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let i = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = s[..i].parse().ok()?;
    let mult = match s[i..].trim() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `0-1,3` as CPU numbers, sorted (the list is checked before).
pub fn cpu_list(s: &str) -> Vec<u32> {
    // A range is cut at MAX_CPUS: "0-4294967295" is not 16 GiB of CPU numbers.
    let mut out: Vec<u32> = s
        .split(',')
        .flat_map(|p| match p.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
                (a..=b.min(MAX_CPUS - 1)).collect::<Vec<u32>>()
            }
            None => p
                .parse()
                .ok()
                .filter(|&c| c < MAX_CPUS)
                .into_iter()
                .collect(),
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The most CPUs a Linux kernel can have (its largest NR_CPUS): no CPU number reaches it.
pub const MAX_CPUS: u32 = 8192;

/// Is `s` a CPU list like `0-1,3` (each range from low to high, every number below
/// [`MAX_CPUS`])?
pub fn is_cpu_list(s: &str) -> bool {
    let cpu = |x: &str| x.parse::<u32>().ok().filter(|&c| c < MAX_CPUS);
    !s.is_empty()
        && s.split(',').all(|p| match p.split_once('-') {
            Some((a, b)) => matches!((cpu(a), cpu(b)), (Some(a), Some(b)) if a <= b),
            None => cpu(p).is_some(),
        })
}

/// CPU numbers as a list like `0-1,3`.
pub fn cpu_list_string(cpus: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// What runs in a domain, by backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainKind {
    /// A container domain runs its command.
    Container { command: Vec<String> },
    /// A microvm domain boots its guest (its VMM runs jailed in a container domain).
    Microvm(VmSpec),
}

impl Domain {
    pub fn backend(&self) -> BackendKind {
        match self.kind {
            DomainKind::Container { .. } => BackendKind::Container,
            DomainKind::Microvm(_) => BackendKind::Microvm,
        }
    }

    /// A container domain's command (none for a microvm domain).
    pub fn command(&self) -> &[String] {
        match &self.kind {
            DomainKind::Container { command } => command,
            DomainKind::Microvm(_) => &[],
        }
    }

    /// What a microvm domain boots.
    pub fn vm(&self) -> Option<&VmSpec> {
        match &self.kind {
            DomainKind::Microvm(vm) => Some(vm),
            DomainKind::Container { .. } => None,
        }
    }
}

/// The guest of a microvm domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The kernel command line (the VMM's default when absent).
    pub cmdline: Option<String>,
    pub vcpus: u8,
    /// Raw disk images, in order: read-write, `,ro`, or `,cow` (read-only, shared by every VM
    /// that names it, under a private copy-on-write layer).
    pub disks: Vec<(PathBuf, DiskMode)>,
    /// Its guest memory offered to the kernel's page merging (KSM).
    pub merge: bool,
    /// A virtio balloon with free page reporting and deflate on OOM: the guest hands back
    /// what it frees, the daemon's API sets its size, and the `[memory]` policy shrinks the
    /// domain through it in the background.
    pub balloon: bool,
}

/// How a microvm domain sees one of its disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskMode {
    ReadWrite,
    ReadOnly,
    CopyOnWrite,
}

/// The guest memory of a microvm domain without `memory`.
pub const DEFAULT_VM_MEMORY: u64 = 128 << 20;

/// A validated device profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// The read-only base root filesystem shared by every domain (Cells' layout).
    pub base: Option<PathBuf>,
    pub domains: Vec<Domain>,
    pub foreground: Option<String>,
    pub background: BackgroundMode,
    pub background_cpu_weight: u32,
    pub policy: Policy,
    /// The host device node behind each device class (`display`, `input`, ...). A class
    /// without a node is owned on paper only.
    pub device_nodes: BTreeMap<String, PathBuf>,
    pub scheduler: SchedParams,
    /// `[memory]`: background domains shrunk when the device runs short.
    pub memory: Option<MemoryPolicy>,
}

/// The profile's `[memory]`: when the host's memory pressure (PSI: the share of time some
/// task waited for memory, over 10 s) reaches `pressure_pct`, each background container
/// domain is capped to `background_share` of what it uses then (v1: its soft limit, which
/// reclaim goes after first; v2: memory.high); below half of it, and for the domain that
/// comes to the front, the caps go.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MemoryPolicy {
    pub pressure_pct: f64,
    pub background_share: f64,
}

impl MemoryPolicy {
    /// With the background shrunk (`shrunk`) or not and the pressure now: `Some(true)` to
    /// shrink it, `Some(false)` to give it back, `None` to leave it (between the two
    /// thresholds nothing changes, so a pressure near one does not flap).
    pub fn next(&self, pressure_pct: f64, shrunk: bool) -> Option<bool> {
        if !shrunk && pressure_pct >= self.pressure_pct {
            Some(true)
        } else if shrunk && pressure_pct < self.pressure_pct / 2.0 {
            Some(false)
        } else {
            None
        }
    }

    /// The cap of a background domain that uses `bytes`: its share, in whole pages, at
    /// least one MiB.
    pub fn cap(&self, bytes: u64) -> u64 {
        let c = (bytes as f64 * self.background_share) as u64;
        c.div_ceil(4096).saturating_mul(4096).max(1 << 20)
    }
}

impl Profile {
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.iter().find(|d| d.name == name)
    }

    /// The host nodes of `d`'s exclusive devices (those the profile maps to a node).
    pub fn exclusive_nodes(&self, d: &Domain) -> Vec<PathBuf> {
        d.exclusive_devices
            .iter()
            .filter_map(|c| self.device_nodes.get(c).cloned())
            .collect()
    }

    /// The host nodes of `d`'s shared devices.
    pub fn shared_nodes(&self, d: &Domain) -> Vec<PathBuf> {
        d.shared_devices
            .iter()
            .filter_map(|c| self.device_nodes.get(c).cloned())
            .collect()
    }
}

/// Where a device class is found on a typical phone, when the profile does not say.
pub const DEFAULT_DEVICE_NODES: [(&str, &str); 4] = [
    ("display", "/dev/fb0"),
    ("input", "/dev/input/event0"),
    ("camera", "/dev/video0"),
    ("audio", "/dev/snd/pcmC0D0p"),
];

/// Every problem found in a profile, one line each.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct Errors(pub Vec<String>);

/// `64K`, `128M`, `1G`, or plain bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                _ => return None,
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Parse and validate profile text; `file` names it in errors, `dir` anchors relative paths.
/// Checked against the kernel's defaults, CPUs unknown ([`parse_on`] checks against a host).
pub fn parse(text: &str, file: &str, dir: &Path) -> Result<Profile, Errors> {
    parse_on(text, file, dir, &Host::default())
}

/// The fuzz target's check (`fuzz/fuzz_targets/profile.rs`) and a proptest's: whatever the
/// text, a profile or errors, each one line with its place, on a host of two CPUs with the
/// kernel's real-time defaults.
pub fn fuzz(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let host = Host {
        cpus: Some(vec![0, 1]),
        ..Host::default()
    };
    if let Err(Errors(es)) = parse_on(&text, "fuzz.toml", Path::new("/fuzz"), &host) {
        assert!(!es.is_empty(), "refused without a reason");
        for e in es {
            assert!(
                e.starts_with("fuzz.toml:"),
                "an error without its place: {e}"
            );
            assert!(!e.contains('\n'), "an error of more than one line: {e}");
        }
    }
}

/// [`parse`], checked against `host`: the realtime domains' budgets against what it grants,
/// their cores against its CPUs; every other domain without `cpus` is placed on the CPUs no
/// realtime domain owns.
pub fn parse_on(text: &str, file: &str, dir: &Path, host: &Host) -> Result<Profile, Errors> {
    let mut r = check::Report::new(file, text);
    let Some(raw) = check::syntax(&mut r, text) else {
        return Err(Errors(r.errors));
    };
    let mut names = HashSet::new();
    let domains: Vec<Domain> = raw
        .domains
        .iter()
        .map(|d| check::domain(&mut r, d, dir, &mut names))
        .collect();
    let mut domains = domains;
    check::realtime(&mut r, &raw, &mut domains, host);
    let (domains, replicas) = check::replicas(&mut r, &raw.domains, domains, &mut names);
    check::base(&mut r, &raw);
    let fg = check::foreground(&mut r, &raw, &domains, &replicas);
    let policy = check::policy(&mut r, &raw.allow, &names, &replicas);
    let device_nodes = check::device_nodes(&mut r, &raw.device_nodes);
    let scheduler = check::scheduler(&mut r, raw.scheduler.as_ref());
    let memory = check::memory_policy(&mut r, raw.memory.as_ref());
    if !r.errors.is_empty() {
        return Err(Errors(r.errors));
    }
    Ok(Profile {
        name: raw.name.into_inner(),
        base: raw.base.map(|b| dir.join(b.get_ref())),
        domains,
        foreground: fg.initial,
        background: fg.background,
        background_cpu_weight: fg.background_cpu_weight,
        policy,
        device_nodes,
        scheduler,
        memory,
    })
}

/// Load a profile file.
pub fn load(path: &Path) -> Result<Profile, Errors> {
    load_on(path, &Host::default())
}

/// Load a profile file, checked against `host` ([`parse_on`]).
pub fn load_on(path: &Path, host: &Host) -> Result<Profile, Errors> {
    let text = crate::read_document(path)
        .and_then(|b| {
            String::from_utf8(b)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
        .map_err(|e| Errors(vec![format!("{}: {e}", path.display())]))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse_on(&text, &path.display().to_string(), dir, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        match parse(text, "p.toml", Path::new("/x")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(Errors(e)) => e,
        }
    }

    const OK: &str = r#"
name = "t"
base = "rootfs"
[foreground]
initial = "a"
[[domain]]
name = "a"
role = "trusted"
command = ["/bin/sh"]
devices.exclusive = ["display"]
[[domain]]
name = "b"
role = "realtime"
cpus = "1"
command = ["/bin/sh"]
[[allow]]
from = "a"
to = "b"
channel = "ctl"
buffer = "64K"
"#;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, ..Default::default() })]
        #[test]
        fn no_text_breaks_the_profile_checker(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            fuzz(&data);
        }

        /// Near the real thing: the phone profile with a few bytes changed.
        #[test]
        fn nor_a_phone_profile_with_bytes_changed(edits in proptest::collection::vec((0usize..4000, proptest::prelude::any::<u8>()), 1..6)) {
            let mut b = crate::DEFAULT_PROFILE.as_bytes().to_vec();
            for (at, v) in edits {
                let n = b.len();
                b[at % n] = v;
            }
            fuzz(&b);
        }
    }

    /// `[memory]`: shrink at the pressure, give back under half of it (nothing between), caps
    /// in whole pages of at least 1 MiB; out-of-range values one line each at their place.
    #[test]
    fn the_memory_policy_shrinks_and_gives_back_with_a_gap_between() {
        let p = parse(
            &format!("{OK}[memory]\npressure = 10\n"),
            "p.toml",
            Path::new("/x"),
        )
        .unwrap()
        .memory
        .unwrap();
        assert_eq!(p.background_share, 0.5);
        assert_eq!(p.next(10.0, false), Some(true));
        assert_eq!(p.next(9.9, false), None);
        assert_eq!(p.next(6.0, true), None);
        assert_eq!(p.next(4.9, true), Some(false));
        assert_eq!(p.next(50.0, true), None);
        assert_eq!(p.cap(100 << 20), 50 << 20);
        assert_eq!(p.cap(10_000_001), 5_001_216);
        assert_eq!(p.cap(0), 1 << 20);
        let e = errs(&format!(
            "{OK}[memory]\npressure = 120\nbackground_share = 0\n"
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("memory.pressure: 120 is not a percentage"),
            "{e:?}"
        );
        assert!(
            e[1].contains("memory.background_share: 0 is not a share"),
            "{e:?}"
        );
        assert!(errs(&format!("{OK}[memory]\nshare = 1\n"))[0].contains("unknown field"));
    }

    /// `replicas = N`: N alike domains NAME-1..NAME-N, each with the entry's settings; a rule
    /// naming the entry holds for each replica; the foreground names one replica.
    #[test]
    fn an_entry_with_replicas_stands_for_that_many_domains() {
        let text = format!(
            "{OK}[[domain]]\nname = \"app\"\nrole = \"common\"\ncommand = [\"/bin/sleep\", \"9\"]\nmemory = \"16M\"\nreplicas = 1000\ndevices.exclusive = [\"display\"]\n\
             [[allow]]\nfrom = \"app\"\nto = \"a\"\nchannel = \"req\"\nbuffer = \"4K\"\n"
        );
        let p = parse(&text, "p.toml", Path::new("/x")).unwrap();
        assert_eq!(p.domains.len(), 1002);
        let names: Vec<&str> = p.domains.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(&names[..4], ["a", "b", "app-1", "app-2"]);
        assert_eq!(names[1001], "app-1000");
        assert!(p.domains[2..]
            .iter()
            .all(|d| d.memory_bytes == Some(16 << 20) && d.command() == ["/bin/sleep", "9"]));
        assert_eq!(p.policy.len(), 1001);
        assert!(matches!(
            p.policy.check("app-777", "a", "req", None),
            crate::Decision::Allow { .. }
        ));
        assert!(matches!(
            p.policy.check("app", "a", "req", None),
            crate::Decision::Deny(_)
        ));
        let fg = text.replace("initial = \"a\"", "initial = \"app-3\"");
        assert_eq!(
            parse(&fg, "p.toml", Path::new("/x"))
                .unwrap()
                .foreground
                .as_deref(),
            Some("app-3")
        );
    }

    #[test]
    fn replicas_are_refused_in_one_line_each() {
        let app = |extra: &str| {
            format!(
                "{OK}[[domain]]\nname = \"app\"\nrole = \"common\"\ncommand = [\"x\"]\n{extra}\n"
            )
        };
        let one = |text: String, says: &str| {
            let e = errs(&text);
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(e[0].contains(says), "{e:?}");
            assert!(e[0].starts_with("p.toml:"), "{e:?}");
        };
        one(
            app("replicas = 0"),
            "domain \"app\": replicas 0 is outside 1..4096",
        );
        one(app("replicas = 5000"), "replicas 5000 is outside 1..4096");
        one(
            OK.replace("role = \"trusted\"", "role = \"trusted\"\nreplicas = 2"),
            "domain \"a\": only a common domain can have replicas (a trusted one is one of a kind)",
        );
        let long = format!(
            "{OK}[[domain]]\nname = \"{}\"\nrole = \"common\"\ncommand = [\"x\"]\nreplicas = 100\n",
            "n".repeat(29)
        );
        one(long, "would be longer than 32 characters");
        one(
            format!(
                "{}[[domain]]\nname = \"app-2\"\nrole = \"common\"\ncommand = [\"x\"]\n",
                app("replicas = 3")
            ),
            "domain \"app-2\" (a replica of \"app\") is defined twice",
        );
        one(
            app("replicas = 3").replace("initial = \"a\"", "initial = \"app\""),
            "foreground.initial: \"app\" stands for 3 domains: name one (app-1, ...)",
        );
        one(
            format!("{}[[domain]]\nname = \"web\"\nrole = \"common\"\ncommand = [\"x\"]\nreplicas = 2\n[[allow]]\nfrom = \"app\"\nto = \"web\"\nchannel = \"c\"\nbuffer = \"4K\"\n", app("replicas = 3")),
            "allow: \"app\" and \"web\" both stand for replicas: name one replica on one side",
        );
        one(
            app("replicas = 3\nrootfs = \"r\""),
            "replicas run on the shared base (each with a private layer), not on one rootfs",
        );
        one(
            format!("{OK}[[domain]]\nname = \"vm\"\nrole = \"common\"\nbackend = \"microvm\"\nkernel = \"k\"\ndisks = [\"d.img\"]\nreplicas = 2\n"),
            "replicas cannot share the writable disk /x/d.img (give it as PATH,ro or PATH,cow)",
        );
        // A rule naming the entry and one naming a replica: the same channel twice.
        let rule = |from: &str| {
            format!("[[allow]]\nfrom = \"{from}\"\nto = \"a\"\nchannel = \"c\"\nbuffer = \"4K\"\n")
        };
        one(
            format!("{}{}{}", app("replicas = 3"), rule("app"), rule("app-2")),
            "allow: channel \"c\" from \"app-2\" to \"a\" is allowed twice (once through a replicated entry)",
        );
        // A rule from the entry to one of its replicas holds for the others.
        let p = parse(
            &format!(
                "{}[[allow]]\nfrom = \"app\"\nto = \"app-2\"\nchannel = \"c\"\nbuffer = \"4K\"\n",
                app("replicas = 3")
            ),
            "p.toml",
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(p.policy.len(), 3);
        assert!(matches!(
            p.policy.check("app-2", "app-2", "c", None),
            crate::Decision::Deny(_)
        ));
    }

    #[test]
    fn a_domain_name_is_short() {
        let long = "d".repeat(33);
        let text = crate::DEFAULT_PROFILE.replace("\"modem\"", &format!("{long:?}"));
        let e = parse(&text, "p.toml", Path::new("/x")).unwrap_err();
        assert!(
            e.0.iter().any(|l| l.contains("at most 32 characters")),
            "{e:?}"
        );
        let ok = crate::DEFAULT_PROFILE.replace("\"modem\"", &format!("{:?}", "d".repeat(32)));
        parse(&ok, "p.toml", Path::new("/x")).unwrap();
    }

    #[test]
    fn a_cpu_list_names_only_cpus_a_kernel_can_have() {
        assert_eq!(cpu_list("0-2,5"), [0, 1, 2, 5]);
        assert!(is_cpu_list("0-8191"));
        assert!(!is_cpu_list("0-4294967295") && !is_cpu_list("8192"));
        // Even unchecked, a huge range costs MAX_CPUS numbers at most.
        assert_eq!(cpu_list("0-4294967295").len(), MAX_CPUS as usize);
        assert!(cpu_list("4294967295").is_empty());
    }

    #[test]
    fn the_embedded_phone_profile_is_valid() {
        let p = parse(crate::DEFAULT_PROFILE, "phone.toml", Path::new("/x")).unwrap();
        assert!(p.domains.len() >= 3);
        assert!(p.domains.iter().any(|d| d.role == Role::Realtime));
        assert!(p.foreground.is_some());
    }

    #[test]
    fn a_valid_profile_parses() {
        let p = parse(OK, "p.toml", Path::new("/x")).unwrap();
        assert_eq!(p.base, Some(PathBuf::from("/x/rootfs")));
        assert_eq!(p.domain("a").unwrap().exclusive_devices, ["display"]);
        assert_eq!(p.domain("b").unwrap().cpu_weight, 100);
        assert_eq!(p.foreground.as_deref(), Some("a"));
    }

    #[test]
    fn the_scheduler_section() {
        assert_eq!(
            parse(OK, "p.toml", Path::new("/x")).unwrap().scheduler,
            SchedParams::default()
        );
        let text = format!("{OK}\n[scheduler]\npolicy = \"power\"\nperiod = \"500ms\"\nthreshold = 0.7\nmin_residency = \"2s\"\n");
        let s = parse(&text, "p.toml", Path::new("/x")).unwrap().scheduler;
        assert_eq!(s.policy, SchedPolicy::Power);
        assert_eq!((s.period_ms, s.min_residency_ms), (500, 2000));
        assert_eq!((s.threshold, s.spread, s.margin), (0.7, 0.25, 0.1));
        let line = OK.lines().count() + 2;
        let e = errs(&format!(
            "{OK}\n[scheduler]\npolicy = \"turbo\"\nperiod = \"soon\"\n"
        ));
        assert_eq!(
            e,
            [
                format!(
                    "p.toml:{}:10: scheduler.policy: \"turbo\" is not one of balance, power, fixed",
                    line + 1
                ),
                format!(
                    "p.toml:{}:10: scheduler.period: \"soon\" is not a duration like 500ms or 2s",
                    line + 2
                ),
            ]
        );
        let e = errs(&format!(
            "{OK}\n[scheduler]\nthreshold = 1.5\nmargin = 2.0\nperiod = \"10ms\"\n"
        ));
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with(&format!("p.toml:{}:10: ", line + 3)),
            "{e:?}"
        );
        assert!(
            e[0].ends_with("scheduler.period: 10 ms is not between 50ms and 60s"),
            "{e:?}"
        );
        assert!(
            e[1].ends_with(
                "scheduler.threshold: 1.5 is not a share of one core (above 0, at most 1)"
            ),
            "{e:?}"
        );
        assert!(
            e[2].contains("scheduler.margin: 2 is not from 0 up to the threshold"),
            "{e:?}"
        );
    }

    #[test]
    fn syntax_errors_have_a_place() {
        let e = errs("name = \"t\"\n[[domain]\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("p.toml:2:"), "{e:?}");
    }

    #[test]
    fn unknown_fields_and_roles_are_refused_with_a_place() {
        let e = errs(&OK.replace("role = \"trusted\"", "role = \"boss\""));
        assert!(
            e[0].starts_with("p.toml:8:") && e[0].contains("boss"),
            "{e:?}"
        );
        let e = errs(&OK.replace("cpus = \"1\"", "cpus = \"1\"\ncolour = 3"));
        assert!(e[0].contains("colour"), "{e:?}");
    }

    #[test]
    fn every_semantic_error_is_reported_on_its_line() {
        let bad = OK
            .replace("initial = \"a\"", "initial = \"nobody\"")
            .replace("to = \"b\"", "to = \"ghost\"")
            .replace("buffer = \"64K\"", "buffer = \"3000\"")
            .replace("cpus = \"1\"", "cpus = \"x\"")
            .replace(
                "devices.exclusive = [\"display\"]",
                "devices.exclusive = [\"printer\"]",
            );
        let e = errs(&bad);
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(
            e.iter()
                .any(|l| l.starts_with("p.toml:5:") && l.contains("nobody")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("p.toml:18:") && l.contains("ghost")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("p.toml:20:") && l.contains("power of two")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("p.toml:14:") && l.contains("cpus")),
            "{e:#?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("p.toml:10:") && l.contains("printer")),
            "{e:#?}"
        );
    }

    #[test]
    fn structural_rules() {
        // Twice the same domain; a realtime domain without cpus, or in the foreground.
        let e = errs(&OK.replace("name = \"b\"", "name = \"a\""));
        assert!(e.iter().any(|l| l.contains("defined twice")), "{e:?}");
        let e = errs(&OK.replace("cpus = \"1\"\n", ""));
        assert!(e.iter().any(|l| l.contains("needs its own cpus")), "{e:?}");
        let e = errs(&OK.replace("initial = \"a\"", "initial = \"b\""));
        assert!(
            e.iter().any(|l| l.contains("cannot be in the foreground")),
            "{e:?}"
        );
        let e = errs(&OK.replace("to = \"b\"", "to = \"a\""));
        assert!(e.iter().any(|l| l.contains("to itself")), "{e:?}");
    }

    #[test]
    fn device_nodes_map_classes_to_host_nodes() {
        let p = parse(
            &format!("{OK}[device_nodes]\ndisplay = \"/dev/vcs1\"\n"),
            "p.toml",
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(p.device_nodes["display"], PathBuf::from("/dev/vcs1"));
        // Unset classes keep a phone's usual node.
        assert_eq!(p.device_nodes["camera"], PathBuf::from("/dev/video0"));
        assert_eq!(
            p.exclusive_nodes(p.domain("a").unwrap()),
            [PathBuf::from("/dev/vcs1")]
        );
        let e = errs(&format!("{OK}[device_nodes]\nprinter = \"/dev/lp0\"\nnetwork = \"/dev/x\"\ninput = \"/etc/passwd\"\n"));
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("p.toml:22:") && e[0].contains("printer"),
            "{e:?}"
        );
        assert!(e.iter().any(|l| l.contains("network")), "{e:?}");
        assert!(
            e.iter()
                .any(|l| l.starts_with("p.toml:24:") && l.contains("not a path under /dev")),
            "{e:?}"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64K"), Some(65536));
        assert_eq!(parse_size("128M"), Some(128 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size("M"), None);
    }
}
