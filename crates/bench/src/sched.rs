//! `cellvisor bench sched`: the scheduler on this device, through cellvisord as a user runs
//! it, and on simulated machines. Cases, each its own device (this machine has two cores):
//! - `balance`: two CPU-bound common domains (`cellvisor-agent work --duty 100`) put on one
//!   core under `fixed`, then `balance`: how many periods until they are apart, the work both
//!   get done under each policy (chunks per second, in one round side by side), how evenly,
//!   how often a domain moves in steady state, and one move's latency — the daemon's decision
//!   to the domain's running thread seen on its new core (/proc).
//! - `power`: two light domains (25% of a core each) under `balance`, then `power`: the work
//!   done under each, each core's idle share (/proc/stat) and timer interrupts (LOC in
//!   /proc/interrupts: a core that really sleeps takes few), then the load raised to 60% each:
//!   how many periods until they are spread again.
//! - `realtime`: a realtime domain on the last core beside two CPU-bound common domains under
//!   `balance` and `power`: no move onto its core, and no CPU time of theirs there (per-CPU
//!   accounting of their cgroups).
//! - the scheduler's own cost: its CPU time per period as the daemon counts it.
//! - the simulator: a device's day (a game, bursty apps, idle ones, a fork storm) on 2, 4, 8
//!   and 16 simulated cores under each policy: the spread between cores and the cores in use
//!   over time (plotted for 8 and 16 as the survey's Figure 5), the work done, the moves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use scheduler::sample::{read_proc_stat, CpuTimes};
use scheduler::sim;
use serde::Serialize;
use serde_json::{json, Value};

use crate::device::Device;
use crate::{io, Error, Result};

/// What the run measures and how long.
#[derive(Debug, Clone)]
pub struct Plan {
    pub period_ms: u64,
    /// Each measuring window.
    pub window: Duration,
    /// The steady state watched for moves.
    pub steady: Duration,
    /// Rounds of the balance case (fixed then balance, each round).
    pub rounds: u32,
    /// Simulated seconds.
    pub sim_s: u64,
}

impl Plan {
    /// A period of 1 s, windows of 5 s, 15 s of steady state, 3 rounds; `quick`: periods of
    /// 500 ms, windows of 2 s, 5 s of steady state, one round.
    pub fn new(quick: bool, rounds: Option<u32>) -> Result<Plan> {
        let rounds = rounds.unwrap_or(if quick { 1 } else { 3 });
        if rounds == 0 {
            return Err(Error::Msg("--rounds must be at least 1".into()));
        }
        Ok(if quick {
            Plan {
                period_ms: 500,
                window: Duration::from_secs(2),
                steady: Duration::from_secs(5),
                rounds,
                sim_s: 120,
            }
        } else {
            Plan {
                period_ms: 1000,
                window: Duration::from_secs(5),
                steady: Duration::from_secs(15),
                rounds,
                sim_s: 120,
            }
        })
    }

    /// How long to wait for the scheduler to act: twenty periods.
    fn patience(&self) -> Duration {
        Duration::from_millis(self.period_ms * 20)
    }
}

