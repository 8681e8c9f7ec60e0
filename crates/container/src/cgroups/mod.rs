//! cgroups v1 and v2 behind one interface.
//!
//! [`Hierarchy`] describes what this machine mounts (v1 controllers, a unified v2 tree, or the
//! hybrid of both, where v1 holds the controllers). [`plan`] turns OCI resources into the file
//! writes of either version — pure and unit-tested — and [`Cgroup`] performs them, moves
//! processes in, freezes, reads statistics and removes the directories.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;
use serde_json::{json, Value};

use crate::config_err;
use crate::error::{Context, Error, Result};
use crate::util::write_file;

pub mod devices;
pub mod exclusive;
pub mod plan;
pub mod rt;
pub mod systemd;

pub use plan::{validate, Version, Write};

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// A v1 hierarchy: its directory name, mount point, and mount options (controllers).
    V1 {
        name: String,
        mount: PathBuf,
        options: String,
    },
    /// The v2 unified hierarchy.
    Unified(PathBuf),
}

const V1_CONTROLLERS: [&str; 13] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
];

/// Read the cgroup mounts from a mountinfo text. In v2 ("unified") mode only the v2 tree is
/// returned; otherwise the v1 controller hierarchies (a hybrid's v2 tree holds no controllers
/// the runtime uses, and is left alone).
pub fn hierarchies_from_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut v1 = Vec::new();
    let mut unified = None;
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mnt = pre.split(' ').nth(4).unwrap_or("");
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("");
        let opts = post.nth(1).unwrap_or("");
        match fstype {
            "cgroup2" if mnt == "/sys/fs/cgroup" => unified = Some(PathBuf::from(mnt)),
            "cgroup" => {
                let ctrls: Vec<&str> = opts
                    .split(',')
                    .filter(|o| V1_CONTROLLERS.contains(o))
                    .collect();
                // A hierarchy seen again is the same one mounted elsewhere too (a container's
                // root with shared propagation, say, while it exists): the first is the host's.
                if ctrls.is_empty()
                    || v1.iter().any(|h| {
                        matches!(h, Hierarchy::V1 { options, .. } if *options == ctrls.join(","))
                    })
                {
                    continue;
                }
                let name = Path::new(mnt)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                v1.push(Hierarchy::V1 {
                    name,
                    mount: mnt.into(),
                    options: ctrls.join(","),
                });
            }
            _ => {}
        }
    }
    match unified {
        Some(u) => vec![Hierarchy::Unified(u)],
        None => v1,
    }
}

static CACHE: std::sync::OnceLock<Vec<Hierarchy>> = std::sync::OnceLock::new();
static CACHING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Let this process read the cgroup mount table once and keep it: for a long-running daemon,
/// under which the cgroup hierarchies do not change. Saves a mountinfo parse per operation.
pub fn cache_hierarchies() {
    CACHING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// This machine's hierarchies.
pub fn hierarchies() -> Result<Vec<Hierarchy>> {
    if CACHING.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(h) = CACHE.get() {
            return Ok(h.clone());
        }
        let h = read_hierarchies()?;
        return Ok(CACHE.get_or_init(|| h).clone());
    }
    read_hierarchies()
}

fn read_hierarchies() -> Result<Vec<Hierarchy>> {
    let text = fs::read_to_string("/proc/self/mountinfo").ctx(|| "reading /proc/self/mountinfo")?;
    let h = hierarchies_from_mountinfo(&text);
    if h.is_empty() {
        return Err(Error::Msg("no cgroup hierarchy is mounted".into()));
    }
    Ok(h)
}

/// A cgroupsPath must not climb out (`..`). Whether it is a plain path or systemd's
/// `slice:prefix:name` depends on the driver, which `create` checks.
pub fn validate_path(p: &Path) -> Result<()> {
    let s = p.to_string_lossy();
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(config_err!(
            "linux.cgroupsPath: {s:?} must not contain '..'"
        ));
    }
    Ok(())
}

/// The cgroup of one container in every hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroup {
    /// Path relative to each hierarchy's root, e.g. `/cellvisor/web`.
    pub path: PathBuf,
    pub hierarchies: Vec<Hierarchy>,
    /// Hold its cpuset's CPUs exclusively (see [`exclusive`]); only `create` reads it.
    pub exclusive: exclusive::Want,
    /// Its directories may exist already (systemd made them): `create` fills them in.
    pub adopt: bool,
}

