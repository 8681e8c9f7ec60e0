//! Samplers: each core's load from /proc/stat's counters, each domain's CPU use per core
//! from its cgroup's (cpuacct.usage_percpu on cgroup v1; cgroup v2's cpu.stat has only a
//! total, spread over the domain's cores), smoothed as decaying averages with a half-life.
//! The counters come in with the time they were read; only [`read_proc_stat`] reads.

use std::collections::BTreeMap;

pub use domain::CpuTime as DomainCpu;

/// One CPU's counters from /proc/stat, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// user, nice, system, irq, softirq (guest time is inside user).
    pub busy: u64,
    /// idle and iowait.
    pub idle: u64,
}

/// The per-CPU lines of /proc/stat (`cpuN user nice system idle iowait irq softirq steal
/// ...`). Steal — time the hypervisor ran something else — is neither busy nor idle.
pub fn parse_proc_stat(text: &str) -> BTreeMap<u32, CpuTimes> {
    let mut out = BTreeMap::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some(cpu) = f
            .next()
            .and_then(|n| n.strip_prefix("cpu"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
        if v.len() < 7 {
            continue;
        }
        out.insert(
            cpu,
            CpuTimes {
                busy: v[0] + v[1] + v[2] + v[5] + v[6],
                idle: v[3] + v[4],
            },
        );
    }
    out
}

/// /proc/stat, per CPU.
pub fn read_proc_stat() -> std::io::Result<BTreeMap<u32, CpuTimes>> {
    std::fs::read_to_string("/proc/stat").map(|t| parse_proc_stat(&t))
}

/// The smoothing's half-life for a scheduler period: half of it, so a load that changes is
/// three quarters seen by the next period and a core over the threshold is seen within two.
pub fn half_life_ms(period_ms: u64) -> f64 {
    period_ms as f64 / 2.0
}

/// `old` moved towards `new` by a decaying average with `half_life_ms`, over `dt_ms`.
pub fn smooth(old: Option<f64>, new: f64, dt_ms: f64, half_life_ms: f64) -> f64 {
    match old {
        None => new,
        Some(o) => {
            let keep = 0.5f64.powf(dt_ms / half_life_ms.max(1.0));
            o * keep + new * (1.0 - keep)
        }
    }
}

/// The smoothed loads, updated from successive readings.
#[derive(Debug, Default, Clone)]
pub struct Sampler {
    pub half_life_ms: f64,
    last_cpus: Option<(u64, BTreeMap<u32, CpuTimes>)>,
    last_domain: BTreeMap<String, (u64, DomainCpu)>,
    /// Each core's load, 0..=1.
    pub core_load: BTreeMap<u32, f64>,
    /// Each domain's use of each core, in shares of one core.
    pub usage: BTreeMap<String, BTreeMap<u32, f64>>,
}

impl Sampler {
    pub fn new(half_life_ms: f64) -> Sampler {
        Sampler {
            half_life_ms,
            ..Sampler::default()
        }
    }

    /// The CPUs' counters read at `t_ms`.
    pub fn cpus(&mut self, t_ms: u64, now: BTreeMap<u32, CpuTimes>) {
        if let Some((t0, before)) = &self.last_cpus {
            let dt = t_ms.saturating_sub(*t0) as f64;
            for (cpu, n) in &now {
                let Some(b) = before.get(cpu) else { continue };
                let busy = n.busy.saturating_sub(b.busy) as f64;
                let all = busy + n.idle.saturating_sub(b.idle) as f64;
                if all <= 0.0 {
                    continue;
                }
                let old = self.core_load.get(cpu).copied();
                let v = smooth(old, (busy / all).clamp(0.0, 1.0), dt, self.half_life_ms);
                self.core_load.insert(*cpu, v);
            }
        }
        self.last_cpus = Some((t_ms, now));
    }

    /// Domain `name`'s counter read at `t_ms`, while it is on `cpus` (where a total is spread).
    pub fn domain(&mut self, name: &str, t_ms: u64, now: DomainCpu, cpus: &[u32]) {
        let prev = self
            .last_domain
            .insert(name.to_string(), (t_ms, now.clone()));
        let Some((t0, before)) = prev else { return };
        let dt_ms = t_ms.saturating_sub(t0) as f64;
        if dt_ms <= 0.0 {
            return;
        }
        let per_ns = 1.0 / (dt_ms * 1e6);
        let used: BTreeMap<u32, f64> = match (&before, &now) {
            (DomainCpu::PerCpu(b), DomainCpu::PerCpu(n)) => {
                // A counter that went back: the domain was started again; a fresh start.
                if n.iter().zip(b).any(|(n, b)| n < b) {
                    self.usage.remove(name);
                    return;
                }
                n.iter()
                    .zip(b)
                    .enumerate()
                    .map(|(c, (n, b))| (c as u32, (n - b) as f64 * per_ns))
                    .collect()
            }
            (DomainCpu::Total(b), DomainCpu::Total(n)) if n >= b && !cpus.is_empty() => {
                let each = (n - b) as f64 * per_ns / cpus.len() as f64;
                cpus.iter().map(|&c| (c, each)).collect()
            }
            _ => {
                self.usage.remove(name);
                return;
            }
        };
        let hl = self.half_life_ms;
        let entry = self.usage.entry(name.to_string()).or_default();
        let cores: Vec<u32> = entry.keys().chain(used.keys()).copied().collect();
        for c in cores {
            let new = used.get(&c).copied().unwrap_or(0.0).clamp(0.0, 1.0);
            let v = smooth(entry.get(&c).copied(), new, dt_ms, hl);
            if v < 0.001 && !used.get(&c).is_some_and(|u| *u > 0.0) {
                entry.remove(&c);
            } else {
                entry.insert(c, v);
            }
        }
    }

    /// A domain that went down: its readings are dropped.
    /// Has domain `name` been read since it was last forgotten?
    pub fn knows(&self, name: &str) -> bool {
        self.last_domain.contains_key(name)
    }

    pub fn forget(&mut self, name: &str) {
        self.last_domain.remove(name);
        self.usage.remove(name);
    }
}

/// The host's memory pressure: the share of the last 10 s in which some task waited for
/// memory (PSI, /proc/pressure/memory's `some avg10`), percent; `None` without PSI.
pub fn memory_pressure() -> Option<f64> {
    parse_pressure(&std::fs::read_to_string("/proc/pressure/memory").ok()?)
}

/// `some avg10=1.23 avg60=... total=...` (then a `full` line): the `some avg10`.
pub fn parse_pressure(text: &str) -> Option<f64> {
    let some = text.lines().find(|l| l.starts_with("some "))?;
    some.split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn memory_pressure_is_some_avg10() {
        let psi = "some avg10=12.34 avg60=1.00 avg300=0.10 total=123\nfull avg10=3.00 avg60=0.00 avg300=0.00 total=9\n";
        assert_eq!(parse_pressure(psi), Some(12.34));
        assert_eq!(parse_pressure("full avg10=3.00\n"), None);
        assert_eq!(parse_pressure(""), None);
    }

    use super::*;

    #[test]
    fn proc_stat_per_cpu_busy_and_idle_without_steal() {
        let t = "cpu  10 0 10 100 0 0 0 5 0 0\ncpu0 1 2 3 40 5 6 7 99 0 0\ncpu1 0 0 0 10 0 0 0 0 0 0\nintr 1 2\n";
        let s = parse_proc_stat(t);
        assert_eq!(s.len(), 2);
        assert_eq!(s[&0], CpuTimes { busy: 19, idle: 45 });
        assert_eq!(s[&1], CpuTimes { busy: 0, idle: 10 });
    }

    #[test]
    fn loads_are_deltas_smoothed_by_half_life() {
        let mut s = Sampler::new(1000.0);
        let at = |busy, idle| BTreeMap::from([(0, CpuTimes { busy, idle })]);
        s.cpus(0, at(0, 0));
        assert!(s.core_load.is_empty());
        s.cpus(1000, at(100, 0));
        assert_eq!(s.core_load[&0], 1.0);
        // Idle for one half-life: halfway down.
        s.cpus(2000, at(100, 100));
        assert!((s.core_load[&0] - 0.5).abs() < 1e-9);
    }

    #[test]
    fn domain_use_per_core_and_a_total_spread() {
        let mut s = Sampler::new(500.0);
        s.domain("a", 0, DomainCpu::PerCpu(vec![0, 0]), &[0, 1]);
        s.domain("a", 1000, DomainCpu::PerCpu(vec![500_000_000, 0]), &[0, 1]);
        assert_eq!(s.usage["a"][&0], 0.5);
        assert!(
            !s.usage["a"].contains_key(&1),
            "a core it never used is not listed"
        );
        // cgroup v2: only the total, spread over its cores.
        s.domain("b", 0, DomainCpu::Total(0), &[0, 1]);
        s.domain("b", 1000, DomainCpu::Total(1_000_000_000), &[0, 1]);
        assert_eq!(s.usage["b"][&0], 0.5);
        // Started again: the counter went back; a fresh start, no negative use.
        s.domain("a", 2000, DomainCpu::PerCpu(vec![10, 0]), &[0, 1]);
        assert!(!s.usage.contains_key("a"));
        s.forget("b");
        assert!(!s.usage.contains_key("b"));
    }
}
