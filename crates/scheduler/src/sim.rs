//! A simulated machine: cores, domains whose demand follows a trace, each core's time shared
//! among the domains on it by CPU weight (max-min fair, a cpuset's spare demand flowing to
//! its idler cores as the kernel's balancing would), counters fed to the same [`Sampler`] and
//! the same [`decide`] every period. For behaviour beyond this machine's two cores.

use std::collections::BTreeMap;

use crate::policy::{decide, Core, DomainView, Move};
use crate::sample::{half_life_ms, CpuTimes, DomainCpu, Sampler};
use crate::Params;

/// How much CPU a domain wants over time, in cores.
#[derive(Debug, Clone, PartialEq)]
pub enum Trace {
    /// Next to nothing (2% of a core).
    Idle,
    Steady(f64),
    /// `high` for `on_ms`, then `low` for `off_ms`, again and again, shifted by `phase_ms`.
    Bursty {
        high: f64,
        low: f64,
        on_ms: u64,
        off_ms: u64,
        phase_ms: u64,
    },
    /// A game: `mean` ± `jitter` from frame to frame (a fixed pseudo-random sequence).
    Game {
        mean: f64,
        jitter: f64,
    },
    /// `base`, and `demand` from `at_ms` for `for_ms` (a fork storm, a build).
    Storm {
        base: f64,
        demand: f64,
        at_ms: u64,
        for_ms: u64,
    },
    /// `before` until `at_ms`, `after` from then on.
    Step {
        before: f64,
        after: f64,
        at_ms: u64,
    },
}

impl Trace {
    pub fn demand(&self, t_ms: u64) -> f64 {
        match *self {
            Trace::Idle => 0.02,
            Trace::Steady(x) => x,
            Trace::Bursty {
                high,
                low,
                on_ms,
                off_ms,
                phase_ms,
            } => {
                let cycle = (on_ms + off_ms).max(1);
                if (t_ms + phase_ms) % cycle < on_ms {
                    high
                } else {
                    low
                }
            }
            Trace::Game { mean, jitter } => {
                // A fixed sequence per 100 ms frame group: splitmix64 of the frame number.
                let mut z = (t_ms / 100).wrapping_add(0x9e37_79b9_7f4a_7c15);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                let u = (z >> 11) as f64 / (1u64 << 53) as f64;
                (mean + jitter * (2.0 * u - 1.0)).max(0.0)
            }
            Trace::Storm {
                base,
                demand,
                at_ms,
                for_ms,
            } => {
                if (at_ms..at_ms + for_ms).contains(&t_ms) {
                    demand
                } else {
                    base
                }
            }
            Trace::Step {
                before,
                after,
                at_ms,
            } => {
                if t_ms < at_ms {
                    before
                } else {
                    after
                }
            }
        }
    }
}

/// A simulated domain.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDomain {
    pub name: String,
    /// It cannot use more cores than it has threads.
    pub threads: u32,
    pub weight: u32,
    pub foreground: bool,
    /// Its profile's cores (sorted).
    pub allowed: Vec<u32>,
    /// Where it starts (sorted, within `allowed`).
    pub start: Vec<u32>,
    pub trace: Trace,
}

/// One period of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub t_ms: u64,
    /// Each of the scheduler's cores and its load over the period.
    pub loads: Vec<(u32, f64)>,
    pub placements: Vec<Vec<u32>>,
    /// What each domain wanted and got, in cores.
    pub wanted: Vec<f64>,
    pub got: Vec<f64>,
    pub moves: Vec<Move>,
}

impl Step {
    /// The busiest core's load less the idlest's.
    pub fn spread(&self) -> f64 {
        let l = self.loads.iter().map(|x| x.1);
        let max = l.clone().fold(0.0, f64::max);
        let min = l.fold(f64::INFINITY, f64::min);
        if min.is_finite() {
            max - min
        } else {
            0.0
        }
    }

    /// Cores busy more than 2% of the period.
    pub fn in_use(&self) -> usize {
        self.loads.iter().filter(|x| x.1 > 0.02).count()
    }
}

