//! OCI resources → cgroup file writes, for v1 and v2. Pure: no file is touched here.

use domain::profile::is_cpu_list;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use crate::config_err;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// One write: `value` into `file` of the container's cgroup in `controller`'s hierarchy
/// (v2 has one hierarchy; `controller` then only documents the write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub controller: &'static str,
    pub file: String,
    pub value: String,
}

fn w(controller: &'static str, file: impl Into<String>, value: impl ToString) -> Write {
    Write {
        controller,
        file: file.into(),
        value: value.to_string(),
    }
}

/// Refuse values the kernel would refuse, before anything is created.
pub fn validate(r: &LinuxResources) -> Result<()> {
    if let Some(cpu) = r.cpu() {
        if let Some(s) = cpu.shares() {
            if !(2..=262144).contains(&s) {
                return Err(config_err!(
                    "linux.resources.cpu.shares: {s} is outside 2..262144"
                ));
            }
        }
        if let Some(q) = cpu.quota() {
            if q != -1 && q < 1000 {
                return Err(config_err!(
                    "linux.resources.cpu.quota: {q} must be -1 (no limit) or at least 1000"
                ));
            }
        }
        if let Some(p) = cpu.period() {
            if !(1000..=1_000_000).contains(&p) {
                return Err(config_err!(
                    "linux.resources.cpu.period: {p} is outside 1000..1000000"
                ));
            }
        }
        if let Some(p) = cpu.realtime_period() {
            if p == 0 {
                return Err(config_err!(
                    "linux.resources.cpu.realtimePeriod: must not be 0"
                ));
            }
        }
        if let Some(rt) = cpu.realtime_runtime() {
            let period = cpu.realtime_period().unwrap_or(1_000_000);
            if rt < -1 || (rt != -1 && rt as u64 > period) {
                return Err(config_err!(
                    "linux.resources.cpu.realtimeRuntime: {rt} must be -1 (no limit) or 0..{period} (the period, µs)"
                ));
            }
        }
        for (name, v) in [("cpus", cpu.cpus()), ("mems", cpu.mems())] {
            if let Some(v) = v {
                if !v.is_empty() && !is_cpu_list(v) {
                    return Err(config_err!(
                        "linux.resources.cpu.{name}: {v:?} is not a list like \"0-2,4\""
                    ));
                }
            }
        }
    }
    if let Some(m) = r.memory() {
        for (name, v) in [
            ("limit", m.limit()),
            ("reservation", m.reservation()),
            ("swap", m.swap()),
        ] {
            if let Some(v) = v {
                if v < -1 || v == 0 {
                    return Err(config_err!(
                        "linux.resources.memory.{name}: {v} must be -1 (no limit) or positive"
                    ));
                }
            }
        }
        if let (Some(l), Some(s)) = (m.limit(), m.swap()) {
            if l > 0 && s > 0 && s < l {
                return Err(config_err!(
                    "linux.resources.memory.swap: {s} is below the memory limit {l} (swap counts memory plus swap)"
                ));
            }
        }
        if let Some(s) = m.swappiness() {
            if s > 100 {
                return Err(config_err!(
                    "linux.resources.memory.swappiness: {s} is above 100"
                ));
            }
        }
    }
    if let Some(b) = r.block_io() {
        if let Some(wt) = b.weight() {
            if !(10..=1000).contains(&wt) {
                return Err(config_err!(
                    "linux.resources.blockIO.weight: {wt} is outside 10..1000"
                ));
            }
        }
    }
    for (i, d) in r
        .devices()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if let Some(a) = d.access() {
            if a.chars().any(|c| !"rwm".contains(c)) {
                return Err(config_err!(
                    "linux.resources.devices[{i}].access: {a:?} may only hold r, w and m"
                ));
            }
        }
    }
    if let Some(u) = r.unified() {
        for k in u.keys() {
            if k.contains('/') || k.starts_with('.') || !k.contains('.') {
                return Err(config_err!(
                    "linux.resources.unified: {k:?} is not a cgroup file name"
                ));
            }
        }
    }
    Ok(())
}