impl Cgroup {
    pub fn new(path: &Path, hierarchies: Vec<Hierarchy>) -> Self {
        let path = Path::new("/").join(path);
        Cgroup {
            path,
            hierarchies,
            exclusive: exclusive::Want::No,
            adopt: false,
        }
    }

    /// The same cgroup, made by someone else (systemd) when `adopt`: `create` writes into the
    /// directories that are there and makes the rest.
    pub fn adopting(self, adopt: bool) -> Self {
        Cgroup { adopt, ..self }
    }

    /// The same cgroup, holding its CPUs exclusively (as `exclusive` asks) when created.
    pub fn with_exclusive(self, exclusive: exclusive::Want) -> Self {
        Cgroup { exclusive, ..self }
    }

    pub fn version(&self) -> Version {
        match self.hierarchies.first() {
            Some(Hierarchy::Unified(_)) => Version::V2,
            _ => Version::V1,
        }
    }

    fn rel(&self) -> &Path {
        self.path.strip_prefix("/").unwrap_or(&self.path)
    }

    /// The container's directory in every hierarchy, with the hierarchy's controllers.
    pub fn dirs(&self) -> Vec<(&str, PathBuf)> {
        self.hierarchies
            .iter()
            .map(|h| match h {
                Hierarchy::V1 { mount, options, .. } => (options.as_str(), mount.join(self.rel())),
                Hierarchy::Unified(m) => ("", m.join(self.rel())),
            })
            .collect()
    }

    fn dir_of(&self, controller: &str) -> Option<PathBuf> {
        self.dirs()
            .into_iter()
            .find(|(opts, _)| controller.is_empty() || opts.split(',').any(|c| c == controller))
            .map(|(_, d)| d)
    }

    /// Does the container's cgroup exist (in the first hierarchy)?
    pub fn exists(&self) -> bool {
        self.dirs().first().is_some_and(|(_, d)| d.is_dir())
    }

    /// Create the directories and apply `res`. On error, what was created is removed.
    pub fn create(&self, res: Option<&LinuxResources>) -> Result<()> {
        let r = self.try_create(res);
        if r.is_err() {
            let _ = self.remove();
            // Its ancestors may have been raised for a budget it never got written.
            let asked = res
                .and_then(|r| r.cpu().as_ref())
                .is_some_and(|c| c.realtime_runtime().is_some());
            if asked {
                self.release_rt_budget();
            }
            // Its ancestors may have been made exclusive for CPUs it never held.
            if self.exclusive != exclusive::Want::No {
                self.release_exclusive(&domain::profile::cpu_list(&cpus_of(res)));
            }
        }
        r
    }

    fn try_create(&self, res: Option<&LinuxResources>) -> Result<()> {
        let writes = match res {
            Some(r) => plan::plan(r, self.version())?,
            None => plan::default_device_writes(self.version()),
        };
        match self.version() {
            Version::V1 => {
                for h in &self.hierarchies {
                    let Hierarchy::V1 { mount, .. } = h else {
                        continue;
                    };
                    let dir = mount.join(self.rel());
                    if dir.exists() && !self.adopt {
                        return Err(Error::Msg(format!(
                            "cgroup {} already exists",
                            dir.display()
                        )));
                    }
                }
                // The cpuset hierarchy's CPUs change one container at a time: what a new
                // cpuset inherits depends on what its siblings hold exclusively.
                let cpuset = self.v1_mount("cpuset");
                let _cpuset_lock = cpuset.as_deref().map(rt::lock).transpose()?;
                for h in &self.hierarchies {
                    if let Hierarchy::V1 { mount, options, .. } = h {
                        mkdir_levels(mount, self.rel(), options.split(',').any(|c| c == "cpuset"))?;
                    }
                }
                // Held until the container's own budget is written below.
                let _rt_lock = self.grant_rt_budget(res)?;
                for w in &writes {
                    self.write_planned(w)?;
                }
                if self.exclusive != exclusive::Want::No {
                    let (Some(mount), Some(dir)) = (cpuset, self.dir_of("cpuset")) else {
                        return Err(Error::Msg(format!(
                            "{}: the cpuset controller is not mounted",
                            exclusive::ANNOTATION
                        )));
                    };
                    let r = exclusive::claim_v1(&mount, &dir);
                    self.settle(r, || exclusive::release_v1(&mount, &dir))?;
                }
            }
            Version::V2 => {
                let Some(Hierarchy::Unified(root)) = self.hierarchies.first() else {
                    unreachable!()
                };
                let dir = root.join(self.rel());
                if dir.exists() && !self.adopt {
                    return Err(Error::Msg(format!(
                        "cgroup {} already exists",
                        dir.display()
                    )));
                }
                enable_controllers(root, self.rel(), &writes)?;
                fs::create_dir_all(&dir).ctx(|| format!("creating cgroup {}", dir.display()))?;
                for w in &writes {
                    write_file(&dir.join(&w.file), &w.value)?;
                }
                if self.exclusive != exclusive::Want::No {
                    let cpus = writes
                        .iter()
                        .find(|w| w.file == "cpuset.cpus")
                        .map(|w| w.value.clone())
                        .unwrap_or_default();
                    let _lock = rt::lock(root)?;
                    let r = exclusive::claim_v2(root, &dir, &cpus);
                    self.settle(r, || {
                        let _ = fs::write(dir.join("cpuset.cpus.partition"), "member");
                        let _ = fs::write(dir.join("cpuset.cpus.exclusive"), "");
                        exclusive::release_v2(root, &dir, &domain::profile::cpu_list(&cpus))
                    })?;
                }
                // Only a cgroup2 directory takes the program (the unit tests' fake tree is not).
                if is_cgroup2(&dir) {
                    devices::attach(&dir, &plan::device_rules(res))?;
                }
            }
        }
        Ok(())
    }