/// Share `cap` of a core among `wants` (want, weight) by weight, max-min fair.
fn share(cap: f64, wants: &[(f64, f64)]) -> Vec<f64> {
    let mut got = vec![0.0; wants.len()];
    let mut open: Vec<usize> = (0..wants.len()).filter(|&i| wants[i].0 > 0.0).collect();
    let mut left = cap;
    while !open.is_empty() && left > 1e-12 {
        let w: f64 = open.iter().map(|&i| wants[i].1).sum();
        let sated: Vec<usize> = open
            .iter()
            .copied()
            .filter(|&i| wants[i].0 - got[i] <= left * wants[i].1 / w + 1e-12)
            .collect();
        if sated.is_empty() {
            for &i in &open {
                got[i] += left * wants[i].1 / w;
            }
            break;
        }
        for &i in &sated {
            left -= wants[i].0 - got[i];
            got[i] = wants[i].0;
        }
        open.retain(|i| !sated.contains(i));
    }
    got
}

/// Each domain's CPU on each core over one period, placed on `place`.
fn allocate(
    cores: &[u32],
    domains: &[SimDomain],
    place: &[Vec<u32>],
    t_ms: u64,
) -> (Vec<f64>, Vec<BTreeMap<u32, f64>>) {
    let wanted: Vec<f64> = domains
        .iter()
        .zip(place)
        .map(|(d, p)| {
            d.trace
                .demand(t_ms)
                .min(f64::from(d.threads.max(1)))
                .min(p.len() as f64)
        })
        .collect();
    let mut got: Vec<BTreeMap<u32, f64>> = vec![BTreeMap::new(); domains.len()];
    let mut free: BTreeMap<u32, f64> = cores.iter().map(|&c| (c, 1.0)).collect();
    // First each domain's demand spread evenly over its cores, shared by weight.
    for &c in cores {
        let on: Vec<usize> = (0..domains.len())
            .filter(|&d| place[d].contains(&c))
            .collect();
        let wants: Vec<(f64, f64)> = on
            .iter()
            .map(|&d| {
                (
                    wanted[d] / place[d].len() as f64,
                    f64::from(domains[d].weight.max(1)),
                )
            })
            .collect();
        for (k, g) in share(1.0, &wants).into_iter().enumerate() {
            got[on[k]].insert(c, g);
            *free.get_mut(&c).unwrap_or(&mut 0.0) -= g;
        }
    }
    // Then what a domain did not get flows to the idle time of its other cores.
    for d in 0..domains.len() {
        let mut short = wanted[d] - got[d].values().sum::<f64>();
        for &c in &place[d] {
            if short <= 1e-9 {
                break;
            }
            let Some(f) = free.get_mut(&c) else { continue };
            let room = (*f).min(1.0 - got[d][&c]).max(0.0);
            let extra = room.min(short);
            *got[d].get_mut(&c).unwrap_or(&mut 0.0) += extra;
            *f -= extra;
            short -= extra;
        }
    }
    (wanted, got)
}

