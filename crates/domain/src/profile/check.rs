//! Validation, one check per section or concern, each adding its problems to one [`Report`]
//! (so a profile's every problem is said at once, each on its line) and returning what it
//! validated. Nothing here reads a file or makes a syscall.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;

use super::raw;
use super::{
    cpu_list, cpu_list_string, is_cpu_list, parse_duration, parse_size, BackendKind,
    BackgroundMode, Budget, DiskMode, Domain, DomainKind, Host, MemoryPolicy, Role, RtPolicy,
    SchedParams, SchedPolicy, VmSpec, DEFAULT_DEVICE_NODES, EXCLUSIVE_DEVICES, SHARED_DEVICES,
};
use crate::policy::{Policy, Rule};

/// The problems found so far, each as `FILE:LINE:COL: what is wrong`.
pub(super) struct Report<'a> {
    file: &'a str,
    text: &'a str,
    pub errors: Vec<String>,
}

impl<'a> Report<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Report {
            file,
            text,
            errors: Vec::new(),
        }
    }

    /// A problem at `span` of the text.
    pub fn at(&mut self, span: Range<usize>, msg: impl std::fmt::Display) {
        let upto = &self.text[..span.start.min(self.text.len())];
        let line = upto.matches('\n').count() + 1;
        let col = upto.len() - upto.rfind('\n').map_or(0, |i| i + 1) + 1;
        self.errors
            .push(format!("{}:{line}:{col}: {msg}", self.file));
    }

    /// A problem with no place (the file as a whole).
    pub fn whole(&mut self, msg: impl std::fmt::Display) {
        self.errors.push(format!("{}: {msg}", self.file));
    }
}

/// The text as TOML, or its syntax error (with its place).
pub(super) fn syntax(r: &mut Report, text: &str) -> Option<raw::Profile> {
    match toml::from_str(text) {
        Ok(raw) => {
            // TOML can carry a NUL only as an escape; no command, path or name can hold one.
            let nul = ["\\u0000", "\\U00000000"]
                .iter()
                .filter_map(|e| text.find(e))
                .min();
            match nul {
                Some(at) if toml::from_str::<toml::Value>(text).is_ok_and(|v| holds_nul(&v)) => {
                    r.at(
                        at..at,
                        "a string holds a NUL byte, which no command, path or name can carry",
                    );
                    None
                }
                _ => Some(raw),
            }
        }
        Err(e) => {
            let msg = e.message().trim().to_string();
            match e.span() {
                Some(s) => r.at(s, msg),
                None => r.whole(msg),
            }
            None
        }
    }
}

/// A path under /dev that cannot climb out of it.
/// Whether any string (or key) in `v` holds a NUL byte.
fn holds_nul(v: &toml::Value) -> bool {
    match v {
        toml::Value::String(s) => s.contains('\0'),
        toml::Value::Array(a) => a.iter().any(holds_nul),
        toml::Value::Table(t) => t.iter().any(|(k, x)| k.contains('\0') || holds_nul(x)),
        _ => false,
    }
}

fn is_dev_path(p: &Path) -> bool {
    p.starts_with("/dev/") && !p.components().any(|c| c == Component::ParentDir)
}

/// A CPU weight in 1..10000 (`what` names it in the error).
fn weight(r: &mut Report, w: &Spanned<u32>, what: &str) {
    if !(1..=10000).contains(w.get_ref()) {
        r.at(
            w.span(),
            format!("{what} {} is outside 1..10000", w.get_ref()),
        );
    }
}

/// One `[[domain]]`, whole; `names` holds the names seen before it.
pub(super) fn domain(
    r: &mut Report,
    d: &raw::Domain,
    dir: &Path,
    names: &mut HashSet<String>,
) -> Domain {
    let name = d.name.get_ref();
    name_of(r, d, names);
    let kind = match d.backend.get_ref() {
        BackendKind::Microvm => microvm(r, d, dir),
        BackendKind::Container => container(r, d),
    };
    cpus(r, d);
    if let Some(w) = &d.cpu_weight {
        weight(r, w, &format!("domain {name:?}: cpu_weight"));
    }
    let memory_bytes = memory(r, d);
    if let Some(p) = &d.pids {
        if *p.get_ref() < 1 {
            r.at(
                p.span(),
                format!("domain {name:?}: pids must be at least 1"),
            );
        }
    }
    devices(r, d);
    let realtime = d.realtime.as_ref().and_then(|rt| rt_policy(r, d, rt));
    let strings = |v: &[Spanned<String>]| v.iter().map(|s| s.get_ref().clone()).collect();
    Domain {
        name: name.clone(),
        role: d.role,
        kind,
        rootfs: d.rootfs.as_ref().map(|p| dir.join(p.get_ref())),
        cpus: d.cpus.as_ref().map(|c| c.get_ref().clone()),
        cpu_weight: d.cpu_weight.as_ref().map_or(100, |w| *w.get_ref()),
        memory_bytes,
        pids: d.pids.as_ref().map(|p| *p.get_ref()),
        exclusive_devices: strings(&d.devices.exclusive),
        shared_devices: strings(&d.devices.shared),
        passthrough: d
            .devices
            .passthrough
            .iter()
            .map(|s| PathBuf::from(s.get_ref()))
            .collect(),
        realtime,
    }
}