    /// A claim of exclusive cores that failed: the container's error when they were required;
    /// when only preferred, what the claim did is undone (`undo`) and the container goes on
    /// with its cores alone, said on stderr.
    fn settle(&self, claim: Result<()>, undo: impl FnOnce()) -> Result<()> {
        match claim {
            Err(e) if self.exclusive == exclusive::Want::Preferred => {
                undo();
                eprintln!(
                    "cellvisor: warning: {}: not held exclusively ({e}); the cores are the container's by placement only",
                    self.path.display()
                );
                Ok(())
            }
            r => r,
        }
    }

    /// A real-time budget asked for (v1): its ancestors raised to grant it, before it is
    /// written; the hierarchy's budget lock, to hold until then.
    fn grant_rt_budget(&self, res: Option<&LinuxResources>) -> Result<Option<fs::File>> {
        let Some(cpu) = res.and_then(|r| r.cpu().as_ref()) else {
            return Ok(None);
        };
        let Some(runtime) = cpu.realtime_runtime() else {
            return Ok(None);
        };
        let (Some(mount), Some(dir)) = (self.v1_mount("cpu"), self.dir_of("cpu")) else {
            return Err(Error::Msg(
                "linux.resources.cpu.realtimeRuntime: the cpu controller is not mounted".into(),
            ));
        };
        if !dir.join("cpu.rt_runtime_us").exists() {
            return Err(Error::Msg(
                "linux.resources.cpu.realtimeRuntime: this kernel has no real-time group scheduling (no cpu.rt_runtime_us)".into(),
            ));
        }
        let period = match cpu.realtime_period() {
            Some(p) => p,
            None => fs::read_to_string(dir.join("cpu.rt_period_us"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(1_000_000),
        };
        let lock = rt::lock(&mount)?;
        rt::raise(&mount, &dir, runtime, period)?;
        Ok(Some(lock))
    }

    /// The mount point of the v1 hierarchy holding `controller`.
    fn v1_mount(&self, controller: &str) -> Option<PathBuf> {
        self.hierarchies.iter().find_map(|h| match h {
            Hierarchy::V1 { mount, options, .. } if options.split(',').any(|c| c == controller) => {
                Some(mount.clone())
            }
            _ => None,
        })
    }

    /// Change the CPU weight of a running container (v2 cpu.weight, v1 cpu.shares).
    pub fn set_cpu_weight(&self, weight: u32) -> Result<()> {
        match self.version() {
            Version::V1 => {
                let d = self
                    .dir_of("cpu")
                    .ok_or_else(|| Error::Msg("the cpu cgroup controller is not mounted".into()))?;
                write_file(
                    &d.join("cpu.shares"),
                    &plan::weight_to_shares(weight.into()).to_string(),
                )
            }
            Version::V2 => write_file(
                &self.dir_of("").unwrap_or_default().join("cpu.weight"),
                &weight.to_string(),
            ),
        }
    }

    /// Cap the memory reclaim should leave it (`None`: no cap): v1 its soft limit (global
    /// reclaim takes from groups over it first), v2 memory.high (reclaimed down to it).
    pub fn set_memory_cap(&self, cap: Option<u64>) -> Result<()> {
        match self.version() {
            Version::V1 => {
                let d = self.dir_of("memory").ok_or_else(|| {
                    Error::Msg("the memory cgroup controller is not mounted".into())
                })?;
                let v = cap.map_or("-1".to_string(), |c| c.to_string());
                write_file(&d.join("memory.soft_limit_in_bytes"), &v)
            }
            Version::V2 => {
                let v = cap.map_or("max".to_string(), |c| c.to_string());
                write_file(&self.dir_of("").unwrap_or_default().join("memory.high"), &v)
            }
        }
    }

    /// Change a live cgroup's limits to what `res` sets, as planned for a new one but for the
    /// device rules (an update leaves them as they are): each file written in the plan's
    /// order (a quota after its period, a memory limit before its swap — but for a limit
    /// raised above v1's current memory+swap limit, which has to go first).
    pub fn update(&self, res: &LinuxResources) -> Result<()> {
        let writes: Vec<plan::Write> = plan::plan(res, self.version())?
            .into_iter()
            .filter(|w| w.controller != "devices")
            .collect();
        let memsw = writes
            .iter()
            .position(|w| w.file == "memory.memsw.limit_in_bytes");
        let mut done = vec![false; writes.len()];
        for (i, w) in writes.iter().enumerate() {
            if done[i] {
                continue;
            }
            let r = self.write_planned(w);
            if let (Err(_), "memory.limit_in_bytes", Some(j)) = (&r, w.file.as_str(), memsw) {
                self.write_planned(&writes[j])?;
                done[j] = true;
                self.write_planned(w)?;
                continue;
            }
            r?;
        }
        Ok(())
    }

    /// One planned write into the live cgroup; a refused CPU said with its holder.
    fn write_planned(&self, w: &plan::Write) -> Result<()> {
        let dir = self.dir_of(w.controller).ok_or_else(|| {
            Error::Msg(format!(
                "cgroup controller {} is not mounted on this machine",
                w.controller
            ))
        })?;
        let r = write_file(&dir.join(&w.file), &w.value);
        if r.is_err() && w.file == "cpuset.cpus" {
            if let Some(why) = exclusive::explain(&dir, &w.value) {
                return Err(Error::Msg(why));
            }
        }
        r
    }

    /// Move the running cgroup to `cpus` (a list like `0-1,3`): cpuset.cpus, which the
    /// kernel applies to every task in it at once.
    pub fn set_cpus(&self, cpus: &str) -> Result<()> {
        let d = self
            .dir_of(if self.version() == Version::V1 {
                "cpuset"
            } else {
                ""
            })
            .ok_or_else(|| Error::Msg("the cpuset cgroup controller is not mounted".into()))?;
        write_file(&d.join("cpuset.cpus"), cpus)
    }

    /// Its CPU time: per CPU on v1 (cpuacct.usage_percpu), in all on v2 (cpu.stat).
    pub fn cpu_time(&self) -> Result<domain::CpuTime> {
        let read = |f: &Path| fs::read_to_string(f).ctx(|| format!("reading {}", f.display()));
        match self.version() {
            Version::V1 => {
                let d = self.dir_of("cpuacct").ok_or_else(|| {
                    Error::Msg("the cpuacct cgroup controller is not mounted".into())
                })?;
                let t = read(&d.join("cpuacct.usage_percpu"))?;
                Ok(domain::CpuTime::PerCpu(
                    t.split_whitespace()
                        .map(|x| x.parse().unwrap_or(0))
                        .collect(),
                ))
            }
            Version::V2 => {
                let f = self.dir_of("").unwrap_or_default().join("cpu.stat");
                let usec = read(&f)?
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                Ok(domain::CpuTime::Total(usec * 1000))
            }
        }
    }

    /// Allow or deny one device rule on a running container: v1 writes `devices.allow` /
    /// `devices.deny`; v2 replaces the device filter with one for the whole rule list that
    /// `v2_rules` gives (the container's rules with this change last).
    pub fn set_device(
        &self,
        rule: &plan::DevRule,
        v2_rules: impl FnOnce() -> Result<Vec<plan::DevRule>>,
    ) -> Result<()> {
        match self.version() {
            Version::V1 => {
                let d = self.dir_of("devices").ok_or_else(|| {
                    Error::Msg("the devices cgroup controller is not mounted".into())
                })?;
                let file = if rule.allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write_file(&d.join(file), &rule.to_string())
            }
            Version::V2 => devices::replace(&self.dir_of("").unwrap_or_default(), &v2_rules()?),
        }
    }

    /// Move `pid` into the container's cgroup in every hierarchy.
    pub fn add(&self, pid: i32) -> Result<()> {
        for (_, d) in self.dirs() {
            write_file(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Processes in the cgroup (host pids).
    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = self
            .dir_of(if self.version() == Version::V1 {
                "pids"
            } else {
                ""
            })
            .or_else(|| self.dirs().first().map(|d| d.1.clone()))
            .ok_or_else(|| Error::Msg("no cgroup hierarchy".into()))?;
        let text = fs::read_to_string(dir.join("cgroup.procs"))
            .ctx(|| format!("reading {}/cgroup.procs", dir.display()))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Processes in the cgroup and every cgroup below it (made inside the container, by
    /// systemd or a nested runtime), in the first hierarchy; a group removed meanwhile is
    /// skipped.
    pub fn pids_within(&self) -> Result<Vec<i32>> {
        let (_, top) = self
            .dirs()
            .into_iter()
            .next()
            .ok_or_else(|| Error::Msg("no cgroup hierarchy".into()))?;
        // Its own group must be there; one below it removed meanwhile holds nobody.
        fs::metadata(top.join("cgroup.procs"))
            .ctx(|| format!("reading {}/cgroup.procs", top.display()))?;
        Ok(tree_bottom_up(&top)
            .iter()
            .flat_map(|d| {
                let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                procs
                    .lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .collect())
    }

    /// Freeze (`true`) or thaw every process of the container, and wait until it is done.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        match self.version() {
            Version::V1 => {
                let d = self.dir_of("freezer").ok_or_else(|| {
                    Error::Msg("the freezer cgroup controller is not mounted".into())
                })?;
                let want = if frozen { "FROZEN" } else { "THAWED" };
                for _ in 0..1000 {
                    write_file(&d.join("freezer.state"), want)?;
                    let now = fs::read_to_string(d.join("freezer.state")).unwrap_or_default();
                    if now.trim() == want {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(Error::Msg(format!("cgroup did not become {want}")))
            }
            Version::V2 => {
                let d = self.dir_of("").unwrap_or_default();
                write_file(&d.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
                let want = if frozen { "frozen 1" } else { "frozen 0" };
                for _ in 0..1000 {
                    let ev = fs::read_to_string(d.join("cgroup.events")).unwrap_or_default();
                    if ev.lines().any(|l| l == want) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(Error::Msg(format!("cgroup did not reach {want}")))
            }
        }
    }

    /// Is the container frozen?
    pub fn is_frozen(&self) -> bool {
        match self.version() {
            Version::V1 => self
                .dir_of("freezer")
                .and_then(|d| fs::read_to_string(d.join("freezer.state")).ok())
                .is_some_and(|s| s.trim() == "FROZEN"),
            Version::V2 => self
                .dir_of("")
                .and_then(|d| fs::read_to_string(d.join("cgroup.freeze")).ok())
                .is_some_and(|s| s.trim() == "1"),
        }
    }

    /// Remove the container's directories. Processes still inside are killed first.
    pub fn remove(&self) -> Result<()> {
        // A real-time budget it held is given back to its ancestors once it is gone.
        let rt = match (self.version(), self.dir_of("cpu")) {
            (Version::V1, Some(dir)) => fs::read_to_string(dir.join("cpu.rt_runtime_us"))
                .ok()
                .and_then(|r| r.trim().parse::<i64>().ok())
                .filter(|&r| r != 0),
            _ => None,
        };
        // So are CPUs it held exclusively.
        let held = self
            .dir_of("cpuset")
            .map(|d| exclusive::held(&d, self.version() == Version::V2))
            .unwrap_or_default();
        let r = self.remove_dirs();
        if rt.is_some() {
            self.release_rt_budget();
        }
        if !held.is_empty() {
            self.release_exclusive(&held);
        }
        r
    }

    /// The group, which held `cpus` exclusively, is gone: its ancestors let them go.
    fn release_exclusive(&self, cpus: &[u32]) {
        let Some(dir) = self.dir_of("cpuset") else {
            return;
        };
        if dir.exists() {
            return;
        }
        match self.version() {
            Version::V1 => {
                if let Some(mount) = self.v1_mount("cpuset") {
                    let _lock = rt::lock(&mount);
                    exclusive::release_v1(&mount, &dir);
                }
            }
            Version::V2 => {
                if let Some(Hierarchy::Unified(root)) = self.hierarchies.first() {
                    let _lock = rt::lock(root);
                    exclusive::release_v2(root, &dir, cpus);
                }
            }
        }
    }

    /// The group is gone: its ancestors lowered to what their remaining children need.
    fn release_rt_budget(&self) {
        if let (Version::V1, Some(mount), Some(dir)) =
            (self.version(), self.v1_mount("cpu"), self.dir_of("cpu"))
        {
            if !dir.exists() {
                let _lock = rt::lock(&mount);
                rt::release(&mount, &dir);
            }
        }
    }

    /// Remove each directory with the groups the container made beneath it (systemd, or a
    /// runtime, running inside makes its own), deepest first.
    fn remove_dirs(&self) -> Result<()> {
        let mut last = Ok(());
        for (_, top) in self.dirs() {
            if !top.exists() {
                continue;
            }
            for d in tree_bottom_up(&top) {
                if let Err(e) = self.remove_one(&d) {
                    last = Err(e);
                    break;
                }
            }
        }
        last
    }

    /// Remove the group `d`, killing what is still in it (and thawing it) until it goes.
    fn remove_one(&self, d: &Path) -> Result<()> {
        let mut tries = 0;
        loop {
            match fs::remove_dir(d) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 200 => {
                    tries += 1;
                    if let Ok(procs) = fs::read_to_string(d.join("cgroup.procs")) {
                        for p in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(p),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                    if self.is_frozen() {
                        let _ = self.freeze(false);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e).ctx(|| format!("removing cgroup {}", d.display())),
            }
        }
    }

    /// Resource usage, in the shape of `runc events --stats` data.
    pub fn stats(&self) -> Value {
        let read = |ctrl: &str, file: &str| -> Option<String> {
            fs::read_to_string(self.dir_of(ctrl)?.join(file)).ok()
        };
        let num = |ctrl: &str, file: &str| -> Option<u64> {
            read(ctrl, file).and_then(|s| s.trim().parse().ok())
        };
        let kv = |ctrl: &str, file: &str| -> BTreeMap<String, u64> {
            read(ctrl, file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    Some((k.to_string(), v.trim().parse().ok()?))
                })
                .collect()
        };
        let pids = self.pids().map(|p| p.len()).unwrap_or(0);
        match self.version() {
            Version::V1 => {
                let cpu = kv("cpuacct", "cpuacct.stat");
                let hz = 100u64; // USER_HZ
                json!({
                    "cpu": {"usage": {
                        "total": num("cpuacct", "cpuacct.usage").unwrap_or(0),
                        "user": cpu.get("user").copied().unwrap_or(0) * 1_000_000_000 / hz,
                        "kernel": cpu.get("system").copied().unwrap_or(0) * 1_000_000_000 / hz,
                    },
                    "throttling": kv("cpu", "cpu.stat")},
                    "memory": {
                        "usage": {
                            "usage": num("memory", "memory.usage_in_bytes").unwrap_or(0),
                            "max": num("memory", "memory.max_usage_in_bytes").unwrap_or(0),
                            "limit": num("memory", "memory.limit_in_bytes").unwrap_or(0),
                            "failcnt": num("memory", "memory.failcnt").unwrap_or(0),
                        },
                        "oom_kills": kv("memory", "memory.oom_control").get("oom_kill").copied().unwrap_or(0),
                        "stats": kv("memory", "memory.stat"),
                    },
                    "pids": {"current": num("pids", "pids.current").unwrap_or(pids as u64),
                             "limit": num("pids", "pids.max").unwrap_or(0)},
                })
            }
            Version::V2 => {
                let cpu = kv("", "cpu.stat");
                let events = kv("", "memory.events");
                json!({
                    "cpu": {"usage": {
                        "total": cpu.get("usage_usec").copied().unwrap_or(0) * 1000,
                        "user": cpu.get("user_usec").copied().unwrap_or(0) * 1000,
                        "kernel": cpu.get("system_usec").copied().unwrap_or(0) * 1000,
                    }},
                    "memory": {
                        "usage": {
                            "usage": num("", "memory.current").unwrap_or(0),
                            "max": num("", "memory.peak").unwrap_or(0),
                            "limit": num("", "memory.max").unwrap_or(u64::MAX),
                        },
                        "oom_kills": events.get("oom_kill").copied().unwrap_or(0),
                        "stats": kv("", "memory.stat"),
                    },
                    "pids": {"current": num("", "pids.current").unwrap_or(pids as u64),
                             "limit": num("", "pids.max").unwrap_or(0)},
                })
            }
        }
    }
}

/// The CPUs `res` gives the cpuset (`linux.resources.cpu.cpus`), empty when none.
pub fn cpus_of(res: Option<&LinuxResources>) -> String {
    res.and_then(|r| r.cpu().as_ref())
        .and_then(|c| c.cpus().clone())
        .unwrap_or_default()
}

fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Create `rel` under a v1 hierarchy level by level; cpuset levels inherit cpus and mems from
/// their parent (a new cpuset cgroup is empty, and no process can join it until filled), but
/// the CPUs a sibling holds exclusively.
fn mkdir_levels(mount: &Path, rel: &Path, cpuset: bool) -> Result<()> {
    let mut cur = mount.to_path_buf();
    for comp in rel.components() {
        let parent = cur.clone();
        cur.push(comp);
        match fs::create_dir(&cur) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).ctx(|| format!("creating cgroup {}", cur.display())),
        }
        if cpuset {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let mine = fs::read_to_string(cur.join(f)).unwrap_or_default();
                if mine.trim().is_empty() {
                    let theirs = if f == "cpuset.cpus" {
                        exclusive::inheritable(&cur)?
                    } else {
                        fs::read_to_string(parent.join(f))
                            .unwrap_or_default()
                            .trim()
                            .to_string()
                    };
                    write_file(&cur.join(f), &theirs)?;
                }
            }
        }
    }
    Ok(())
}

/// In v2, a controller can be used in a cgroup only when every ancestor enables it for its
/// children. Enable, down to the container's parent, the controllers its limits need plus those
/// its statistics read (cpu, memory, pids, io), as far as the root offers them.
fn enable_controllers(root: &Path, rel: &Path, writes: &[Write]) -> Result<()> {
    let avail = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let needed = |c: &str| {
        ["cpu", "memory", "pids", "io"].contains(&c)
            || writes.iter().any(|w| w.file.split('.').next() == Some(c))
    };
    let want: Vec<String> = avail
        .split_whitespace()
        .filter(|c| needed(c))
        .map(|c| format!("+{c}"))
        .collect();
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, comp) in comps.iter().enumerate() {
        if !want.is_empty() {
            // Failing here (a controller busy in a "domain threaded" tree, say) only means
            // that limit cannot be applied; the write of the limit itself reports it.
            let _ = fs::write(cur.join("cgroup.subtree_control"), want.join(" "));
        }
        cur.push(comp);
        if i + 1 < comps.len() {
            match fs::create_dir(&cur) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).ctx(|| format!("creating cgroup {}", cur.display())),
            }
        }
    }
    Ok(())
}

/// `top` and every directory beneath it, children before their parents.
fn tree_bottom_up(top: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    // Every directory came after its parent: reversed, children come first.
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tree_comes_children_first() {
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("c");
        for d in ["c/a/x", "c/a/y", "c/b"] {
            fs::create_dir_all(t.path().join(d)).unwrap();
        }
        fs::write(top.join("cgroup.procs"), "").unwrap();
        let order = tree_bottom_up(&top);
        assert_eq!(order.len(), 5);
        let at = |p: &str| order.iter().position(|d| *d == t.path().join(p)).unwrap();
        assert!(at("c/a/x") < at("c/a") && at("c/a/y") < at("c/a"));
        assert!(at("c/a") < at("c") && at("c/b") < at("c"));
        assert_eq!(order.last().unwrap(), &top);
    }

    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw,relatime shared:8 - cgroup cgroup rw,cpu
27 25 0:25 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
28 25 0:26 / /sys/fs/cgroup/systemd rw,relatime shared:10 - cgroup cgroup rw,name=systemd
29 25 0:27 / /sys/fs/cgroup/unified rw,relatime shared:11 - cgroup2 cgroup2 rw
30 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct";

    #[test]
    fn hybrid_mountinfo_gives_v1_controllers() {
        let h = hierarchies_from_mountinfo(HYBRID);
        assert_eq!(h.len(), 3);
        assert_eq!(
            h[0],
            Hierarchy::V1 {
                name: "cpu".into(),
                mount: "/sys/fs/cgroup/cpu".into(),
                options: "cpu".into()
            }
        );
        assert!(matches!(&h[2], Hierarchy::V1 { options, .. } if options == "cpu,cpuacct"));
    }

    #[test]
    fn a_hierarchy_mounted_again_elsewhere_is_counted_once() {
        let again = format!(
            "{HYBRID}\n90 26 0:24 / /tmp/.tmpX/rootfs/sys/fs/cgroup/cpu rw,relatime shared:8 - cgroup cgroup rw,cpu\n"
        );
        let h = hierarchies_from_mountinfo(&again);
        assert_eq!(h, hierarchies_from_mountinfo(HYBRID));
    }

    #[test]
    fn unified_mountinfo_gives_v2() {
        let h = hierarchies_from_mountinfo(
            "25 1 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate",
        );
        assert_eq!(h, vec![Hierarchy::Unified("/sys/fs/cgroup".into())]);
    }

    #[test]
    fn climbing_paths_are_refused() {
        assert!(validate_path(Path::new("/a/../b")).is_err());
        assert!(validate_path(Path::new("/cellvisor/x")).is_ok());
    }

    /// The v1 manager against a fake hierarchy in a temporary directory.
    #[test]
    fn v1_create_writes_limits_and_inherits_cpuset() {
        let tmp = tempfile::tempdir().unwrap();
        let mut hs = Vec::new();
        for c in ["cpuset", "memory", "pids", "devices", "cpu"] {
            let m = tmp.path().join(c);
            fs::create_dir(&m).unwrap();
            hs.push(Hierarchy::V1 {
                name: c.into(),
                mount: m,
                options: c.into(),
            });
        }
        fs::write(tmp.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        fs::write(tmp.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        let res: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":10485760},"pids":{"limit":20},"cpu":{"shares":512}}"#,
        )
        .unwrap();
        let cg = Cgroup::new(Path::new("cellvisor/t1"), hs);
        cg.create(Some(&res)).unwrap();
        let rd = |p: &str| fs::read_to_string(tmp.path().join(p)).unwrap();
        assert_eq!(rd("memory/cellvisor/t1/memory.limit_in_bytes"), "10485760");
        assert_eq!(rd("pids/cellvisor/t1/pids.max"), "20");
        assert_eq!(rd("cpu/cellvisor/t1/cpu.shares"), "512");
        assert_eq!(rd("cpuset/cellvisor/cpuset.cpus"), "0-1");
        assert_eq!(rd("cpuset/cellvisor/t1/cpuset.mems"), "0");
        assert!(!rd("devices/cellvisor/t1/devices.allow").is_empty());
        // Creating it again is refused.
        assert!(cg.create(Some(&res)).is_err());
    }

    #[test]
    fn v2_create_enables_controllers_and_writes_limits() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join("cgroup.controllers"),
            "cpu memory pids io\n",
        )
        .unwrap();
        let res: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":10485760,"swap":20971520},"pids":{"limit":20},"cpu":{"quota":50000,"period":100000}}"#,
        )
        .unwrap();
        let cg = Cgroup::new(
            Path::new("/cellvisor/t2"),
            vec![Hierarchy::Unified(tmp.path().into())],
        );
        cg.create(Some(&res)).unwrap();
        let rd = |p: &str| fs::read_to_string(tmp.path().join(p)).unwrap();
        assert_eq!(rd("cgroup.subtree_control"), "+cpu +memory +pids +io");
        assert_eq!(
            rd("cellvisor/cgroup.subtree_control"),
            "+cpu +memory +pids +io"
        );
        assert_eq!(rd("cellvisor/t2/memory.max"), "10485760");
        assert_eq!(rd("cellvisor/t2/memory.swap.max"), "10485760");
        assert_eq!(rd("cellvisor/t2/cpu.max"), "50000 100000");
        assert_eq!(rd("cellvisor/t2/pids.max"), "20");
    }
}