/// Run `domains` on `cores` cores (those in `rt` belong to a realtime domain: not the
/// scheduler's, not simulated) under `p` for `duration_ms`, one step a period.
pub fn run(
    p: &Params,
    cores: u32,
    rt: &[u32],
    domains: &[SimDomain],
    duration_ms: u64,
) -> Vec<Step> {
    let ids: Vec<u32> = (0..cores).filter(|c| !rt.contains(c)).collect();
    let period = p.period_ms.max(1);
    let mut sampler = Sampler::new(half_life_ms(period));
    let mut place: Vec<Vec<u32>> = domains.iter().map(|d| d.start.clone()).collect();
    let mut moved: Vec<Option<u64>> = vec![None; domains.len()];
    let mut busy_ns: BTreeMap<u32, (u64, u64)> = ids.iter().map(|&c| (c, (0, 0))).collect();
    let mut dom_ns: Vec<Vec<u64>> = vec![vec![0; cores as usize]; domains.len()];
    let read = |sampler: &mut Sampler,
                t: u64,
                busy: &BTreeMap<u32, (u64, u64)>,
                dom: &[Vec<u64>],
                place: &[Vec<u32>]| {
        sampler.cpus(
            t,
            busy.iter()
                .map(|(&c, &(b, i))| (c, CpuTimes { busy: b, idle: i }))
                .collect(),
        );
        for (d, ns) in dom.iter().enumerate() {
            sampler.domain(
                &domains[d].name,
                t,
                DomainCpu::PerCpu(ns.clone()),
                &place[d],
            );
        }
    };
    read(&mut sampler, 0, &busy_ns, &dom_ns, &place);
    let mut steps = Vec::new();
    let mut t = 0;
    while t < duration_ms {
        let (wanted, got) = allocate(&ids, domains, &place, t);
        let period_ns = period * 1_000_000;
        let mut loads = Vec::new();
        for &c in &ids {
            let l: f64 = got.iter().filter_map(|g| g.get(&c)).sum::<f64>().min(1.0);
            let e = busy_ns.get_mut(&c).expect("a simulated core");
            let b = (l * period_ns as f64) as u64;
            e.0 += b;
            e.1 += period_ns - b.min(period_ns);
            loads.push((c, l));
        }
        for (d, g) in got.iter().enumerate() {
            for (&c, &x) in g {
                dom_ns[d][c as usize] += (x * period_ns as f64) as u64;
            }
        }
        t += period;
        read(&mut sampler, t, &busy_ns, &dom_ns, &place);
        let view: Vec<DomainView> = domains
            .iter()
            .enumerate()
            .map(|(d, s)| DomainView {
                name: s.name.clone(),
                allowed: s.allowed.clone(),
                cpus: place[d].clone(),
                usage: sampler.usage.get(&s.name).cloned().unwrap_or_default(),
                weight: s.weight,
                foreground: s.foreground,
                since_move_ms: moved[d].map(|m| t - m),
            })
            .collect();
        let cores_now: Vec<Core> = ids
            .iter()
            .map(|&c| Core {
                cpu: c,
                load: sampler.core_load.get(&c).copied().unwrap_or(0.0),
            })
            .collect();
        let moves = decide(p, &cores_now, &view);
        steps.push(Step {
            t_ms: t,
            loads,
            placements: place.clone(),
            wanted,
            got: got.iter().map(|g| g.values().sum()).collect(),
            moves: moves.clone(),
        });
        for m in moves {
            if let Some(d) = domains.iter().position(|s| s.name == m.domain) {
                place[d] = m.to;
                moved[d] = Some(t);
            }
        }
    }
    steps
}

