//! The scheduler in the daemon. Every period the server hands [`Platform::tick`] the CPUs'
//! counters (/proc/stat) and the time; the platform reads each running domain's CPU time
//! through its backend (the sampler), asks the policy (crates/scheduler), and makes each
//! move through the backend (the actuator: the domain's cpuset, a microVM's VMM with it).
//! The placement is kept in the state file before it is made, so a restarted daemon keeps
//! it; the last moves and the scheduler's own cost are kept for `GET /v1/scheduler`.
//! Realtime domains are not the scheduler's: their cores are never among those it uses.

use std::collections::{BTreeMap, VecDeque};

use domain::profile::{cpu_list, cpu_list_string, is_cpu_list, SchedParams, SchedPolicy};
use domain::{Backend, DomainStatus, Role};
use scheduler::sample::{half_life_ms, CpuTimes, Sampler};
use scheduler::{Core, DomainView};
use serde::Serialize;

use crate::platform::{ApiError, Platform};

/// How many of the last moves are kept.
const KEPT: usize = 32;

/// The scheduler's state beside the platform's.
pub struct Sched {
    /// The profile's knobs, with the policy switched live.
    pub params: SchedParams,
    /// The host's online CPUs.
    pub online: Vec<u32>,
    sampler: Sampler,
    /// When the scheduler last moved each domain (tick time, ms).
    moved_at: BTreeMap<String, u64>,
    moves: VecDeque<MoveInfo>,
    cost: Cost,
    /// Where the next period's sampling starts among the domains (round-robin).
    cursor: usize,
    /// Whether sampling has gone round every domain once since the daemon started.
    swept: bool,
}

/// The most domains whose CPU time one period reads (each is a file: about 30 µs here): past
/// that, the domains take turns, each read every ⌈n / 128⌉ periods, so the scheduler's cost
/// stays bounded however many domains a device runs.
pub const SAMPLE_BUDGET: usize = 128;

/// Which of `n` domains a period samples, starting at `cursor`: at most [`SAMPLE_BUDGET`], in
/// turn; where the next period starts, and whether this one reached the end of the list.
pub fn sample_turn(n: usize, cursor: usize) -> (Vec<usize>, usize, bool) {
    if n == 0 {
        return (Vec::new(), 0, true);
    }
    let start = cursor % n;
    let take = SAMPLE_BUDGET.min(n);
    let picked = (0..take).map(|i| (start + i) % n).collect();
    (picked, (start + take) % n, start + take >= n)
}

impl Sched {
    pub fn new(params: SchedParams, online: Vec<u32>) -> Sched {
        Sched {
            sampler: Sampler::new(half_life_ms(params.period_ms)),
            params,
            online,
            moved_at: BTreeMap::new(),
            moves: VecDeque::new(),
            cost: Cost::default(),
            cursor: 0,
            swept: false,
        }
    }
}

/// One move, as `GET /v1/scheduler` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct MoveInfo {
    /// When it was decided, µs since the epoch.
    pub at_us: u64,
    pub domain: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    /// From the decision to the cpuset written, µs.
    pub took_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    ticks: u64,
    cpu_ns: u64,
}

/// One core, as `GET /v1/scheduler` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CoreInfo {
    pub cpu: u32,
    /// Smoothed, 0..1; absent until two samples were taken.
    pub load: Option<f64>,
    /// The realtime domain that owns it (the scheduler never uses it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realtime: Option<String>,
    /// The domains placed on it.
    pub domains: Vec<String>,
}

/// One domain's place.
#[derive(Debug, Clone, Serialize)]
pub struct PlacedInfo {
    pub name: String,
    pub cpus: String,
    pub allowed: String,
    /// Its smoothed CPU use, in cores.
    pub load: f64,
}