/// A realtime domain's `realtime = { ... }`: fifo or rr with a priority and a budget, or
/// deadline with its runtime, deadline and period.
fn rt_policy(r: &mut Report, d: &raw::Domain, rt: &Spanned<raw::Realtime>) -> Option<RtPolicy> {
    let name = d.name.get_ref();
    let at = |r: &mut Report, sp: Range<usize>, msg: String| {
        r.at(sp, format!("domain {name:?}: realtime: {msg}"));
        None
    };
    if d.role != Role::Realtime {
        return at(
            r,
            rt.span(),
            "only a role = \"realtime\" domain is scheduled in real time".into(),
        );
    }
    let rt = rt.get_ref();
    let ns = |r: &mut Report, field: &str, v: &Option<Spanned<String>>| -> Option<Option<u64>> {
        let Some(v) = v else { return Some(None) };
        match parse_duration(v.get_ref()) {
            Some(n) => Some(Some(n)),
            None => {
                r.at(
                    v.span(),
                    format!(
                        "domain {name:?}: realtime: {field} {:?} is not a duration like 2ms",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    };
    let (runtime, deadline, period) = (
        ns(r, "runtime", &rt.runtime)?,
        ns(r, "deadline", &rt.deadline)?,
        ns(r, "period", &rt.period)?,
    );
    match rt.policy.get_ref().as_str() {
        p @ ("fifo" | "rr") => {
            for (field, v) in [
                ("runtime", &rt.runtime),
                ("deadline", &rt.deadline),
                ("period", &rt.period),
            ] {
                if let Some(v) = v {
                    return at(
                        r,
                        v.span(),
                        format!(
                            "{field} is for policy \"deadline\"; {p} takes a priority and a budget"
                        ),
                    );
                }
            }
            let priority = match &rt.priority {
                Some(pr) if (1..=99).contains(pr.get_ref()) => *pr.get_ref() as u8,
                Some(pr) => {
                    return at(
                        r,
                        pr.span(),
                        format!("priority {} is outside 1..99", pr.get_ref()),
                    )
                }
                None => return at(r, rt.policy.span(), format!("{p} needs a priority (1..99)")),
            };
            let Some(b) = &rt.budget else {
                return at(
                    r,
                    rt.policy.span(),
                    format!("{p} needs a budget of real-time CPU time, like budget = \"100ms/1s\""),
                );
            };
            let budget = b
                .get_ref()
                .split_once('/')
                .and_then(|(a, b)| Some((parse_duration(a)?, parse_duration(b)?)))
                .filter(|&(run, per)| run >= 1_000 && per >= 1_000 && run <= per);
            let Some((run, per)) = budget else {
                return at(r, b.span(), format!("budget {:?} is not RUNTIME/PERIOD with 1us <= runtime <= period, like \"100ms/1s\"", b.get_ref()));
            };
            let budget = Budget {
                runtime_us: run / 1_000,
                period_us: per / 1_000,
            };
            Some(if p == "fifo" {
                RtPolicy::Fifo { priority, budget }
            } else {
                RtPolicy::Rr { priority, budget }
            })
        }
        "deadline" => {
            for (field, sp) in [
                ("priority", rt.priority.as_ref().map(|v| v.span())),
                ("budget", rt.budget.as_ref().map(|v| v.span())),
            ] {
                if let Some(sp) = sp {
                    return at(r, sp, format!("{field} is for fifo and rr; deadline takes runtime, deadline and period"));
                }
            }
            let (Some(runtime), Some(period)) = (runtime, period) else {
                return at(
                    r,
                    rt.policy.span(),
                    "deadline needs a runtime and a period (and may have a deadline)".into(),
                );
            };
            let deadline = deadline.unwrap_or(period);
            if runtime < 1024 || runtime > deadline || deadline > period {
                return at(r, rt.policy.span(), format!("deadline needs 1024ns <= runtime <= deadline <= period, not {runtime} <= {deadline} <= {period} ns"));
            }
            Some(RtPolicy::Deadline {
                runtime_ns: runtime,
                deadline_ns: deadline,
                period_ns: period,
            })
        }
        other => at(
            r,
            rt.policy.span(),
            format!("policy {other:?} is not fifo, rr or deadline"),
        ),
    }
}

/// Across the realtime domains: each owns its cores alone, their budgets fit what `host`
/// grants, they leave the host a core for the others; the other domains keep off their
/// cores (and, without `cpus`, are placed on the rest when the host's CPUs are known).
pub(super) fn realtime(r: &mut Report, p: &raw::Profile, domains: &mut [Domain], host: &Host) {
    let cpus_span = |i: usize| {
        let d = &p.domains[i];
        d.cpus.as_ref().map_or(d.name.span(), |c| c.span())
    };
    let mut owned: Vec<(u32, usize)> = Vec::new();
    let mut share = 0u64;
    let capacity = (host.rt_runtime_us >= 0)
        .then(|| host.rt_runtime_us as u64 * 1_000_000 / host.rt_period_us.max(1));
    for i in 0..domains.len() {
        let d = &domains[i];
        let (Some(rt), Some(cpus)) = (d.realtime, &d.cpus) else {
            continue;
        };
        let name = d.name.clone();
        let mine = cpu_list(cpus);
        for (c, j) in owned.iter().filter(|(c, _)| mine.contains(c)) {
            r.at(
                cpus_span(i),
                format!("domain {name:?}: cpu {c} is realtime domain {:?}'s: a realtime domain's cores are its own", domains[*j].name),
            );
        }
        if let Some(online) = &host.cpus {
            let off: Vec<u32> = mine
                .iter()
                .copied()
                .filter(|c| !online.contains(c))
                .collect();
            if !off.is_empty() {
                r.at(
                    cpus_span(i),
                    format!(
                        "domain {name:?}: cpus {} are not online on this host ({})",
                        cpu_list_string(&off),
                        cpu_list_string(online)
                    ),
                );
            }
        }
        if let RtPolicy::Deadline { .. } = rt {
            let sp = p.domains[i]
                .realtime
                .as_ref()
                .map_or(p.domains[i].name.span(), |v| v.span());
            let all = host
                .cpus
                .as_ref()
                .is_some_and(|on| on.iter().all(|c| mine.contains(c)));
            if matches!(d.kind, DomainKind::Microvm(_)) {
                r.at(sp, format!("domain {name:?}: realtime: deadline is for container domains; a microVM's vCPU threads take fifo or rr"));
            } else if host.cpuset_v1 && !all {
                r.at(sp, format!("domain {name:?}: realtime: deadline on cpus {} needs them as a root domain of their own, which this host's cgroup v1 cpuset makes only when the whole host stops load balancing: use fifo or rr here (or cgroup v2)", cpu_list_string(&mine)));
            } else if !host.exclusive_cpus && !all {
                r.at(sp, format!("domain {name:?}: realtime: deadline on cpus {} needs them as a root domain of their own, an isolated cpuset partition, which this kernel cannot make apart from its parent (Linux 6.7 and later): use fifo or rr here", cpu_list_string(&mine)));
            }
        }
        if let DomainKind::Microvm(vm) = &d.kind {
            if usize::from(vm.vcpus) != mine.len() {
                r.at(
                    cpus_span(i),
                    format!(
                        "domain {name:?}: a realtime microVM runs one vCPU on each core it owns: cpus {} {} for vcpus = {}",
                        cpu_list_string(&mine),
                        if mine.len() == 1 { "is one core" } else { "are more cores" },
                        vm.vcpus
                    ),
                );
            }
        }
        owned.extend(mine.iter().map(|&c| (c, i)));
        if let (RtPolicy::Fifo { budget, .. } | RtPolicy::Rr { budget, .. }, Some(cap)) =
            (rt, capacity)
        {
            share += budget.millionths();
            if share > cap {
                let sp = p.domains[i]
                    .realtime
                    .as_ref()
                    .map_or(p.domains[i].name.span(), |v| v.span());
                r.at(
                    sp,
                    format!(
                        "domain {name:?}: realtime: the budgets come to {:.1}% of a CPU's time, more than the {:.1}% this host grants (kernel.sched_rt_runtime_us / sched_rt_period_us)",
                        share as f64 / 1e4,
                        cap as f64 / 1e4
                    ),
                );
            }
        }
    }
    if owned.is_empty() {
        return;
    }
    let owned: Vec<u32> = owned.iter().map(|(c, _)| *c).collect();
    let rest: Option<Vec<u32>> = host
        .cpus
        .as_ref()
        .map(|all| all.iter().copied().filter(|c| !owned.contains(c)).collect());
    if let (Some(rest), Some(all)) = (&rest, &host.cpus) {
        if rest.is_empty() {
            let last = (0..domains.len())
                .rev()
                .find(|&i| domains[i].realtime.is_some())
                .unwrap_or(0);
            r.at(
                cpus_span(last),
                format!(
                    "the realtime domains own every CPU of this host ({}): leave one to the other domains",
                    cpu_list_string(all)
                ),
            );
            return;
        }
    }
    for (i, d) in domains.iter_mut().enumerate() {
        if d.realtime.is_some() {
            continue;
        }
        match &d.cpus {
            Some(c) => {
                let theirs: Vec<u32> = cpu_list(c)
                    .into_iter()
                    .filter(|c| owned.contains(c))
                    .collect();
                if !theirs.is_empty() {
                    r.at(
                        cpus_span(i),
                        format!(
                            "domain {:?}: cpus {} are owned by realtime domains",
                            d.name,
                            cpu_list_string(&theirs)
                        ),
                    );
                }
            }
            None => {
                if let Some(rest) = &rest {
                    d.cpus = Some(cpu_list_string(rest));
                }
            }
        }
    }
}

/// The longest domain name: it becomes a hostname (63 at most), part of a cgroup's and a
/// container's name, and of the sockets' paths (108 bytes at most, the state directory's
/// with it).
pub const MAX_NAME: usize = 32;

/// The most domains one `[[domain]]` may stand for.
pub const MAX_REPLICAS: i64 = 4096;

/// Each replicated template's name and the names of its replicas.
pub(super) type Replicas = BTreeMap<String, Vec<String>>;

/// `replicas = N`: an entry stands for N alike domains NAME-1 ... NAME-N (a common domain
/// only: a trusted or a realtime one is one of a kind), each with the entry's settings. The
/// domains with the replicas in place of their entries, and which entry became which names.
/// `names` loses the templates' names and gains the replicas'.
pub(super) fn replicas(
    r: &mut Report,
    raw: &[raw::Domain],
    domains: Vec<Domain>,
    names: &mut HashSet<String>,
) -> (Vec<Domain>, Replicas) {
    let mut out = Vec::with_capacity(domains.len());
    let mut templates = Replicas::new();
    for (rd, d) in raw.iter().zip(domains) {
        let Some(n) = &rd.replicas else {
            out.push(d);
            continue;
        };
        let name = &d.name;
        let count = *n.get_ref();
        if !(1..=MAX_REPLICAS).contains(&count) {
            r.at(
                n.span(),
                format!("domain {name:?}: replicas {count} is outside 1..{MAX_REPLICAS}"),
            );
            // Kept as one domain, so that nothing else is refused for its sake.
            out.push(d);
            continue;
        }
        if d.role != Role::Common {
            r.at(
                n.span(),
                format!(
                    "domain {name:?}: only a common domain can have replicas (a {} one is one of a kind)",
                    d.role.name()
                ),
            );
            // Kept as one domain, so that nothing else is refused for its sake.
            out.push(d);
            continue;
        }
        // Alike domains may share nothing writable: each gets its own private layer on the
        // shared base, a copy-on-write layer over a shared disk, never one root or disk.
        if let Some(root) = &rd.rootfs {
            r.at(
                root.span(),
                format!("domain {name:?}: replicas run on the shared base (each with a private layer), not on one rootfs"),
            );
            out.push(d);
            continue;
        }
        if let Some(disk) = d
            .vm()
            .and_then(|vm| vm.disks.iter().find(|(_, m)| *m == DiskMode::ReadWrite))
        {
            let sp = rd.disks.as_ref().map_or(n.span(), |v| v.span());
            r.at(
                sp,
                format!(
                    "domain {name:?}: replicas cannot share the writable disk {} (give it as PATH,ro or PATH,cow)",
                    disk.0.display()
                ),
            );
            out.push(d);
            continue;
        }
        let longest = name.len() + 1 + count.to_string().len();
        if longest > MAX_NAME {
            r.at(
                rd.name.span(),
                format!("domain {name:?}: its replicas' names ({name}-{count}) would be longer than {MAX_NAME} characters"),
            );
            // Kept as one domain, so that nothing else is refused for its sake.
            out.push(d);
            continue;
        }
        names.remove(name);
        let mut made = Vec::with_capacity(count as usize);
        for i in 1..=count {
            let mut one = d.clone();
            one.name = format!("{name}-{i}");
            if !names.insert(one.name.clone()) {
                r.at(
                    rd.name.span(),
                    format!(
                        "domain {:?} (a replica of {name:?}) is defined twice",
                        one.name
                    ),
                );
            }
            made.push(one.name.clone());
            out.push(one);
        }
        templates.insert(name.clone(), made);
    }
    (out, templates)
}

/// A domain's name: its alphabet, its length, and only once in the profile.
fn name_of(r: &mut Report, d: &raw::Domain, names: &mut HashSet<String>) {
    let name = d.name.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        r.at(
            d.name.span(),
            format!("domain name {name:?}: use letters, digits, - and _"),
        );
    } else if name.len() > MAX_NAME {
        // It names the domain's hostname, cgroup, container and socket paths.
        r.at(
            d.name.span(),
            format!(
                "domain name {:?}...: at most {MAX_NAME} characters",
                &name[..MAX_NAME]
            ),
        );
    }
    if !names.insert(name.clone()) {
        r.at(d.name.span(), format!("domain {name:?} is defined twice"));
    }
}

/// A microvm domain: a kernel to boot (no command), its vCPUs and disks.
fn microvm(r: &mut Report, d: &raw::Domain, dir: &Path) -> DomainKind {
    let name = d.name.get_ref();
    if let Some(c) = &d.command {
        r.at(c.span(), format!("domain {name:?}: a microvm domain boots its kernel: no command (put what the guest runs in its initrd or cmdline)"));
    }
    if let Some(dev) = d.devices.exclusive.first() {
        r.at(
            dev.span(),
            format!("domain {name:?}: a microvm domain cannot own exclusive devices yet"),
        );
    }
    if let Some(v) = &d.vcpus {
        if !(1..=32).contains(v.get_ref()) {
            r.at(
                v.span(),
                format!("domain {name:?}: vcpus {} is outside 1..32", v.get_ref()),
            );
        }
    }
    let mut disks = Vec::new();
    for disk in d.disks.iter().flat_map(|v| v.get_ref()) {
        match disk_of(disk) {
            Some((path, mode)) => disks.push((dir.join(path), mode)),
            None => {
                let sp = d.disks.as_ref().map_or(0..0, |v| v.span());
                r.at(
                    sp,
                    format!("domain {name:?}: disk {disk:?}: PATH, PATH,ro or PATH,cow"),
                );
            }
        }
    }
    let Some(k) = &d.kernel else {
        r.at(
            d.name.span(),
            format!("domain {name:?}: a microvm domain needs a kernel"),
        );
        // Checked on; the profile is refused.
        return DomainKind::Container {
            command: Vec::new(),
        };
    };
    DomainKind::Microvm(VmSpec {
        kernel: dir.join(k.get_ref()),
        initrd: d.initrd.as_ref().map(|i| dir.join(i.get_ref())),
        cmdline: d.cmdline.as_ref().map(|c| c.get_ref().clone()),
        vcpus: d.vcpus.as_ref().map_or(1, |v| *v.get_ref()),
        disks,
        merge: d.merge.as_ref().is_some_and(|m| *m.get_ref()),
        balloon: d.balloon.as_ref().is_some_and(|m| *m.get_ref()),
    })
}

/// `PATH`, `PATH,rw`, `PATH,ro` or `PATH,cow`.
fn disk_of(disk: &str) -> Option<(&str, DiskMode)> {
    Some(match disk.rsplit_once(',') {
        None => (disk, DiskMode::ReadWrite),
        Some((p, "rw")) => (p, DiskMode::ReadWrite),
        Some((p, "ro")) => (p, DiskMode::ReadOnly),
        Some((p, "cow")) => (p, DiskMode::CopyOnWrite),
        Some(_) => return None,
    })
}

/// A container domain: a command, none of a microVM's fields.
fn container(r: &mut Report, d: &raw::Domain) -> DomainKind {
    let name = d.name.get_ref();
    for (field, span) in [
        ("kernel", d.kernel.as_ref().map(|x| x.span())),
        ("initrd", d.initrd.as_ref().map(|x| x.span())),
        ("cmdline", d.cmdline.as_ref().map(|x| x.span())),
        ("vcpus", d.vcpus.as_ref().map(|x| x.span())),
        ("disks", d.disks.as_ref().map(|x| x.span())),
        ("merge", d.merge.as_ref().map(|x| x.span())),
        ("balloon", d.balloon.as_ref().map(|x| x.span())),
    ] {
        if let Some(sp) = span {
            r.at(
                sp,
                format!("domain {name:?}: {field} is for microvm domains"),
            );
        }
    }
    match &d.command {
        Some(c) if c.get_ref().is_empty() => r.at(
            c.span(),
            format!("domain {name:?}: command must not be empty"),
        ),
        None => r.at(
            d.name.span(),
            format!("domain {name:?}: command is missing"),
        ),
        Some(_) => {}
    }
    DomainKind::Container {
        command: d
            .command
            .as_ref()
            .map(|c| c.get_ref().clone())
            .unwrap_or_default(),
    }
}

/// The cores a domain may run on; a realtime domain must name its own.
fn cpus(r: &mut Report, d: &raw::Domain) {
    let name = d.name.get_ref();
    if let Some(c) = &d.cpus {
        if !is_cpu_list(c.get_ref()) {
            r.at(
                c.span(),
                format!(
                    "domain {name:?}: cpus {:?} is not a list like \"0-1,3\"",
                    c.get_ref()
                ),
            );
        }
    } else if d.role == Role::Realtime {
        r.at(
            d.name.span(),
            format!("domain {name:?}: a realtime domain needs its own cpus"),
        );
    }
}

/// A domain's memory limit, at least 4 MiB.
fn memory(r: &mut Report, d: &raw::Domain) -> Option<u64> {
    let name = d.name.get_ref();
    let m = d.memory.as_ref()?;
    match parse_size(m.get_ref()) {
        Some(b) if b >= 4 << 20 => Some(b),
        Some(_) => {
            r.at(
                m.span(),
                format!("domain {name:?}: memory {:?} is below 4M", m.get_ref()),
            );
            None
        }
        None => {
            r.at(
                m.span(),
                format!(
                    "domain {name:?}: memory {:?} is not a size like 64M",
                    m.get_ref()
                ),
            );
            None
        }
    }
}

/// A domain's devices: known classes, passthrough nodes under /dev, and no exclusive device
/// for a realtime domain (it never holds the foreground).
fn devices(r: &mut Report, d: &raw::Domain) {
    let name = d.name.get_ref();
    for (list, known, what) in [
        (&d.devices.exclusive, &EXCLUSIVE_DEVICES[..], "an exclusive"),
        (&d.devices.shared, &SHARED_DEVICES[..], "a shared"),
    ] {
        for dev in list {
            if !known.contains(&dev.get_ref().as_str()) {
                r.at(
                    dev.span(),
                    format!(
                        "domain {name:?}: {:?} is not {what} device ({})",
                        dev.get_ref(),
                        known.join(", ")
                    ),
                );
            }
        }
    }
    for dev in &d.devices.passthrough {
        if !is_dev_path(Path::new(dev.get_ref())) {
            r.at(
                dev.span(),
                format!(
                    "domain {name:?}: passthrough {:?} is not a path under /dev",
                    dev.get_ref()
                ),
            );
        }
    }
    if d.role == Role::Realtime && !d.devices.exclusive.is_empty() {
        r.at(d.devices.exclusive[0].span(), format!("domain {name:?}: a realtime domain never holds the foreground, so it cannot own exclusive devices"));
    }
}

/// The profile has domains, and a shared base for those without a root of their own.
pub(super) fn base(r: &mut Report, p: &raw::Profile) {
    if p.domains.is_empty() {
        r.at(p.name.span(), "the profile has no [[domain]]");
    }
    if p.base.is_none() && p.domains.iter().any(|d| d.rootfs.is_none()) {
        r.at(
            p.name.span(),
            "a domain without rootfs needs the profile's shared base",
        );
    }
}

/// What `[foreground]` sets.
pub(super) struct Foreground {
    pub initial: Option<String>,
    pub background: BackgroundMode,
    pub background_cpu_weight: u32,
}

/// `[foreground]`: an initial domain that may hold the foreground; without the section, no
/// domain may own exclusive devices.
pub(super) fn foreground(
    r: &mut Report,
    p: &raw::Profile,
    domains: &[Domain],
    replicas: &Replicas,
) -> Foreground {
    let mut out = Foreground {
        initial: None,
        background: BackgroundMode::default(),
        background_cpu_weight: 10,
    };
    let Some(f) = &p.foreground else {
        if domains.iter().any(|d| !d.exclusive_devices.is_empty()) {
            r.at(
                p.name.span(),
                "exclusive devices need a [foreground] section naming the initial foreground domain",
            );
        }
        return out;
    };
    match domains.iter().find(|d| d.name == *f.initial.get_ref()) {
        None => r.at(
            f.initial.span(),
            match replicas.get(f.initial.get_ref()) {
                Some(names) => format!(
                    "foreground.initial: {:?} stands for {} domains: name one ({}, ...)",
                    f.initial.get_ref(),
                    names.len(),
                    names[0]
                ),
                None => format!("foreground.initial: no domain {:?}", f.initial.get_ref()),
            },
        ),
        Some(d) if d.role == Role::Realtime => r.at(
            f.initial.span(),
            format!(
                "foreground.initial: {:?} is a realtime domain and cannot be in the foreground",
                d.name
            ),
        ),
        Some(_) => out.initial = Some(f.initial.get_ref().clone()),
    }
    out.background = f.background;
    if let Some(w) = &f.background_cpu_weight {
        weight(r, w, "foreground.background_cpu_weight");
        out.background_cpu_weight = *w.get_ref();
    }
    out
}

/// `[scheduler]`: a known policy, a period and residency as durations, shares within range.
/// `[memory]`: a pressure in 0..=100 percent (0: the background is always shrunk) and a
/// share in (0, 1].
pub(super) fn memory_policy(
    r: &mut Report,
    m: Option<&Spanned<raw::Memory>>,
) -> Option<MemoryPolicy> {
    let m = m?.get_ref();
    let pressure = *m.pressure.get_ref();
    let share = m.background_share.as_ref().map_or(0.5, |s| *s.get_ref());
    let mut ok = true;
    if !(0.0..=100.0).contains(&pressure) {
        r.at(
            m.pressure.span(),
            format!("memory.pressure: {pressure} is not a percentage (0 to 100)"),
        );
        ok = false;
    }
    if !(share > 0.0 && share <= 1.0) {
        let span = m.background_share.as_ref().map_or(0..0, |s| s.span());
        r.at(
            span,
            format!("memory.background_share: {share} is not a share (more than 0, at most 1)"),
        );
        ok = false;
    }
    ok.then_some(MemoryPolicy {
        pressure_pct: pressure,
        background_share: share,
    })
}

pub(super) fn scheduler(r: &mut Report, s: Option<&Spanned<raw::Scheduler>>) -> SchedParams {
    let mut out = SchedParams::default();
    let Some(s) = s else {
        return out;
    };
    let at = s.span();
    let s = s.get_ref();
    if let Some(p) = &s.policy {
        match SchedPolicy::parse(p.get_ref()) {
            Some(v) => out.policy = v,
            None => r.at(
                p.span(),
                format!(
                    "scheduler.policy: {:?} is not one of balance, power, fixed",
                    p.get_ref()
                ),
            ),
        }
    }
    for (name, v, field) in [
        ("period", &s.period, &mut out.period_ms),
        ("min_residency", &s.min_residency, &mut out.min_residency_ms),
    ] {
        if let Some(v) = v {
            match parse_duration(v.get_ref()) {
                Some(ns) => *field = ns / 1_000_000,
                None => r.at(
                    v.span(),
                    format!(
                        "scheduler.{name}: {:?} is not a duration like 500ms or 2s",
                        v.get_ref()
                    ),
                ),
            }
        }
    }
    for (v, field) in [
        (&s.spread, &mut out.spread),
        (&s.threshold, &mut out.threshold),
        (&s.margin, &mut out.margin),
    ] {
        if let Some(v) = v {
            *field = *v.get_ref();
        }
    }
    // Each knob out of range said at its own place.
    let spans = [
        ("period", s.period.as_ref().map(|v| v.span())),
        ("spread", s.spread.as_ref().map(|v| v.span())),
        ("threshold", s.threshold.as_ref().map(|v| v.span())),
        ("margin", s.margin.as_ref().map(|v| v.span())),
        ("min_residency", s.min_residency.as_ref().map(|v| v.span())),
    ];
    for p in out.problems() {
        let span = spans
            .iter()
            .find(|(k, _)| p.starts_with(&format!("scheduler.{k}:")))
            .and_then(|(_, sp)| sp.clone())
            .unwrap_or(at.clone());
        r.at(span, p);
    }
    out
}

/// `[[allow]]`: rules between two known, different domains, each once, with a channel name
/// and a buffer size a channel can have.
/// A rule naming a replicated entry holds for each of its replicas (one end only: between
/// two replicated entries, name a replica on one side).
pub(super) fn policy(
    r: &mut Report,
    allow: &[raw::Allow],
    names: &HashSet<String>,
    replicas: &Replicas,
) -> Policy {
    let mut rules = Vec::new();
    let mut seen = HashSet::new();
    let mut expanded = HashSet::new();
    for a in allow {
        for end in [&a.from, &a.to] {
            if !names.contains(end.get_ref()) && !replicas.contains_key(end.get_ref()) {
                r.at(end.span(), format!("allow: no domain {:?}", end.get_ref()));
            }
        }
        if replicas.contains_key(a.from.get_ref()) && replicas.contains_key(a.to.get_ref()) {
            r.at(
                a.to.span(),
                format!(
                    "allow: {:?} and {:?} both stand for replicas: name one replica on one side",
                    a.from.get_ref(),
                    a.to.get_ref()
                ),
            );
        }
        if a.from.get_ref() == a.to.get_ref() {
            r.at(
                a.to.span(),
                format!("allow: a channel from {:?} to itself", a.to.get_ref()),
            );
        }
        let ch = a.channel.get_ref();
        if ch.is_empty()
            || !ch
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            r.at(
                a.channel.span(),
                format!("allow: channel name {ch:?}: use letters, digits, - _ ."),
            );
        }
        let buffer = match parse_size(a.buffer.get_ref()) {
            Some(b) if b.is_power_of_two() && (4096..=64 << 20).contains(&b) => b,
            _ => {
                r.at(
                    a.buffer.span(),
                    format!(
                        "allow: buffer {:?} must be a power of two from 4K to 64M",
                        a.buffer.get_ref()
                    ),
                );
                0
            }
        };
        let twice = !seen.insert((a.from.get_ref(), a.to.get_ref(), ch));
        if twice {
            r.at(
                a.channel.span(),
                format!(
                    "allow: channel {ch:?} from {:?} to {:?} is allowed twice",
                    a.from.get_ref(),
                    a.to.get_ref()
                ),
            );
        }
        let each = |end: &String| {
            replicas
                .get(end)
                .cloned()
                .unwrap_or_else(|| vec![end.clone()])
        };
        for from in each(a.from.get_ref()) {
            for to in each(a.to.get_ref()) {
                // "app" to "app-2" holds for every replica but app-2 itself.
                if from == to {
                    continue;
                }
                if !expanded.insert((from.clone(), to.clone(), ch.clone())) && !twice {
                    r.at(
                        a.channel.span(),
                        format!("allow: channel {ch:?} from {from:?} to {to:?} is allowed twice (once through a replicated entry)"),
                    );
                }
                rules.push(Rule {
                    from: from.clone(),
                    to,
                    channel: ch.clone(),
                    buffer,
                });
            }
        }
    }
    Policy::new(rules)
}

/// `[device_nodes]`: a host node under /dev for a device class that has one; the others keep
/// a phone's usual node.
pub(super) fn device_nodes(
    r: &mut Report,
    nodes: &BTreeMap<Spanned<String>, Spanned<String>>,
) -> BTreeMap<String, PathBuf> {
    let mut out: BTreeMap<String, PathBuf> = DEFAULT_DEVICE_NODES
        .iter()
        .map(|(c, p)| (c.to_string(), PathBuf::from(p)))
        .collect();
    let mut entries: Vec<_> = nodes.iter().collect();
    entries.sort_by_key(|(c, _)| c.span().start);
    for (class, node) in entries {
        let c = class.get_ref();
        if c == "network"
            || !(EXCLUSIVE_DEVICES.contains(&c.as_str()) || SHARED_DEVICES.contains(&c.as_str()))
        {
            r.at(
                class.span(),
                format!("device_nodes: {c:?} is not a device class with a node (display, input, camera, audio)"),
            );
            continue;
        }
        let p = Path::new(node.get_ref());
        if !is_dev_path(p) {
            r.at(
                node.span(),
                format!(
                    "device_nodes: {:?} is not a path under /dev",
                    node.get_ref()
                ),
            );
            continue;
        }
        out.insert(c.clone(), p.to_path_buf());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run one check on a one-domain profile's domain; its errors.
    fn domain_errors(fields: &str) -> (Vec<String>, Domain) {
        let text = format!("name = \"t\"\n[[domain]]\nname = \"a\"\n{fields}\n");
        let mut r = Report::new("p.toml", &text);
        let raw = syntax(&mut r, &text).expect("TOML");
        let d = domain(
            &mut r,
            &raw.domains[0],
            Path::new("/x"),
            &mut HashSet::new(),
        );
        (r.errors, d)
    }

    #[test]
    fn a_container_domain_needs_a_command_and_no_vm_fields() {
        let (e, d) = domain_errors("role = \"common\"\ncommand = [\"/bin/sh\"]");
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(d.command(), ["/bin/sh"]);
        assert_eq!(d.backend(), BackendKind::Container);
        let (e, _) = domain_errors("role = \"common\"\nkernel = \"k\"\nvcpus = 2");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("p.toml:5:") && e[0].contains("kernel is for microvm"));
        assert!(e[1].contains("vcpus is for microvm"), "{e:?}");
        assert!(e[2].contains("command is missing"), "{e:?}");
    }

    #[test]
    fn merging_is_a_microvm_domains_choice() {
        let (e, d) =
            domain_errors("role = \"common\"\nbackend = \"microvm\"\nkernel = \"k\"\nmerge = true");
        assert!(e.is_empty(), "{e:?}");
        assert!(d.vm().unwrap().merge);
        let (e, d) = domain_errors("role = \"common\"\nbackend = \"microvm\"\nkernel = \"k\"");
        assert!(e.is_empty() && !d.vm().unwrap().merge, "{e:?}");
        let (e, _) = domain_errors("role = \"common\"\ncommand = [\"x\"]\nmerge = true");
        assert_eq!(
            e,
            ["p.toml:6:9: domain \"a\": merge is for microvm domains"]
        );
    }

    #[test]
    fn a_balloon_is_a_microvm_domains_choice() {
        let (e, d) = domain_errors(
            "role = \"common\"\nbackend = \"microvm\"\nkernel = \"k\"\nballoon = true",
        );
        assert!(e.is_empty() && d.vm().unwrap().balloon, "{e:?}");
        let (e, _) = domain_errors("role = \"common\"\ncommand = [\"x\"]\nballoon = true");
        assert_eq!(
            e,
            ["p.toml:6:11: domain \"a\": balloon is for microvm domains"]
        );
    }

    #[test]
    fn a_microvm_domain_needs_a_kernel_and_no_command() {
        let (e, d) = domain_errors(
            "role = \"common\"\nbackend = \"microvm\"\nkernel = \"k\"\ndisks = [\"a.img,cow\", \"b.img\"]",
        );
        assert!(e.is_empty(), "{e:?}");
        let vm = d.vm().unwrap();
        assert_eq!(vm.kernel, PathBuf::from("/x/k"));
        assert_eq!(vm.vcpus, 1);
        assert_eq!(
            vm.disks,
            [
                (PathBuf::from("/x/a.img"), DiskMode::CopyOnWrite),
                (PathBuf::from("/x/b.img"), DiskMode::ReadWrite)
            ]
        );
        assert!(d.command().is_empty());
        let (e, _) = domain_errors(
            "role = \"common\"\nbackend = \"microvm\"\ncommand = [\"x\"]\nvcpus = 40\ndisks = [\"a,rx\"]",
        );
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].contains("no command"), "{e:?}");
        assert!(e[1].contains("vcpus 40 is outside 1..32"), "{e:?}");
        assert!(e[2].contains("PATH,ro or PATH,cow"), "{e:?}");
        assert!(e[3].contains("needs a kernel"), "{e:?}");
    }

    #[test]
    fn limits_are_checked_each_on_its_own() {
        let (e, d) = domain_errors(
            "role = \"realtime\"\ncommand = [\"x\"]\ncpu_weight = 0\nmemory = \"1M\"\npids = 0",
        );
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].contains("needs its own cpus"), "{e:?}");
        assert!(e[1].contains("cpu_weight 0 is outside 1..10000"), "{e:?}");
        assert!(e[2].contains("below 4M"), "{e:?}");
        assert!(e[3].contains("pids must be at least 1"), "{e:?}");
        assert_eq!(d.memory_bytes, None);
        let (e, _) = domain_errors(
            "role = \"common\"\ncommand = [\"x\"]\ncpus = \"2-1\"\nmemory = \"lots\"",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("not a list like"), "{e:?}");
        assert!(e[1].contains("not a size like 64M"), "{e:?}");
    }

    #[test]
    fn devices_are_known_classes_and_paths_under_dev() {
        let (e, _) = domain_errors(
            "role = \"realtime\"\ncpus = \"1\"\ncommand = [\"x\"]\ndevices.exclusive = [\"display\"]\ndevices.shared = [\"printer\"]\ndevices.passthrough = [\"/dev/../etc/passwd\"]",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("\"printer\" is not a shared device"), "{e:?}");
        assert!(e[1].contains("not a path under /dev"), "{e:?}");
        assert!(e[2].contains("cannot own exclusive devices"), "{e:?}");
    }

    #[test]
    fn cpu_lists() {
        for ok in ["0", "0-1", "0-1,3", "2,4-7"] {
            assert!(is_cpu_list(ok), "{ok}");
        }
        for bad in ["", "x", "1-0", "1,", "-1", "0--1"] {
            assert!(!is_cpu_list(bad), "{bad}");
        }
    }

    const TWO: &str = "name = \"t\"\nbase = \"b\"\n";

    fn rt_profile(extra: &str, host: &Host) -> Result<super::super::Profile, Vec<String>> {
        let text = format!(
            "{TWO}[[domain]]\nname = \"modem\"\nrole = \"realtime\"\ncpus = \"1\"\ncommand = [\"x\"]\nrealtime = {{ policy = \"fifo\", priority = 50, budget = \"100ms/1s\" }}\n[[domain]]\nname = \"apps\"\nrole = \"common\"\ncommand = [\"x\"]\n{extra}"
        );
        super::super::parse_on(&text, "p.toml", Path::new("/x"), host).map_err(|e| e.0)
    }

    fn two_cpus() -> Host {
        Host {
            cpus: Some(vec![0, 1]),
            ..Host::default()
        }
    }

    #[test]
    fn a_realtime_domain_owns_its_cores_and_the_others_keep_off_them() {
        let p = rt_profile("", &two_cpus()).unwrap();
        let modem = p.domain("modem").unwrap();
        assert_eq!(
            modem.realtime,
            Some(RtPolicy::Fifo {
                priority: 50,
                budget: Budget {
                    runtime_us: 100_000,
                    period_us: 1_000_000
                }
            })
        );
        // The others are placed on the cores no realtime domain owns.
        assert_eq!(p.domain("apps").unwrap().cpus.as_deref(), Some("0"));
        // Without the host's CPUs, nothing is placed.
        let p = rt_profile("", &Host::default()).unwrap();
        assert_eq!(p.domain("apps").unwrap().cpus, None);
    }

    #[test]
    fn impossible_realtime_requests_are_one_line_each() {
        let bad = |extra: &str, host: &Host, want: &str| {
            let e = rt_profile(extra, host).unwrap_err();
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(e[0].contains(want), "{extra}: {e:?}");
            assert!(e[0].starts_with("p.toml:"), "{e:?}");
        };
        // A second realtime domain on the same core.
        bad(
            "[[domain]]\nname = \"voice\"\nrole = \"realtime\"\ncpus = \"1\"\ncommand = [\"x\"]\nrealtime = { policy = \"rr\", priority = 5, budget = \"10ms/1s\" }\n",
            &two_cpus(),
            "cpu 1 is realtime domain \"modem\"'s",
        );
        // Budgets beyond what the host grants.
        bad(
            "[[domain]]\nname = \"voice\"\nrole = \"realtime\"\ncpus = \"0\"\ncommand = [\"x\"]\nrealtime = { policy = \"fifo\", priority = 5, budget = \"900ms/1s\" }\n",
            &Host::default(),
            "more than the 95.0% this host grants",
        );
        // No core left to the others.
        bad(
            "[[domain]]\nname = \"voice\"\nrole = \"realtime\"\ncpus = \"0\"\ncommand = [\"x\"]\nrealtime = { policy = \"fifo\", priority = 5, budget = \"10ms/1s\" }\n",
            &two_cpus(),
            "own every CPU of this host",
        );
        // Another domain on a realtime core; a core the host does not have.
        bad(
            "cpus = \"0-1\"\n",
            &two_cpus(),
            "cpus 1 are owned by realtime domains",
        );
        let e = rt_profile(
            "",
            &Host {
                cpus: Some(vec![0]),
                ..Host::default()
            },
        )
        .unwrap_err();
        assert!(
            e.iter().any(|l| l.contains("not online on this host")),
            "{e:?}"
        );
    }

    #[test]
    fn deadline_needs_cores_the_kernel_can_make_a_root_domain() {
        let text = |cpus: &str| {
            format!(
                "{TWO}[[domain]]\nname = \"dl\"\nrole = \"realtime\"\ncpus = \"{cpus}\"\ncommand = [\"x\"]\nrealtime = {{ policy = \"deadline\", runtime = \"1ms\", period = \"10ms\" }}\n"
            )
        };
        let v1 = Host {
            cpuset_v1: true,
            cpus: Some(vec![0, 1]),
            ..Host::default()
        };
        let e = super::super::parse_on(&text("1"), "p.toml", Path::new("/x"), &v1).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e:?}");
        assert!(
            e.0[0].contains("deadline on cpus 1 needs them as a root domain")
                && e.0[0].starts_with("p.toml:"),
            "{e:?}"
        );
        // On cgroup v2 the cores become an isolated partition.
        assert!(super::super::parse_on(&text("1"), "p.toml", Path::new("/x"), &two_cpus()).is_ok());
    }

    #[test]
    fn realtime_scheduling_is_checked_field_by_field() {
        let one = |rt: &str| {
            let text = format!(
                "{TWO}[[domain]]\nname = \"m\"\nrole = \"realtime\"\ncpus = \"1\"\ncommand = [\"x\"]\nrealtime = {rt}\n"
            );
            super::super::parse(&text, "p.toml", Path::new("/x")).map(|p| p.domains[0].realtime)
        };
        assert_eq!(
            one("{ policy = \"deadline\", runtime = \"2ms\", period = \"10ms\" }").unwrap(),
            Some(RtPolicy::Deadline {
                runtime_ns: 2_000_000,
                deadline_ns: 10_000_000,
                period_ns: 10_000_000
            })
        );
        for (rt, want) in [
            ("{ policy = \"fifo\", budget = \"1ms/1s\" }", "needs a priority"),
            ("{ policy = \"fifo\", priority = 0, budget = \"1ms/1s\" }", "outside 1..99"),
            ("{ policy = \"rr\", priority = 5 }", "needs a budget"),
            ("{ policy = \"rr\", priority = 5, budget = \"2s/1s\" }", "RUNTIME/PERIOD"),
            ("{ policy = \"fifo\", priority = 5, budget = \"1ms/1s\", period = \"1s\" }", "is for policy \"deadline\""),
            ("{ policy = \"deadline\", runtime = \"2ms\" }", "needs a runtime and a period"),
            ("{ policy = \"deadline\", runtime = \"5ms\", deadline = \"2ms\", period = \"10ms\" }", "runtime <= deadline <= period"),
            ("{ policy = \"deadline\", runtime = \"2ms\", period = \"10ms\", priority = 3 }", "priority is for fifo and rr"),
            ("{ policy = \"deadline\", runtime = \"2 weeks\", period = \"10ms\" }", "not a duration"),
            ("{ policy = \"idle\" }", "not fifo, rr or deadline"),
        ] {
            let e = one(rt).unwrap_err().0;
            assert_eq!(e.len(), 1, "{rt}: {e:?}");
            assert!(e[0].contains(want), "{rt}: {e:?}");
        }
        // Only a realtime domain is scheduled in real time.
        let text = format!("{TWO}[[domain]]\nname = \"a\"\nrole = \"common\"\ncommand = [\"x\"]\nrealtime = {{ policy = \"fifo\", priority = 1, budget = \"1ms/1s\" }}\n");
        let e = super::super::parse(&text, "p.toml", Path::new("/x"))
            .unwrap_err()
            .0;
        assert!(e[0].contains("only a role = \"realtime\" domain"), "{e:?}");
    }

    #[test]
    fn durations_and_cpu_lists() {
        assert_eq!(parse_duration("2ms"), Some(2_000_000));
        assert_eq!(parse_duration("500us"), Some(500_000));
        assert_eq!(parse_duration("1s"), Some(1_000_000_000));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("ms"), None);
        assert_eq!(cpu_list("0-2,5,1"), [0, 1, 2, 5]);
        assert_eq!(cpu_list_string(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }
}