/// Device access bits, as the kernel's cgroup device filter numbers them.
pub const ACC_MKNOD: u8 = 1;
pub const ACC_READ: u8 = 2;
pub const ACC_WRITE: u8 = 4;
pub const RWM: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// One device rule: allow or deny `access` to devices of `kind` ('a' any, 'b', 'c') with
/// these numbers (`None`: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevRule {
    pub allow: bool,
    pub kind: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u8,
}

impl std::fmt::Display for DevRule {
    /// The v1 `devices.allow` / `devices.deny` syntax: `c 1:3 rwm`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |v: Option<u32>| v.map_or("*".to_string(), |v| v.to_string());
        let mut acc = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                acc.push(c);
            }
        }
        write!(f, "{} {}:{} {acc}", self.kind, n(self.major), n(self.minor))
    }
}

const fn allow(kind: char, major: Option<u32>, minor: Option<u32>, access: u8) -> DevRule {
    DevRule {
        allow: true,
        kind,
        major,
        minor,
        access,
    }
}

/// Device access every container has, after the configured rules: the default device nodes,
/// the pty devices, and mknod of anything (using a node still needs an allow rule).
pub const DEFAULT_ALLOWED: [DevRule; 11] = [
    allow('c', None, None, ACC_MKNOD),
    allow('b', None, None, ACC_MKNOD),
    allow('c', Some(1), Some(3), RWM),
    allow('c', Some(1), Some(5), RWM),
    allow('c', Some(1), Some(7), RWM),
    allow('c', Some(1), Some(8), RWM),
    allow('c', Some(1), Some(9), RWM),
    allow('c', Some(5), Some(0), RWM),
    allow('c', Some(5), Some(1), RWM),
    allow('c', Some(5), Some(2), RWM),
    allow('c', Some(136), None, RWM),
];

fn dev_rule(d: &LinuxDeviceCgroup) -> DevRule {
    let kind = match d.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => 'a',
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::P => 'p',
    };
    let num = |v: Option<i64>| v.filter(|v| *v >= 0).map(|v| v as u32);
    let access = match d.access().as_deref() {
        None | Some("") => RWM,
        Some(a) => a.chars().fold(0, |acc, c| {
            acc | match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => 0,
            }
        }),
    };
    DevRule {
        allow: d.allow(),
        kind,
        major: num(d.major()),
        minor: num(d.minor()),
        access,
    }
}

/// Every device rule of a container, in order (last match wins): the configured ones, then
/// the defaults. What matches no rule is denied.
pub fn device_rules(r: Option<&LinuxResources>) -> Vec<DevRule> {
    let mut out: Vec<DevRule> = r
        .and_then(|r| r.devices().as_deref())
        .unwrap_or_default()
        .iter()
        .map(dev_rule)
        .collect();
    out.extend(DEFAULT_ALLOWED);
    out
}

/// Device writes when the config has no resources section: deny all, allow the defaults.
pub fn default_device_writes(v: Version) -> Vec<Write> {
    match v {
        Version::V1 => {
            let mut out = vec![w("devices", "devices.deny", "a")];
            out.extend(
                DEFAULT_ALLOWED
                    .iter()
                    .map(|r| w("devices", "devices.allow", r)),
            );
            out
        }
        Version::V2 => Vec::new(),
    }
}

/// The writes that apply `r`, in an order the kernel accepts.
pub fn plan(r: &LinuxResources, v: Version) -> Result<Vec<Write>> {
    validate(r)?;
    let rt = r
        .cpu()
        .as_ref()
        .is_some_and(|c| c.realtime_runtime().is_some() || c.realtime_period().is_some());
    if v == Version::V2 && rt {
        // Said, not ignored: a silent no-op here is what users of other runtimes hit.
        return Err(config_err!(
            "linux.resources.cpu.realtimeRuntime/realtimePeriod: cgroup v2 has no real-time budget (cpu.rt_runtime_us is cgroup v1's); leave them out"
        ));
    }
    let mut out = Vec::new();
    match v {
        Version::V1 => plan_v1(r, &mut out),
        Version::V2 => plan_v2(r, &mut out),
    }
    Ok(out)
}