/// `GET /v1/scheduler`.
#[derive(Debug, Clone, Serialize)]
pub struct SchedInfo {
    /// The policy (switched live) and the profile's knobs.
    #[serde(flatten)]
    pub params: SchedParams,
    pub cores: Vec<CoreInfo>,
    pub domains: Vec<PlacedInfo>,
    /// The last moves, the newest last.
    pub moves: Vec<MoveInfo>,
    pub ticks: u64,
    /// The scheduler's own CPU time per period (sampling, deciding, moving), µs, and as a
    /// share of one core.
    pub cpu_us_per_tick: f64,
    pub cpu_share: f64,
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl<B: Backend> Platform<B> {
    /// The cores the scheduler may use: online, no realtime domain's.
    pub fn sched_cores(&self) -> Vec<u32> {
        let owned = crate::placement::owned_cores(&self.profile);
        self.sched
            .online
            .iter()
            .copied()
            .filter(|c| !owned.contains(c))
            .collect()
    }

    /// The cores `name`'s profile lets it use (online ones).
    pub fn allowed(&self, name: &str) -> Vec<u32> {
        match self.profile.domain(name) {
            Some(d) => self.allowed_in(d, &self.sched_cores()),
            None => Vec::new(),
        }
    }

    /// The cores domain `d`'s profile lets it use, `cores` being the scheduler's (what a
    /// period computes once for all its domains).
    fn allowed_in(&self, d: &domain::Domain, cores: &[u32]) -> Vec<u32> {
        match &d.cpus {
            Some(c) => cpu_list(c)
                .into_iter()
                .filter(|c| self.sched.online.contains(c))
                .collect(),
            None => cores.to_vec(),
        }
    }

    /// Where the domain is now: where the scheduler put it, or its profile's cores.
    pub fn cpus_of(&self, name: &str) -> Vec<u32> {
        self.saved
            .placement
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.allowed(name))
    }

    pub fn sched_period_ms(&self) -> u64 {
        self.sched.params.period_ms
    }

    /// Put domain `name` on `cpus` through its backend, the placement saved first.
    fn put(&mut self, name: &str, cpus: &[u32]) -> Result<(), ApiError> {
        let was = self.saved.placement.get(name).cloned();
        if *cpus == self.allowed(name) {
            self.saved.placement.remove(name);
        } else {
            self.saved.placement.insert(name.to_string(), cpus.to_vec());
        }
        self.save()?;
        if let Err(e) = self.backend.set_cpus(name, cpus) {
            match was {
                Some(w) => self.saved.placement.insert(name.to_string(), w),
                None => self.saved.placement.remove(name),
            };
            let _ = self.save();
            return Err(ApiError::Internal(domain::chain(&e)));
        }
        Ok(())
    }

    /// Switch the policy live. Back to `fixed`, every domain returns to its profile's cores.
    pub fn set_policy(&mut self, policy: SchedPolicy) -> Result<SchedInfo, ApiError> {
        self.sched.params.policy = policy;
        self.saved.policy = Some(policy);
        self.save()?;
        if policy == SchedPolicy::Fixed {
            for name in self.saved.placement.keys().cloned().collect::<Vec<_>>() {
                let allowed = self.allowed(&name);
                self.record(
                    &name,
                    allowed,
                    "fixed: back on its profile's cores".into(),
                    None,
                );
            }
        }
        Ok(self.scheduler_info())
    }

    /// Put a running domain on `cpus` by request (within its profile's cores): where it
    /// stays under `fixed`, where `balance` and `power` start from.
    pub fn place_on(&mut self, name: &str, cpus: &str) -> Result<SchedInfo, ApiError> {
        let d = self.domain(name)?;
        // A well-formed request the profile does not allow: a conflict, not a bad request.
        if d.role == Role::Realtime {
            return Err(ApiError::Conflict(format!(
                "domain {name} is a realtime domain: its cores are its own and the scheduler never moves it"
            )));
        }
        if !is_cpu_list(cpus) {
            return Err(ApiError::BadRequest(format!(
                "cpus {cpus:?} is not a list like \"0-1,3\""
            )));
        }
        let want = cpu_list(cpus);
        let allowed = self.allowed(name);
        let off: Vec<u32> = want
            .iter()
            .copied()
            .filter(|c| !allowed.contains(c))
            .collect();
        if !off.is_empty() {
            return Err(ApiError::Conflict(format!(
                "domain {name} may use cpus {} only: {} {} not among them",
                cpu_list_string(&allowed),
                cpu_list_string(&off),
                if off.len() == 1 { "is" } else { "are" }
            )));
        }
        if self.status(name)? == DomainStatus::Stopped {
            return Err(ApiError::Conflict(format!("domain {name} is not up")));
        }
        // Not the scheduler's move: no time on the core is owed to it.
        self.sched.moved_at.remove(name);
        if let Some(e) = self.record(name, want, "placed by request".into(), None) {
            return Err(ApiError::Internal(e));
        }
        Ok(self.scheduler_info())
    }