/// A device's day in a few minutes on `cores` cores: a foreground game, bursty apps, idle
/// ones and a fork storm, all started crowded onto the first quarter of the cores.
pub fn device_day(cores: u32) -> Vec<SimDomain> {
    let all: Vec<u32> = (0..cores).collect();
    let crowd = (cores / 4).max(1);
    let on = |i: u32| vec![i % crowd];
    let mut v = vec![SimDomain {
        name: "game".into(),
        threads: 2,
        weight: 400,
        foreground: true,
        allowed: all.clone(),
        start: on(0),
        trace: Trace::Game {
            mean: 0.7,
            jitter: 0.25,
        },
    }];
    let apps = cores.max(2);
    for i in 0..apps {
        v.push(SimDomain {
            name: format!("app{i}"),
            threads: 1,
            weight: 100,
            foreground: false,
            allowed: all.clone(),
            start: on(i + 1),
            trace: Trace::Bursty {
                high: 0.8,
                low: 0.05,
                on_ms: 3_000 + 1_000 * u64::from(i % 3),
                off_ms: 9_000,
                phase_ms: 2_300 * u64::from(i),
            },
        });
    }
    for i in 0..2 {
        v.push(SimDomain {
            name: format!("idle{i}"),
            threads: 1,
            weight: 100,
            foreground: false,
            allowed: all.clone(),
            start: on(i),
            trace: Trace::Idle,
        });
    }
    v.push(SimDomain {
        name: "storm".into(),
        threads: cores,
        weight: 100,
        foreground: false,
        allowed: all,
        start: on(0),
        trace: Trace::Storm {
            base: 0.02,
            demand: f64::from(cores) * 0.6,
            at_ms: 60_000,
            for_ms: 20_000,
        },
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;
    use proptest::prelude::*;

    fn params(policy: Policy) -> Params {
        Params {
            policy,
            ..Params::default()
        }
    }

    fn hog(name: &str, start: &[u32], allowed: &[u32]) -> SimDomain {
        SimDomain {
            name: name.into(),
            threads: 1,
            weight: 100,
            foreground: false,
            allowed: allowed.to_vec(),
            start: start.to_vec(),
            trace: Trace::Steady(1.0),
        }
    }

    #[test]
    fn weights_share_a_core_and_spare_demand_flows_to_idle_cores() {
        assert_eq!(share(1.0, &[(1.0, 1.0), (1.0, 3.0)]), vec![0.25, 0.75]);
        assert_eq!(share(1.0, &[(0.1, 1.0), (1.0, 1.0)]), vec![0.1, 0.9]);
        let d = [hog("a", &[0, 1], &[0, 1]), hog("b", &[0], &[0, 1])];
        let (_, got) = allocate(&[0, 1], &d, &[vec![0, 1], vec![0]], 0);
        let a: f64 = got[0].values().sum();
        assert!((a - 1.0).abs() < 1e-9, "{got:?}");
    }

    #[test]
    fn two_hogs_on_one_core_are_apart_within_two_periods_under_balance() {
        let d = [hog("a", &[0], &[0, 1]), hog("b", &[0], &[0, 1])];
        let steps = run(&params(Policy::Balance), 2, &[], &d, 10_000);
        assert!(
            steps[1].placements[0] != steps[1].placements[1],
            "{:?}",
            steps[1]
        );
        let moves: usize = steps.iter().map(|s| s.moves.len()).sum();
        assert_eq!(moves, 1, "no ping-pong");
        let fixed = run(&params(Policy::Fixed), 2, &[], &d, 10_000);
        let total = |s: &[Step]| s.iter().flat_map(|s| s.got.iter()).sum::<f64>();
        assert!(total(&steps) > 1.8 * total(&fixed));
    }

    #[test]
    fn power_packs_light_domains_and_spreads_when_they_rise() {
        let light = |name: &str, start: &[u32]| SimDomain {
            trace: Trace::Step {
                before: 0.25,
                after: 0.7,
                at_ms: 20_000,
            },
            ..hog(name, start, &[0, 1])
        };
        let d = [light("a", &[0, 1]), light("b", &[0, 1])];
        let steps = run(&params(Policy::Power), 2, &[], &d, 30_000);
        let before = &steps[15];
        assert_eq!(before.in_use(), 1, "{before:?}");
        // Risen at 20 s: on two cores by the second period after.
        let after = &steps[21];
        assert_eq!(after.in_use(), 2, "{after:?}");
    }

    #[test]
    fn the_realtime_cores_are_never_simulated_or_given() {
        let d = [hog("a", &[0], &[0, 1, 2]), hog("b", &[0], &[0, 1, 2])];
        for policy in Policy::ALL {
            for s in run(&params(policy), 3, &[2], &d, 8_000) {
                assert!(s.loads.iter().all(|(c, _)| *c != 2));
                assert!(s.placements.iter().flatten().all(|c| *c != 2), "{s:?}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// In steady state, power uses no more cores than balance.
        #[test]
        fn power_never_uses_more_cores_than_balance(
            n in 2u32..=8,
            demands in proptest::collection::vec((0.0f64..1.5, 1u32..3), 1..6),
        ) {
            let all: Vec<u32> = (0..n).collect();
            let d: Vec<SimDomain> = demands
                .iter()
                .enumerate()
                .map(|(i, &(x, threads))| SimDomain {
                    threads,
                    trace: Trace::Steady(x),
                    ..hog(&format!("d{i}"), &[0], &all)
                })
                .collect();
            let last = |policy| {
                let s = run(&params(policy), n, &[], &d, 30_000);
                s.last().unwrap().placements.iter().flatten().collect::<std::collections::BTreeSet<_>>().len()
            };
            prop_assert!(last(Policy::Power) <= last(Policy::Balance));
        }
    }
}