fn plan_v1(r: &LinuxResources, out: &mut Vec<Write>) {
    if let Some(cpu) = r.cpu() {
        if let Some(s) = cpu.shares() {
            out.push(w("cpu", "cpu.shares", s));
        }
        if let Some(p) = cpu.period() {
            out.push(w("cpu", "cpu.cfs_period_us", p));
        }
        if let Some(q) = cpu.quota() {
            out.push(w("cpu", "cpu.cfs_quota_us", q));
        }
        if let Some(p) = cpu.realtime_period() {
            out.push(w("cpu", "cpu.rt_period_us", p));
        }
        if let Some(rt) = cpu.realtime_runtime() {
            out.push(w("cpu", "cpu.rt_runtime_us", rt));
        }
        if let Some(c) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            out.push(w("cpuset", "cpuset.cpus", c));
        }
        if let Some(m) = cpu.mems().as_deref().filter(|c| !c.is_empty()) {
            out.push(w("cpuset", "cpuset.mems", m));
        }
    }
    if let Some(m) = r.memory() {
        if let Some(l) = m.limit() {
            out.push(w("memory", "memory.limit_in_bytes", l));
        }
        if let Some(s) = m.swap() {
            out.push(w("memory", "memory.memsw.limit_in_bytes", s));
        }
        if let Some(res) = m.reservation() {
            out.push(w("memory", "memory.soft_limit_in_bytes", res));
        }
        #[allow(deprecated)]
        if let Some(k) = m.kernel() {
            out.push(w("memory", "memory.kmem.limit_in_bytes", k));
        }
        if let Some(k) = m.kernel_tcp() {
            out.push(w("memory", "memory.kmem.tcp.limit_in_bytes", k));
        }
        if let Some(s) = m.swappiness() {
            out.push(w("memory", "memory.swappiness", s));
        }
        if m.disable_oom_killer() == Some(true) {
            out.push(w("memory", "memory.oom_control", 1));
        }
    }
    if let Some(p) = r.pids() {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".into()
        };
        out.push(w("pids", "pids.max", v));
    }
    if let Some(b) = r.block_io() {
        if let Some(wt) = b.weight() {
            out.push(w("blkio", "blkio.weight", wt));
        }
        if let Some(wt) = b.leaf_weight() {
            out.push(w("blkio", "blkio.leaf_weight", wt));
        }
        for d in b.weight_device().as_deref().unwrap_or_default() {
            if let Some(wt) = d.weight() {
                out.push(w(
                    "blkio",
                    "blkio.weight_device",
                    format!("{}:{} {wt}", d.major(), d.minor()),
                ));
            }
        }
        for (file, list) in [
            (
                "blkio.throttle.read_bps_device",
                b.throttle_read_bps_device(),
            ),
            (
                "blkio.throttle.write_bps_device",
                b.throttle_write_bps_device(),
            ),
            (
                "blkio.throttle.read_iops_device",
                b.throttle_read_iops_device(),
            ),
            (
                "blkio.throttle.write_iops_device",
                b.throttle_write_iops_device(),
            ),
        ] {
            for d in list.as_deref().unwrap_or_default() {
                out.push(w(
                    "blkio",
                    file,
                    format!("{}:{} {}", d.major(), d.minor(), d.rate()),
                ));
            }
        }
    }
    for h in r.hugepage_limits().as_deref().unwrap_or_default() {
        out.push(w(
            "hugetlb",
            format!("hugetlb.{}.limit_in_bytes", h.page_size()),
            h.limit(),
        ));
    }
    if let Some(n) = r.network() {
        if let Some(c) = n.class_id() {
            out.push(w("net_cls", "net_cls.classid", c));
        }
        for p in n.priorities().as_deref().unwrap_or_default() {
            out.push(w(
                "net_prio",
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
            ));
        }
    }
    // Devices: start from "deny everything", then the configured rules, then the defaults.
    out.push(w("devices", "devices.deny", "a"));
    for d in device_rules(Some(r)) {
        let file = if d.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        out.push(w("devices", file, d));
    }
}

/// v2 cpu.weight (1..10000) → v1 cpu.shares, the inverse of [`shares_to_weight`].
pub fn weight_to_shares(weight: u64) -> u64 {
    2 + (weight.clamp(1, 10000) - 1) * 262142 / 9999
}