    /// Make a move and keep it among the last ones; its error, if it failed. `t_ms`: the
    /// scheduler's tick that decided it (None for a request), from which the domain's time
    /// on its new cores counts.
    fn record(
        &mut self,
        name: &str,
        to: Vec<u32>,
        reason: String,
        t_ms: Option<u64>,
    ) -> Option<String> {
        let from = self.cpus_of(name);
        if from == to {
            return None;
        }
        let at_us = unix_us();
        let t0 = std::time::Instant::now();
        let r = self.put(name, &to);
        let error = r.err().map(|e| e.to_string());
        if let (None, Some(t)) = (&error, t_ms) {
            self.sched.moved_at.insert(name.to_string(), t);
        }
        let m = MoveInfo {
            at_us,
            domain: name.to_string(),
            from: cpu_list_string(&from),
            to: cpu_list_string(&to),
            reason,
            took_us: t0.elapsed().as_micros() as u64,
            error: error.clone(),
        };
        eprintln!(
            "cellvisord: sched: {} {} -> {}: {}{}",
            m.domain,
            m.from,
            m.to,
            m.reason,
            m.error
                .as_deref()
                .map(|e| format!(" (failed: {e})"))
                .unwrap_or_default()
        );
        self.sched.moves.push_back(m);
        while self.sched.moves.len() > KEPT {
            self.sched.moves.pop_front();
        }
        error
    }

    /// A domain came up or went down: the scheduler forgets where it was.
    pub(crate) fn sched_forget(&mut self, name: &str) -> Result<(), ApiError> {
        self.sched.sampler.forget(name);
        self.sched.moved_at.remove(name);
        if self.saved.placement.remove(name).is_some() {
            self.save()?;
        }
        Ok(())
    }

    /// A restarted daemon: the saved placement of every running domain made again (the
    /// cpusets hold it already; written again in case the daemon was killed mid-move), that
    /// of domains no longer up dropped.
    pub(crate) fn sched_readopt(&mut self, up: &[String]) -> Result<(), ApiError> {
        if let Some(p) = self.saved.policy {
            self.sched.params.policy = p;
        }
        self.saved.placement.retain(|n, _| up.contains(n));
        for (name, cpus) in self.saved.placement.clone() {
            let allowed = self.allowed(&name);
            if cpus.is_empty() || !cpus.iter().all(|c| allowed.contains(c)) {
                self.saved.placement.remove(&name);
                continue;
            }
            self.backend
                .set_cpus(&name, &cpus)
                .map_err(|e| ApiError::Internal(domain::chain(&e)))?;
        }
        self.save()
    }

    /// One period: sample, decide, move. `t_ms` is a monotonic time; `cpus` /proc/stat's
    /// counters now.
    pub fn tick(&mut self, t_ms: u64, cpus: BTreeMap<u32, CpuTimes>) {
        self.sched.sampler.cpus(t_ms, cpus);
        // Borrowed, not copied: a period may go over a thousand domains.
        let domains: Vec<&domain::Domain> = self
            .profile
            .domains
            .iter()
            .filter(|d| d.role != Role::Realtime)
            .collect();
        let (turn, next, wrapped) = sample_turn(domains.len(), self.sched.cursor);
        self.sched.cursor = next;
        let sched_cores = self.sched_cores();
        let mut in_turn = vec![false; domains.len()];
        for i in turn {
            in_turn[i] = true;
        }
        let mut views = Vec::new();
        // Moves wait until every domain has been read once and has a load.
        let mut ready = !self.sched.sampler.core_load.is_empty() && self.sched.swept;
        self.sched.swept |= wrapped;
        for (i, d) in domains.iter().enumerate() {
            let n = &d.name;
            // Looked up once per domain: a name lookup per domain would make a period's cost
            // grow with the square of their number.
            let allowed = self.allowed_in(d, &sched_cores);
            let cpus = self
                .saved
                .placement
                .get(n)
                .cloned()
                .unwrap_or_else(|| allowed.clone());
            if in_turn[i] {
                match self.backend.cpu_time(n) {
                    Ok(c) => self.sched.sampler.domain(n, t_ms, c, &cpus),
                    Err(_) => {
                        // Not up (or gone mid-tick): not placed this period.
                        self.sched.sampler.forget(n);
                        continue;
                    }
                }
            } else if !self.sched.sampler.knows(n) {
                // Not read since it came up (or not up): not placed this period.
                continue;
            }
            let Some(usage) = self.sched.sampler.usage.get(n).cloned() else {
                ready = false;
                continue;
            };
            let weight = self.weight_now(d, true);
            views.push(DomainView {
                name: n.clone(),
                allowed,
                cpus,
                usage,
                weight,
                foreground: self.foreground() == Some(n.as_str()),
                since_move_ms: self.sched.moved_at.get(n).map(|m| t_ms.saturating_sub(*m)),
            });
        }
        if !ready {
            return;
        }
        let cores: Vec<Core> = sched_cores
            .into_iter()
            .map(|c| Core {
                cpu: c,
                load: self.sched.sampler.core_load.get(&c).copied().unwrap_or(0.0),
            })
            .collect();
        for m in scheduler::decide(&self.sched.params, &cores, &views) {
            self.record(&m.domain, m.to, m.reason, Some(t_ms));
        }
    }