/// One round of the balance case.
#[derive(Debug, Clone, Serialize)]
pub struct BalanceRound {
    /// Chunks per second, both domains together, under each policy.
    pub fixed_rate: f64,
    pub balance_rate: f64,
    pub ratio: f64,
    /// Each domain's share of the pair's work under balance, the smaller over the larger.
    pub evenness: f64,
    /// From the switch to balance to the move's decision.
    pub apart_ms: f64,
    pub apart_periods: f64,
    /// The move: the daemon writing the cpuset, and the decision to the domain's running
    /// thread seen on its new core.
    pub took_us: f64,
    pub latency_us: Option<f64>,
    /// Moves of each domain in the steady state that followed.
    pub steady_moves: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BalanceCase {
    pub rounds: Vec<BalanceRound>,
    /// Medians over the rounds.
    pub ratio: f64,
    pub evenness: f64,
    pub apart_periods: f64,
    pub latency_us: Option<f64>,
    pub steady_s: f64,
    /// The most a domain moved in the steady state, in any round.
    pub steady_moves_max: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PowerCase {
    pub balance_rate: f64,
    pub power_rate: f64,
    /// power's work over balance's.
    pub ratio: f64,
    pub packed_ms: f64,
    /// The core power packed onto, and each core's idle share over each window.
    pub packed_on: String,
    pub idle_balance: BTreeMap<u32, f64>,
    pub idle_power: BTreeMap<u32, f64>,
    /// The freed core's idle share under power.
    pub freed_idle: f64,
    /// Timer interrupts per second per core (LOC).
    pub loc_balance: BTreeMap<u32, f64>,
    pub loc_power: BTreeMap<u32, f64>,
    /// From the load rising over the threshold to the spreading move's decision.
    pub spread_ms: Option<f64>,
    pub spread_periods: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RealtimeCase {
    /// Why it did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub rt_cpu: u32,
    /// Moves made while it ran, and those onto its core.
    pub moves: usize,
    pub onto_rt: usize,
    /// The common domains' CPU time on its core while it ran (None on cgroup v2: no per-CPU
    /// figure), ns.
    pub common_ns_on_rt: Option<u64>,
    pub window_s: f64,
}

/// The scheduler's own CPU time per period, as a daemon counted it.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub device: String,
    pub ticks: u64,
    pub cpu_us_per_tick: f64,
    /// Of one core.
    pub share: f64,
}

/// A simulated period: (s, spread, cores in use, demand in cores).
pub type Point = (f64, f64, usize, f64);

/// One policy on one simulated machine.
#[derive(Debug, Clone, Serialize)]
pub struct SimRow {
    pub cores: u32,
    pub policy: String,
    pub mean_spread: f64,
    pub mean_in_use: f64,
    /// Work done over work wanted.
    pub done: f64,
    pub moves: usize,
    /// Per period: (s, spread, cores in use, demand in cores); kept for 8 and 16 cores.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<Point>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub host: Value,
    pub period_ms: u64,
    pub window_s: f64,
    pub balance: BalanceCase,
    pub power: PowerCase,
    pub realtime: RealtimeCase,
    pub cost: Vec<Cost>,
    pub sim_s: u64,
    pub sim: Vec<SimRow>,
}

/// A device's profile: `domains` (name, command, extra lines) on the shared root `base`.
fn profile(base: &Path, period_ms: u64, policy: &str, domains: &[(&str, String, &str)]) -> String {
    let mut p = format!(
        "name = \"schedbench\"\nbase = {:?}\n[scheduler]\npolicy = \"{policy}\"\nperiod = \"{period_ms}ms\"\n",
        base.display().to_string()
    );
    for (name, cmd, extra) in domains {
        p += &format!(
            "[[domain]]\nname = \"{name}\"\nrole = \"{}\"\ncommand = {cmd}\n{extra}",
            if extra.contains("realtime") {
                "realtime"
            } else {
                "common"
            }
        );
    }
    p
}

/// `cellvisor-agent work` at `duty`%, reading its duty again from /run/cellvisor/duty.
fn work(duty: u32) -> String {
    format!("[\"/run/cellvisor/agent\", \"work\", \"--duty\", \"{duty}\", \"--duty-file\", \"/run/cellvisor/duty\"]")
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The chunks a `work` domain has done: the last count its log shows.
fn done(dev: &Device, name: &str) -> Result<u64> {
    let v = dev.api("GET", &format!("/v1/domains/{name}/logs"), None)?;
    v["text"]
        .as_str()
        .unwrap_or("")
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("work ")?.trim().parse().ok())
        .ok_or_else(|| Error::Msg(format!("domain {name} ({}) counts no work yet", dev.name)))
}

/// Work per second of each of `names` over `window`.
fn rates(dev: &Device, names: &[&str], window: Duration) -> Result<Vec<f64>> {
    let c0: Vec<u64> = names.iter().map(|n| done(dev, n)).collect::<Result<_>>()?;
    let t0 = Instant::now();
    std::thread::sleep(window);
    let c1: Vec<u64> = names.iter().map(|n| done(dev, n)).collect::<Result<_>>()?;
    let dt = t0.elapsed().as_secs_f64();
    Ok(c0
        .iter()
        .zip(c1)
        .map(|(a, b)| b.saturating_sub(*a) as f64 / dt)
        .collect())
}

/// Each domain's cpus, as the scheduler says.
fn placement(dev: &Device) -> Result<BTreeMap<String, String>> {
    let v = dev.api("GET", "/v1/scheduler", None)?;
    Ok(v["domains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            Some((
                d["name"].as_str()?.to_string(),
                d["cpus"].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// The moves decided since `since_us` (µs since the epoch).
fn moves_since(dev: &Device, since_us: u64) -> Result<Vec<Value>> {
    let v = dev.api("GET", "/v1/scheduler", None)?;
    Ok(v["moves"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["at_us"].as_u64().is_some_and(|t| t >= since_us))
        .cloned()
        .collect())
}

/// Wait (polling every `every`) until `f` says yes, at most `patience`; how long it took.
fn wait_for(
    patience: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<bool>,
) -> Result<Option<Duration>> {
    let t0 = Instant::now();
    while t0.elapsed() < patience {
        if f()? {
            return Ok(Some(t0.elapsed()));
        }
        std::thread::sleep(every);
    }
    Ok(None)
}

fn pid(dev: &Device, name: &str) -> Result<i32> {
    let v = dev.api("GET", &format!("/v1/domains/{name}"), None)?;
    v["pid"]
        .as_i64()
        .map(|p| p as i32)
        .ok_or_else(|| Error::Msg(format!("domain {name} ({}) has no process", dev.name)))
}

/// The CPUs the running threads of process `pid` are on now (/proc: fields 3 and 39).
fn running_on(pid: i32) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let f: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
            (f.first() == Some(&"R")).then(|| f.get(36)?.parse().ok())?
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Each core's idle share between two /proc/stat readings.
fn idle(a: &BTreeMap<u32, CpuTimes>, b: &BTreeMap<u32, CpuTimes>) -> BTreeMap<u32, f64> {
    b.iter()
        .filter_map(|(c, y)| {
            let x = a.get(c)?;
            let busy = y.busy.saturating_sub(x.busy) as f64;
            let idle = y.idle.saturating_sub(x.idle) as f64;
            (busy + idle > 0.0).then(|| (*c, idle / (busy + idle)))
        })
        .collect()
}

/// Timer interrupts per CPU so far (the LOC line of /proc/interrupts).
fn loc() -> Vec<u64> {
    crate::host::read(Path::new("/proc/interrupts"))
        .lines()
        .find(|l| l.trim_start().starts_with("LOC:"))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .map_while(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A window's per-core idle share and timer interrupts per second, and the rates of `names`.
type Window = (Vec<f64>, BTreeMap<u32, f64>, BTreeMap<u32, f64>);

fn window(dev: &Device, names: &[&str], w: Duration) -> Result<Window> {
    let (s0, l0, t0) = (read_proc_stat().unwrap_or_default(), loc(), Instant::now());
    let r = rates(dev, names, w)?;
    let (s1, l1) = (read_proc_stat().unwrap_or_default(), loc());
    let dt = t0.elapsed().as_secs_f64();
    let per_s = l0
        .iter()
        .zip(&l1)
        .enumerate()
        .map(|(c, (a, b))| (c as u32, b.saturating_sub(*a) as f64 / dt))
        .collect();
    Ok((r, idle(&s0, &s1), per_s))
}

fn cost(dev: &Device) -> Result<Cost> {
    let v = dev.api("GET", "/v1/scheduler", None)?;
    Ok(Cost {
        device: dev.name.clone(),
        ticks: v["ticks"].as_u64().unwrap_or(0),
        cpu_us_per_tick: v["cpu_us_per_tick"].as_f64().unwrap_or(0.0),
        share: v["cpu_share"].as_f64().unwrap_or(0.0),
    })
}

fn put_policy(dev: &Device, policy: &str) -> Result<()> {
    dev.api("PUT", "/v1/scheduler", Some(&json!({ "policy": policy })))
        .map(drop)
}

fn median(v: impl Iterator<Item = f64>) -> f64 {
    crate::stats::median(&v.collect::<Vec<_>>()).unwrap_or(f64::NAN)
}

/// One round of the balance case on `dev` (domains a and b, CPU-bound).
fn balance_round(plan: &Plan, dev: &Device) -> Result<BalanceRound> {
    put_policy(dev, "fixed")?;
    for n in ["a", "b"] {
        dev.api(
            "PUT",
            &format!("/v1/domains/{n}/cpus"),
            Some(&json!({"cpus": "0"})),
        )?;
    }
    std::thread::sleep(Duration::from_secs(1));
    let fixed = rates(dev, &["a", "b"], plan.window)?;
    let pids = [pid(dev, "a")?, pid(dev, "b")?];
    let t_switch = now_us();
    put_policy(dev, "balance")?;
    // Where each domain's running threads are, sampled every millisecond from the switch
    // until the move is seen made.
    let mut seen: Vec<(u64, [Vec<u32>; 2])> = Vec::new();
    let mut moved: Option<Value> = None;
    let mut last_ask = Instant::now() - Duration::from_secs(1);
    let t0 = Instant::now();
    while t0.elapsed() < plan.patience() {
        seen.push((now_us(), [running_on(pids[0]), running_on(pids[1])]));
        if moved.is_none() && last_ask.elapsed() >= Duration::from_millis(50) {
            last_ask = Instant::now();
            moved = moves_since(dev, t_switch)?.into_iter().find(|m| {
                m["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("balance"))
            });
        }
        if let Some(m) = &moved {
            let k = usize::from(m["domain"] == "b");
            let to = domain::profile::cpu_list(m["to"].as_str().unwrap_or(""));
            let last = &seen[seen.len() - 1].1[k];
            if !last.is_empty() && last.iter().all(|c| to.contains(c)) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let m = moved.ok_or_else(|| {
        Error::Msg(format!(
            "balance did not move either domain within {} s",
            plan.patience().as_secs()
        ))
    })?;
    let at = m["at_us"].as_u64().unwrap_or(t_switch);
    let k = usize::from(m["domain"] == "b");
    let to = domain::profile::cpu_list(m["to"].as_str().unwrap_or(""));
    let latency_us = seen
        .iter()
        .find(|(t, on)| *t >= at && !on[k].is_empty() && on[k].iter().all(|c| to.contains(c)))
        .map(|(t, _)| (t - at) as f64);
    std::thread::sleep(Duration::from_secs(1));
    let bal = rates(dev, &["a", "b"], plan.window)?;
    let t_steady = now_us();
    std::thread::sleep(plan.steady);
    let mut steady_moves: BTreeMap<String, usize> =
        ["a", "b"].iter().map(|n| (n.to_string(), 0)).collect();
    for m in moves_since(dev, t_steady)? {
        if let Some(n) = m["domain"].as_str() {
            *steady_moves.entry(n.to_string()).or_default() += 1;
        }
    }
    let (fr, br) = (fixed[0] + fixed[1], bal[0] + bal[1]);
    let apart_ms = at.saturating_sub(t_switch) as f64 / 1000.0;
    Ok(BalanceRound {
        fixed_rate: fr,
        balance_rate: br,
        ratio: br / fr,
        evenness: bal[0].min(bal[1]) / bal[0].max(bal[1]).max(1e-9),
        apart_ms,
        apart_periods: apart_ms / plan.period_ms as f64,
        took_us: m["took_us"].as_f64().unwrap_or(f64::NAN),
        latency_us,
        steady_moves,
    })
}

fn balance_case(
    plan: &Plan,
    base: &Path,
    work: &Path,
    agent: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<(BalanceCase, Cost)> {
    let text = profile(
        base,
        plan.period_ms,
        "fixed",
        &[("a", self::work(100), ""), ("b", self::work(100), "")],
    );
    let dev = Device::start("sched-balance", work, &text, agent)?;
    dev.api("POST", "/v1/up", None)?;
    let mut rounds = Vec::new();
    for r in 0..plan.rounds {
        say(&format!("balance: round {}/{}", r + 1, plan.rounds));
        rounds.push(balance_round(plan, &dev)?);
    }
    let c = cost(&dev)?;
    let lat: Vec<f64> = rounds.iter().filter_map(|r| r.latency_us).collect();
    Ok((
        BalanceCase {
            ratio: median(rounds.iter().map(|r| r.ratio)),
            evenness: median(rounds.iter().map(|r| r.evenness)),
            apart_periods: median(rounds.iter().map(|r| r.apart_periods)),
            latency_us: crate::stats::median(&lat),
            steady_s: plan.steady.as_secs_f64(),
            steady_moves_max: rounds
                .iter()
                .flat_map(|r| r.steady_moves.values().copied())
                .max()
                .unwrap_or(0),
            rounds,
        },
        c,
    ))
}

fn set_duty(dev: &Device, names: &[&str], duty: u32) -> Result<()> {
    for n in names {
        let f = dev.run_dir(n).join("duty");
        io(std::fs::write(&f, format!("{duty}\n")), || {
            format!("writing {}", f.display())
        })?;
    }
    Ok(())
}

fn power_case(
    plan: &Plan,
    base: &Path,
    work: &Path,
    agent: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<(PowerCase, Cost)> {
    let names = ["c", "d"];
    let text = profile(
        base,
        plan.period_ms,
        "balance",
        &[("c", self::work(25), ""), ("d", self::work(25), "")],
    );
    let dev = Device::start("sched-power", work, &text, agent)?;
    dev.api("POST", "/v1/up", None)?;
    set_duty(&dev, &names, 25)?;
    say("power: light load under balance");
    std::thread::sleep(Duration::from_secs(2));
    let (rb, idle_b, loc_b) = window(&dev, &names, plan.window)?;
    say("power: light load under power");
    put_policy(&dev, "power")?;
    let packed = wait_for(plan.patience(), Duration::from_millis(20), || {
        let p = placement(&dev)?;
        Ok(p.get("c").is_some_and(|c| !c.contains(['-', ','])) && p.get("c") == p.get("d"))
    })?
    .ok_or_else(|| {
        Error::Msg(format!(
            "power did not pack the light domains within {} s",
            plan.patience().as_secs()
        ))
    })?;
    std::thread::sleep(Duration::from_secs(1));
    let on = placement(&dev)?.get("c").cloned().unwrap_or_default();
    let (rp, idle_p, loc_p) = window(&dev, &names, plan.window)?;
    let freed = idle_p
        .iter()
        .filter(|(c, _)| c.to_string() != on)
        .map(|(_, v)| *v)
        .fold(f64::NAN, |a, b| if a.is_nan() { b } else { a.min(b) });
    say("power: the load rises over the threshold");
    let t_rise = now_us();
    set_duty(&dev, &names, 60)?;
    let spread = wait_for(plan.patience(), Duration::from_millis(20), || {
        let p = placement(&dev)?;
        Ok(p.get("c") != p.get("d") || p.get("c").is_some_and(|c| c.contains(['-', ','])))
    })?;
    let spread_ms = match spread {
        Some(_) => moves_since(&dev, t_rise)?
            .first()
            .and_then(|m| m["at_us"].as_u64())
            .map(|at| at.saturating_sub(t_rise) as f64 / 1000.0),
        None => None,
    };
    let c = cost(&dev)?;
    let (sb, sp) = (rb.iter().sum::<f64>(), rp.iter().sum::<f64>());
    Ok((
        PowerCase {
            balance_rate: sb,
            power_rate: sp,
            ratio: sp / sb,
            packed_ms: packed.as_secs_f64() * 1000.0,
            packed_on: on,
            idle_balance: idle_b,
            idle_power: idle_p,
            freed_idle: freed,
            loc_balance: loc_b,
            loc_power: loc_p,
            spread_periods: spread_ms.map(|s| s / plan.period_ms as f64),
            spread_ms,
        },
        c,
    ))
}

/// The common domains' CPU time on `cpu` (v1 cpuacct), ns; None where there is no per-CPU
/// figure.
fn common_ns_on(dev: &Device, names: &[&str], cpu: u32) -> Option<u64> {
    let mut sum = 0;
    for n in names {
        let dir = crate::host::cgroup_dir("cpuacct", &format!("cellvisor/{}-{n}", dev.prefix));
        let v: u64 = crate::host::read(&dir.join("cpuacct.usage_percpu"))
            .split_whitespace()
            .nth(cpu as usize)?
            .parse()
            .ok()?;
        sum += v;
    }
    Some(sum)
}

fn realtime_case(
    plan: &Plan,
    base: &Path,
    work: &Path,
    agent: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<RealtimeCase> {
    let host = container::cgroups::rt::host();
    let rt_cpu = host
        .cpus
        .as_ref()
        .and_then(|c| c.last().copied())
        .unwrap_or(1);
    let rt = format!("cpus = \"{rt_cpu}\"\nrealtime = {{ policy = \"fifo\", priority = 10, budget = \"100ms/1s\" }}\n");
    let text = profile(
        base,
        plan.period_ms,
        "balance",
        &[
            ("rt", self::work(5), rt.as_str()),
            ("x", self::work(100), ""),
            ("y", self::work(100), ""),
        ],
    );
    let mut case = RealtimeCase {
        skipped: None,
        rt_cpu,
        moves: 0,
        onto_rt: 0,
        common_ns_on_rt: None,
        window_s: 2.0 * plan.window.as_secs_f64(),
    };
    if let Err(e) = domain::profile::parse_on(&text, "sched.toml", Path::new("/"), &host) {
        case.skipped = Some(format!("a realtime domain cannot run here: {e}"));
        return Ok(case);
    }
    let dev = Device::start("sched-rt", work, &text, agent)?;
    dev.api("POST", "/v1/up", None)?;
    say("realtime: balance, then power, beside a realtime domain");
    std::thread::sleep(Duration::from_secs(1));
    let t0 = now_us();
    let n0 = common_ns_on(&dev, &["x", "y"], rt_cpu);
    std::thread::sleep(plan.window);
    put_policy(&dev, "power")?;
    std::thread::sleep(plan.window);
    let n1 = common_ns_on(&dev, &["x", "y"], rt_cpu);
    let moves = moves_since(&dev, t0)?;
    case.moves = moves.len();
    case.onto_rt = moves
        .iter()
        .filter(|m| domain::profile::cpu_list(m["to"].as_str().unwrap_or("")).contains(&rt_cpu))
        .count();
    case.common_ns_on_rt = n0.zip(n1).map(|(a, b)| b.saturating_sub(a));
    Ok(case)
}

/// The simulator's rows: every policy on 2, 4, 8 and 16 cores.
fn simulate(plan: &Plan) -> Vec<SimRow> {
    let mut rows = Vec::new();
    for cores in [2u32, 4, 8, 16] {
        let domains = sim::device_day(cores);
        for policy in scheduler::Policy::ALL {
            let p = scheduler::Params {
                policy,
                ..scheduler::Params::default()
            };
            let steps = sim::run(&p, cores, &[], &domains, plan.sim_s * 1000);
            let n = steps.len().max(1) as f64;
            let wanted: f64 = steps.iter().flat_map(|s| s.wanted.iter()).sum();
            let got: f64 = steps.iter().flat_map(|s| s.got.iter()).sum();
            rows.push(SimRow {
                cores,
                policy: policy.name().into(),
                mean_spread: steps.iter().map(sim::Step::spread).sum::<f64>() / n,
                mean_in_use: steps.iter().map(|s| s.in_use() as f64).sum::<f64>() / n,
                done: got / wanted.max(1e-9),
                moves: steps.iter().map(|s| s.moves.len()).sum(),
                series: if cores >= 8 {
                    steps
                        .iter()
                        .map(|s| {
                            (
                                s.t_ms as f64 / 1000.0,
                                s.spread(),
                                s.in_use(),
                                s.wanted.iter().sum(),
                            )
                        })
                        .collect()
                } else {
                    Vec::new()
                },
            });
        }
    }
    rows
}

/// Run the benchmark with the in-domain `agent`, working in `work`; `say` hears each step.
pub fn run(plan: &Plan, agent: &Path, work: &Path, say: &mut dyn FnMut(&str)) -> Result<Report> {
    let base = work.join("base");
    crate::rootfs::busybox(&base)?;
    let online = container::cgroups::rt::online_cpus();
    if online.len() < 2 {
        return Err(Error::Msg("bench sched needs two CPUs at least".into()));
    }
    let (balance, c1) = balance_case(plan, &base, work, agent, say)?;
    let (power, c2) = power_case(plan, &base, work, agent, say)?;
    let realtime = realtime_case(plan, &base, work, agent, say)?;
    say("the simulator");
    Ok(Report {
        benchmark: "the scheduler: balance, power, realtime cores, its cost; simulated machines",
        host: crate::host::facts(),
        period_ms: plan.period_ms,
        window_s: plan.window.as_secs_f64(),
        balance,
        power,
        realtime,
        cost: vec![c1, c2],
        sim_s: plan.sim_s,
        sim: simulate(plan),
    })
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT MET"
    }
}

/// The report as text: each figure beside its goal.
pub fn table(r: &Report) -> String {
    let b = &r.balance;
    let p = &r.power;
    let mut s = format!(
        "the scheduler on this device — period {} ms, windows of {} s; rates are chunks of work per second\n",
        r.period_ms, r.window_s
    );
    s += "balance: two CPU-bound domains put on one core, fixed then balance\n";
    for (i, x) in b.rounds.iter().enumerate() {
        s += &format!(
            "  round {}: fixed {:.0}/s, balance {:.0}/s (x{:.2}), evenness {:.2}, apart after {:.0} ms ({:.1} periods), move: cpuset written in {:.0} µs, running there {} µs after the decision; steady moves {:?}\n",
            i + 1,
            x.fixed_rate,
            x.balance_rate,
            x.ratio,
            x.evenness,
            x.apart_ms,
            x.apart_periods,
            x.took_us,
            x.latency_us.map_or("?".into(), |l| format!("{l:.0}")),
            x.steady_moves
        );
    }
    s += &format!(
        "  balance/fixed work {:.2} (goal >= 1.8: {}); each within {:.0}% of the other (goal 10%: {}); apart in {:.1} periods (goal <= 2: {}); at most {} move(s) of a domain in {} s of steady state (goal <= 1 per 5 s: {})\n",
        b.ratio,
        verdict(b.ratio >= 1.8),
        (1.0 - b.evenness) * 100.0,
        verdict(b.evenness >= 0.9),
        b.apart_periods,
        verdict(b.apart_periods <= 2.0),
        b.steady_moves_max,
        b.steady_s,
        verdict(b.steady_moves_max as f64 <= (b.steady_s / 5.0).max(1.0))
    );
    s += "power: two domains at 25% of a core each, balance then power, then raised to 60% each\n";
    let fmt = |m: &BTreeMap<u32, f64>, pct: bool| {
        m.iter()
            .map(|(c, v)| {
                if pct {
                    format!("cpu{c} {:.1}%", v * 100.0)
                } else {
                    format!("cpu{c} {v:.0}/s")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    s += &format!(
        "  idle under balance: {}; under power (packed on cpu {} in {:.0} ms): {}\n  timer interrupts under balance: {}; under power: {}\n",
        fmt(&p.idle_balance, true),
        p.packed_on,
        p.packed_ms,
        fmt(&p.idle_power, true),
        fmt(&p.loc_balance, false),
        fmt(&p.loc_power, false)
    );
    s += &format!(
        "  power/balance work {:.3} (goal within 5%: {}); the freed core {:.1}% idle (goal >= 95%: {}); spread again {} (goal <= 2 periods: {})\n",
        p.ratio,
        verdict((p.ratio - 1.0).abs() <= 0.05),
        p.freed_idle * 100.0,
        verdict(p.freed_idle >= 0.95),
        match (p.spread_ms, p.spread_periods) {
            (Some(ms), Some(n)) => format!("{ms:.0} ms after the rise ({n:.1} periods)"),
            _ => "never".into(),
        },
        verdict(p.spread_periods.is_some_and(|n| n <= 2.0))
    );
    let rt = &r.realtime;
    match &rt.skipped {
        Some(why) => s += &format!("realtime: skipped: {why}\n"),
        None => {
            s += &format!(
                "realtime: cpu {} a realtime domain's, balance then power for {} s: {} moves, {} onto its core; the common domains' CPU time there {} (goal 0: {})\n",
                rt.rt_cpu,
                rt.window_s,
                rt.moves,
                rt.onto_rt,
                rt.common_ns_on_rt.map_or("unknown (no per-CPU figure)".into(), |n| format!("{n} ns")),
                verdict(rt.onto_rt == 0 && rt.common_ns_on_rt.is_none_or(|n| n == 0))
            )
        }
    }
    for c in &r.cost {
        s += &format!(
            "cost ({}): {:.0} µs of CPU per period over {} periods, {:.3}% of a core (goal < 0.5%: {})\n",
            c.device,
            c.cpu_us_per_tick,
            c.ticks,
            c.share * 100.0,
            verdict(c.share < 0.005)
        );
    }
    s += &format!(
        "simulated: a device's day ({} s) under each policy\n{:<6} {:<8} {:>12} {:>12} {:>8} {:>6}\n",
        r.sim_s,
        "cores",
        "policy",
        "mean spread",
        "cores used",
        "done",
        "moves"
    );
    for x in &r.sim {
        s += &format!(
            "{:<6} {:<8} {:>11.0}% {:>12.2} {:>7.1}% {:>6}\n",
            x.cores,
            x.policy,
            x.mean_spread * 100.0,
            x.mean_in_use,
            x.done * 100.0,
            x.moves
        );
    }
    s
}

/// The simulator's plots for 8 and 16 cores into `dir`: the spread between cores over time
/// (fixed, balance) and the cores in use (balance, power, and the demand): the survey's
/// Figure 5.
pub fn plot(r: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for cores in [8u32, 16] {
        let of = |policy: &str| {
            r.sim
                .iter()
                .find(|x| x.cores == cores && x.policy == policy)
        };
        let series = |policy: &str, f: &dyn Fn(&Point) -> f64| {
            (
                policy.to_string(),
                of(policy)
                    .map(|x| x.series.iter().map(|p| (p.0, f(p))).collect())
                    .unwrap_or_default(),
            )
        };
        let spread = dir.join(format!("sched-sim-{cores}-spread.svg"));
        crate::plot::over_time(
            &format!("balance: busiest core less idlest, {cores} simulated cores"),
            "load spread (share of a core)",
            &[series("fixed", &|p| p.1), series("balance", &|p| p.1)],
            &spread,
        )?;
        let used = dir.join(format!("sched-sim-{cores}-cores.svg"));
        crate::plot::over_time(
            &format!("power: cores in use, {cores} simulated cores"),
            "cores",
            &[
                series("balance", &|p| p.2 as f64),
                series("power", &|p| p.2 as f64),
                (
                    "demand (cores)".to_string(),
                    of("power")
                        .map(|x| x.series.iter().map(|p| (p.0, p.3)).collect())
                        .unwrap_or_default(),
                ),
            ],
            &used,
        )?;
        out.extend([spread, used]);
    }
    Ok(out)
}