/// v1 cpu.shares (2..262144) → v2 cpu.weight (1..10000), the conversion runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + ((shares.saturating_sub(2)) * 9999) / 262142
}

fn plan_v2(r: &LinuxResources, out: &mut Vec<Write>) {
    if let Some(cpu) = r.cpu() {
        if let Some(s) = cpu.shares() {
            out.push(w("cpu", "cpu.weight", shares_to_weight(s)));
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            let q = match cpu.quota() {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".into(),
            };
            out.push(w(
                "cpu",
                "cpu.max",
                format!("{q} {}", cpu.period().unwrap_or(100_000)),
            ));
        }
        if let Some(c) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            out.push(w("cpuset", "cpuset.cpus", c));
        }
        if let Some(m) = cpu.mems().as_deref().filter(|c| !c.is_empty()) {
            out.push(w("cpuset", "cpuset.mems", m));
        }
    }
    if let Some(m) = r.memory() {
        let max = |v: i64| {
            if v < 0 {
                "max".to_string()
            } else {
                v.to_string()
            }
        };
        if let Some(l) = m.limit() {
            out.push(w("memory", "memory.max", max(l)));
        }
        if let Some(res) = m.reservation() {
            out.push(w("memory", "memory.low", max(res)));
        }
        // OCI swap is memory+swap; v2 limits swap alone.
        match (m.swap(), m.limit()) {
            (Some(-1), _) => out.push(w("memory", "memory.swap.max", "max")),
            (Some(s), Some(l)) if l > 0 => out.push(w("memory", "memory.swap.max", s - l)),
            _ => {}
        }
    }
    if let Some(p) = r.pids() {
        let v = if p.limit() > 0 {
            p.limit().to_string()
        } else {
            "max".into()
        };
        out.push(w("pids", "pids.max", v));
    }
    if let Some(b) = r.block_io() {
        if let Some(wt) = b.weight() {
            out.push(w(
                "io",
                "io.weight",
                1 + (u64::from(wt).saturating_sub(10)) * 9999 / 990,
            ));
        }
        for (key, list) in [
            ("rbps", b.throttle_read_bps_device()),
            ("wbps", b.throttle_write_bps_device()),
            ("riops", b.throttle_read_iops_device()),
            ("wiops", b.throttle_write_iops_device()),
        ] {
            for d in list.as_deref().unwrap_or_default() {
                out.push(w(
                    "io",
                    "io.max",
                    format!("{}:{} {key}={}", d.major(), d.minor(), d.rate()),
                ));
            }
        }
    }
    for h in r.hugepage_limits().as_deref().unwrap_or_default() {
        out.push(w(
            "hugetlb",
            format!("hugetlb.{}.max", h.page_size()),
            h.limit(),
        ));
    }
    if let Some(u) = r.unified() {
        let mut keys: Vec<_> = u.keys().collect();
        keys.sort();
        for k in keys {
            out.push(w("unified", k.clone(), &u[k]));
        }
    }
    // Devices: v2 has no files for them; see devices.rs (an eBPF program).
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(j: &str) -> LinuxResources {
        serde_json::from_str(j).unwrap()
    }

    fn files(ws: &[Write]) -> Vec<(String, String)> {
        ws.iter()
            .map(|w| (w.file.clone(), w.value.clone()))
            .collect()
    }

    #[test]
    fn v1_plan_orders_period_before_quota_and_devices_last() {
        let ws = plan(
            &res(r#"{"cpu":{"quota":20000,"period":50000,"cpus":"0"},"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":10,"minor":200,"access":"rw"}]}"#),
            Version::V1,
        )
        .unwrap();
        let f = files(&ws);
        assert_eq!(f[0], ("cpu.cfs_period_us".into(), "50000".into()));
        assert_eq!(f[1], ("cpu.cfs_quota_us".into(), "20000".into()));
        assert_eq!(f[2], ("cpuset.cpus".into(), "0".into()));
        assert_eq!(f[3], ("devices.deny".into(), "a".into()));
        assert_eq!(f[4], ("devices.deny".into(), "a *:* rwm".into()));
        assert_eq!(f[5], ("devices.allow".into(), "c 10:200 rw".into()));
        assert_eq!(
            f.last().unwrap(),
            &("devices.allow".into(), "c 136:* rwm".into())
        );
    }

    #[test]
    fn v1_memory_and_pids() {
        let ws = plan(
            &res(r#"{"memory":{"limit":1000000,"swap":-1},"pids":{"limit":0}}"#),
            Version::V1,
        )
        .unwrap();
        let f = files(&ws);
        assert!(f.contains(&("memory.limit_in_bytes".into(), "1000000".into())));
        assert!(f.contains(&("memory.memsw.limit_in_bytes".into(), "-1".into())));
        assert!(f.contains(&("pids.max".into(), "max".into())));
    }

    #[test]
    fn v2_conversions() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262144), 10000);
        for w in [1, 39, 100, 5000, 10000] {
            assert!(
                shares_to_weight(weight_to_shares(w)).abs_diff(w) <= 1,
                "{w}"
            );
        }
        let ws = plan(
            &res(r#"{"cpu":{"shares":1024,"quota":-1},"memory":{"limit":-1,"swap":-1},"blockIO":{"weight":10},"unified":{"memory.high":"5000000"}}"#),
            Version::V2,
        )
        .unwrap();
        let f = files(&ws);
        assert!(f.contains(&("cpu.weight".into(), "39".into())));
        assert!(f.contains(&("cpu.max".into(), "max 100000".into())));
        assert!(f.contains(&("memory.max".into(), "max".into())));
        assert!(f.contains(&("memory.swap.max".into(), "max".into())));
        assert!(f.contains(&("io.weight".into(), "1".into())));
        assert!(f.contains(&("memory.high".into(), "5000000".into())));
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            r#"{"cpu":{"shares":300000}}"#,
            r#"{"cpu":{"quota":5}}"#,
            r#"{"cpu":{"period":10}}"#,
            r#"{"cpu":{"cpus":"1-0"}}"#,
            r#"{"cpu":{"mems":"a"}}"#,
            r#"{"memory":{"limit":0}}"#,
            r#"{"memory":{"limit":-5}}"#,
            r#"{"memory":{"swappiness":101}}"#,
            r#"{"blockIO":{"weight":5}}"#,
            r#"{"devices":[{"allow":true,"access":"rwx"}]}"#,
            r#"{"unified":{"../x":"1"}}"#,
        ] {
            assert!(validate(&res(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_lists() {
        assert!(is_cpu_list("0"));
        assert!(is_cpu_list("0-3,5,7-8"));
        assert!(!is_cpu_list(""));
        assert!(!is_cpu_list("0-"));
        assert!(!is_cpu_list("3-1"));
        // No CPU the kernel cannot have: a range is not a request for 16 GiB of numbers.
        assert!(!is_cpu_list("0-4294967295"));
        assert!(!is_cpu_list("8192"));
    }

    #[test]
    fn a_real_time_budget_is_v1_only_and_within_its_period() {
        let r = res(r#"{"cpu":{"realtimeRuntime":50000,"realtimePeriod":1000000}}"#);
        let v1: Vec<_> = plan(&r, Version::V1)
            .unwrap()
            .into_iter()
            .map(|w| (w.file, w.value))
            .collect();
        assert_eq!(
            v1[..2],
            [
                ("cpu.rt_period_us".to_string(), "1000000".to_string()),
                ("cpu.rt_runtime_us".to_string(), "50000".to_string())
            ]
        );
        let e = plan(&r, Version::V2).unwrap_err().to_string();
        assert!(e.contains("cgroup v2 has no real-time budget"), "{e}");
        for bad in [
            r#"{"cpu":{"realtimeRuntime":2000000,"realtimePeriod":1000000}}"#,
            r#"{"cpu":{"realtimeRuntime":-2}}"#,
            r#"{"cpu":{"realtimePeriod":0}}"#,
        ] {
            assert!(validate(&res(bad)).is_err(), "{bad}");
        }
        validate(&res(r#"{"cpu":{"realtimeRuntime":-1}}"#)).unwrap();
    }
}