    /// The CPU time one tick took (the server measures it around reading and ticking).
    pub fn tick_cost(&mut self, cpu_ns: u64) {
        self.sched.cost.ticks += 1;
        self.sched.cost.cpu_ns += cpu_ns;
    }

    pub fn scheduler_info(&self) -> SchedInfo {
        let p = &self.sched.params;
        let owned: BTreeMap<u32, String> = self
            .profile
            .domains
            .iter()
            .filter(|d| d.role == Role::Realtime)
            .flat_map(|d| {
                cpu_list(d.cpus.as_deref().unwrap_or_default())
                    .into_iter()
                    .map(|c| (c, d.name.clone()))
            })
            .collect();
        let up: Vec<String> = self
            .profile
            .domains
            .iter()
            .filter(|d| d.role != Role::Realtime && self.backend.exists(&d.name))
            .map(|d| d.name.clone())
            .collect();
        let cores = self
            .sched
            .online
            .iter()
            .map(|&c| CoreInfo {
                cpu: c,
                load: self.sched.sampler.core_load.get(&c).copied(),
                realtime: owned.get(&c).cloned(),
                domains: up
                    .iter()
                    .filter(|n| self.cpus_of(n).contains(&c))
                    .cloned()
                    .collect(),
            })
            .collect();
        let domains = up
            .iter()
            .map(|n| PlacedInfo {
                name: n.clone(),
                cpus: cpu_list_string(&self.cpus_of(n)),
                allowed: cpu_list_string(&self.allowed(n)),
                load: self
                    .sched
                    .sampler
                    .usage
                    .get(n)
                    .map_or(0.0, |u| u.values().sum()),
            })
            .collect();
        let c = self.sched.cost;
        let per_tick = if c.ticks == 0 {
            0.0
        } else {
            c.cpu_ns as f64 / c.ticks as f64 / 1e3
        };
        SchedInfo {
            params: *p,
            cores,
            domains,
            moves: self.sched.moves.iter().cloned().collect(),
            ticks: c.ticks,
            cpu_us_per_tick: per_tick,
            cpu_share: per_tick / (p.period_ms as f64 * 1e3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Few domains: all of them every period. Many: 128 a period, in turn, each once per
    /// sweep, the sweep's end said.
    #[test]
    fn domains_take_turns_past_the_budget() {
        assert_eq!(sample_turn(0, 5), (vec![], 0, true));
        let (all, next, wrapped) = sample_turn(3, 0);
        assert_eq!((all, next, wrapped), (vec![0, 1, 2], 0, true));
        let mut seen = vec![0; 1000];
        let mut cursor = 0;
        let mut ends = 0;
        for _ in 0..8 {
            let (turn, next, wrapped) = sample_turn(1000, cursor);
            assert_eq!(turn.len(), SAMPLE_BUDGET);
            for i in turn {
                seen[i] += 1;
            }
            cursor = next;
            ends += usize::from(wrapped);
        }
        // 8 periods of 128 = 1024: every domain once, the first 24 twice, one sweep ended.
        assert!(seen.iter().all(|&s| s == 1 || s == 2));
        assert_eq!(seen.iter().filter(|&&s| s == 2).count(), 24);
        assert_eq!(ends, 1);
    }
}
