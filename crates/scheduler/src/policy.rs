//! The policies, pure: the cores' and the domains' smoothed loads in, new placements out.
//!
//! Loads are shares of one core (1.0 = a core busy all the time). A domain's load on a core
//! is what its cgroup says it used there; what a core carries beyond the domains (the host's
//! own work) stays where it is. A placement is predicted by moving a domain's whole load onto
//! its new cores, spread evenly (as the kernel spreads a cpuset's threads).
//!
//! - `balance` takes the busiest and the idlest core; while their loads differ by more than
//!   the spread it moves (or widens) the domain on the busiest whose move lowers the sum of
//!   squared core loads most, each domain at most once per `min_residency`; domains already
//!   on every core they may use are left to the kernel's own balancing.
//! - `power` finds the fewest cores the domains fit on, each core at most `threshold` loaded
//!   (first fit, the largest domains first, cores in use first), the foreground domain never
//!   where its CPU weight would give it less than it uses now. It packs onto fewer cores only
//!   when each stays `margin` under the threshold and nothing moving has just moved; it
//!   spreads at once when a core it uses is over the threshold.
//! - `fixed` moves nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Params, Policy};

/// A core the scheduler may use, with its smoothed load (0..=1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Core {
    pub cpu: u32,
    pub load: f64,
}

/// A domain as the policy sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainView {
    pub name: String,
    /// The cores its profile lets it use (sorted).
    pub allowed: Vec<u32>,
    /// Where it is now (sorted).
    pub cpus: Vec<u32>,
    /// Its smoothed CPU use on each core it ran on, in shares of one core.
    pub usage: BTreeMap<u32, f64>,
    /// Its CPU weight now.
    pub weight: u32,
    pub foreground: bool,
    /// Since the scheduler last moved it, ms; None when it never has.
    pub since_move_ms: Option<u64>,
}

impl DomainView {
    /// Its whole load, in cores.
    pub fn total(&self) -> f64 {
        self.usage.values().sum()
    }
}

/// One domain put on other cores, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Move {
    pub domain: String,
    pub from: Vec<u32>,
    pub to: Vec<u32>,
    pub reason: String,
}

/// Loads are compared with this much slack: a move must gain more than it.
const EPS: f64 = 0.02;

/// A domain using this much of each of its cores fills them.
const SATURATED: f64 = 0.9;

/// What the policy in `p` does with `domains` on `cores`: the moves to make (none for
/// `fixed`). Every placement it gives is within the domain's allowed cores that are among
/// `cores`, and holds at least one core; a domain with no such core is left alone.
pub fn decide(p: &Params, cores: &[Core], domains: &[DomainView]) -> Vec<Move> {
    let m = Model::new(cores, domains);
    let (to, reason) = match p.policy {
        Policy::Fixed => return Vec::new(),
        Policy::Balance => balance(p, &m, domains),
        Policy::Power => power(p, &m, domains),
    };
    domains
        .iter()
        .zip(to)
        .filter(|(d, to)| !to.is_empty() && **to != d.cpus)
        .map(|(d, to)| Move {
            domain: d.name.clone(),
            from: d.cpus.clone(),
            reason: reason.get(&d.name).cloned().unwrap_or_default(),
            to,
        })
        .collect()
}

/// Predicting core loads for a placement.
struct Model<'a> {
    cores: Vec<u32>,
    /// Load on each core that is not the domains'.
    other: BTreeMap<u32, f64>,
    domains: &'a [DomainView],
    /// Each domain's cores it may be given (allowed ∩ cores).
    may: Vec<Vec<u32>>,
    /// Each domain's placement now, limited to `may` (all of `may` when that leaves none).
    now: Vec<Vec<u32>>,
}

impl<'a> Model<'a> {
    fn new(cores: &[Core], domains: &'a [DomainView]) -> Model<'a> {
        let ids: Vec<u32> = cores.iter().map(|c| c.cpu).collect();
        let mut other: BTreeMap<u32, f64> = cores.iter().map(|c| (c.cpu, c.load)).collect();
        for d in domains {
            for (c, u) in &d.usage {
                if let Some(o) = other.get_mut(c) {
                    *o -= u;
                }
            }
        }
        for o in other.values_mut() {
            *o = o.clamp(0.0, 1.0);
        }
        let may: Vec<Vec<u32>> = domains
            .iter()
            .map(|d| {
                d.allowed
                    .iter()
                    .copied()
                    .filter(|c| ids.contains(c))
                    .collect()
            })
            .collect();
        let now = domains
            .iter()
            .zip(&may)
            .map(|(d, may)| {
                let on: Vec<u32> = d.cpus.iter().copied().filter(|c| may.contains(c)).collect();
                if on.is_empty() {
                    may.clone()
                } else {
                    on
                }
            })
            .collect();
        Model {
            cores: ids,
            other,
            domains,
            may,
            now,
        }
    }

    /// Domain `i`'s load on each core of placement `cpus`.
    fn share(&self, i: usize, cpus: &[u32]) -> Vec<(u32, f64)> {
        let d = &self.domains[i];
        if cpus.is_empty() {
            return Vec::new();
        }
        if cpus == self.now[i].as_slice() {
            // Where it is: what it used on each core, and what it used elsewhere spread over them.
            let here: f64 = cpus.iter().filter_map(|c| d.usage.get(c)).sum();
            let rest = (d.total() - here).max(0.0) / cpus.len() as f64;
            return cpus
                .iter()
                .map(|c| (*c, d.usage.get(c).copied().unwrap_or(0.0) + rest))
                .collect();
        }
        let each = d.total() / cpus.len() as f64;
        cpus.iter().map(|c| (*c, each)).collect()
    }

    /// Every core's predicted load under `place`.
    fn loads(&self, place: &[Vec<u32>]) -> BTreeMap<u32, f64> {
        let mut l = self.other.clone();
        for (i, cpus) in place.iter().enumerate() {
            for (c, u) in self.share(i, cpus) {
                *l.entry(c).or_insert(0.0) += u;
            }
        }
        l
    }

    /// Does domain `i` fill every core of `cpus` (so it may want more)?
    fn saturated(&self, i: usize, cpus: &[u32]) -> bool {
        let share = self.share(i, cpus);
        !share.is_empty() && share.iter().all(|(_, u)| *u >= SATURATED)
    }

    /// Is core `c` over the threshold under `place` in a way a move can help: shared by two
    /// domains or more, or filled by one that fills all its cores? (A domain alone on its
    /// core that uses most of it is not over: moving it gains nothing.) `loads` are those of
    /// `place`.
    fn over(&self, p: &Params, place: &[Vec<u32>], loads: &BTreeMap<u32, f64>, c: u32) -> bool {
        if loads[&c] <= p.threshold + 1e-9 {
            return false;
        }
        let on: Vec<usize> = (0..place.len())
            .filter(|&d| {
                self.share(d, &place[d])
                    .iter()
                    .any(|(k, u)| *k == c && *u >= 0.02)
            })
            .collect();
        on.len() >= 2 || on.iter().any(|&d| self.saturated(d, &place[d]))
    }

    fn movable(&self, p: &Params, i: usize) -> bool {
        self.domains[i]
            .since_move_ms
            .is_none_or(|t| t >= p.min_residency_ms)
    }
}

/// A domain on `cpus` moved from core `b` to core `i` (b swapped for i), and widened onto
/// `i` as well; both sorted.
fn moved_to(cpus: &[u32], b: u32, i: u32) -> (Vec<u32>, Vec<u32>) {
    let mut swap: Vec<u32> = cpus.iter().copied().filter(|&c| c != b).collect();
    swap.push(i);
    swap.sort_unstable();
    let mut wide = cpus.to_vec();
    wide.push(i);
    wide.sort_unstable();
    (swap, wide)
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn squares(l: &BTreeMap<u32, f64>) -> f64 {
    l.values().map(|x| x * x).sum()
}

/// `balance`: from the busiest core to the idlest, one domain at a time.
fn balance(
    p: &Params,
    m: &Model,
    domains: &[DomainView],
) -> (Vec<Vec<u32>>, BTreeMap<String, String>) {
    let mut place = m.now.clone();
    let mut why = BTreeMap::new();
    let mut moved = BTreeSet::new();
    for _ in 0..domains.len() {
        let l = m.loads(&place);
        let (Some((&b, &lb)), Some((&i, &li))) = (
            l.iter().max_by(|x, y| x.1.total_cmp(y.1)),
            l.iter().min_by(|x, y| x.1.total_cmp(y.1)),
        ) else {
            break;
        };
        if lb - li <= p.spread {
            break;
        }
        let base = squares(&l);
        let mut best: Option<(f64, usize, Vec<u32>)> = None;
        for d in 0..domains.len() {
            let cur = &place[d];
            if !cur.contains(&b) || cur.contains(&i) || !m.may[d].contains(&i) {
                continue;
            }
            if !m.movable(p, d) || moved.contains(&d) {
                continue;
            }
            let (swap, wide) = moved_to(cur, b, i);
            for cand in [swap, wide] {
                let mut trial = place.clone();
                trial[d] = cand.clone();
                let lt = m.loads(&trial);
                let score = squares(&lt);
                let top = lt[&b].max(lt[&i]);
                if score < base - EPS
                    && top < lb - EPS
                    && best.as_ref().is_none_or(|(s, _, _)| score < *s - 1e-9)
                {
                    best = Some((score, d, cand));
                }
            }
        }
        let Some((_, d, cand)) = best else {
            break;
        };
        why.insert(
            domains[d].name.clone(),
            format!(
                "balance: cpu {b} at {}, cpu {i} at {} (spread over {})",
                pct(lb),
                pct(li),
                pct(p.spread)
            ),
        );
        place[d] = cand;
        moved.insert(d);
    }
    (place, why)
}

/// `power`: the fewest cores that carry the load under the threshold.
fn power(
    p: &Params,
    m: &Model,
    domains: &[DomainView],
) -> (Vec<Vec<u32>>, BTreeMap<String, String>) {
    let in_use: BTreeSet<u32> = m.now.iter().flatten().copied().collect();
    let now = m.loads(&m.now);
    let over: Vec<u32> = in_use
        .iter()
        .copied()
        .filter(|&c| m.over(p, &m.now, &now, c))
        .collect();
    // Over the threshold: off the cores over it first.
    if !over.is_empty() {
        let (place, why) = spread(p, m, domains);
        if place != m.now {
            return (place, why);
        }
    }
    let total: f64 = domains.iter().map(DomainView::total).sum();
    let mut why = BTreeMap::new();
    if !fg_keeps_share(m, &m.now) {
        // The foreground short of its share: a packing that gives it room, on no fewer
        // cores than now, or every domain on every core it may use.
        let place = (in_use.len().max(1)..=m.cores.len())
            .find_map(|k| pack(m, k, p.threshold))
            .unwrap_or_else(|| m.may.clone());
        for (d, to) in place.iter().enumerate() {
            if *to != m.now[d] {
                why.insert(
                    domains[d].name.clone(),
                    "power: the foreground domain would get less than it uses".to_string(),
                );
            }
        }
        return (place, why);
    }
    // Fewer cores, only with the margin to spare and nothing moving that just moved: the
    // whole load repacked when nothing is over, else the emptiest core drained.
    if over.is_empty() {
        for k in 1..in_use.len() {
            let Some(place) = pack(m, k, p.threshold - p.margin) else {
                continue;
            };
            let used = place.iter().flatten().collect::<BTreeSet<_>>().len();
            let stays = (0..domains.len()).all(|d| place[d] == m.now[d] || m.movable(p, d));
            if used >= in_use.len() || !stays {
                break;
            }
            for (d, to) in place.iter().enumerate() {
                if *to != m.now[d] {
                    why.insert(
                        domains[d].name.clone(),
                        format!(
                            "power: the load ({} of a core) fits on {used} core{} under {}",
                            pct(total),
                            if used == 1 { "" } else { "s" },
                            pct(p.threshold - p.margin)
                        ),
                    );
                }
            }
            return (place, why);
        }
    }
    drain(p, m, domains)
}

/// `power`, one core freed: the emptiest core in use whose domains all fit elsewhere under
/// the threshold less the margin (each onto the fullest core in use with room; one on
/// several cores narrowed), none of them just moved.
fn drain(
    p: &Params,
    m: &Model,
    domains: &[DomainView],
) -> (Vec<Vec<u32>>, BTreeMap<String, String>) {
    let limit = p.threshold - p.margin;
    let now = m.loads(&m.now);
    let mut in_use: Vec<u32> = m
        .now
        .iter()
        .flatten()
        .copied()
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    in_use.sort_by(|a, b| now[a].total_cmp(&now[b]).then(a.cmp(b)));
    if in_use.len() <= 1 {
        return (m.now.clone(), BTreeMap::new());
    }
    'core: for &e in &in_use {
        let mut on: Vec<usize> = (0..domains.len())
            .filter(|&d| m.now[d].contains(&e))
            .collect();
        if on.iter().any(|&d| !m.movable(p, d)) {
            continue;
        }
        on.sort_by(|&a, &b| domains[b].total().total_cmp(&domains[a].total()));
        let mut place = m.now.clone();
        for &d in &on {
            if place[d].len() > 1 {
                place[d].retain(|&c| c != e);
                continue;
            }
            let l = m.loads(&place);
            let to = in_use
                .iter()
                .copied()
                .filter(|&c| c != e && m.may[d].contains(&c))
                .filter(|c| l[c] + domains[d].total() <= limit + 1e-9)
                .max_by(|a, b| l[a].total_cmp(&l[b]));
            match to {
                Some(c) => place[d] = vec![c],
                None => continue 'core,
            }
        }
        let l = m.loads(&place);
        let within = on
            .iter()
            .flat_map(|&d| place[d].iter())
            .all(|c| l[c] <= limit + 1e-9);
        if !within || !fg_keeps_share(m, &place) {
            continue;
        }
        let why = on
            .iter()
            .map(|&d| {
                (
                    domains[d].name.clone(),
                    format!(
                        "power: cpu {e} drained, {} under {}",
                        pct(now[&e]),
                        pct(limit)
                    ),
                )
            })
            .collect();
        return (place, why);
    }
    (m.now.clone(), BTreeMap::new())
}

/// A move `spread` weighs: (the core it leaves under the threshold after, the core it goes to
/// under it, that core in use already), the higher load of the two after, the domain, its
/// new cores, the core it gains.
type Candidate = ((bool, bool, bool), f64, usize, Vec<u32>, u32);

/// `power` over its threshold: domains off the cores over it, one at a time, each where it
/// fits under the threshold (a core in use first), residency or not; the others stay.
fn spread(
    p: &Params,
    m: &Model,
    domains: &[DomainView],
) -> (Vec<Vec<u32>>, BTreeMap<String, String>) {
    let mut place = m.now.clone();
    let mut why = BTreeMap::new();
    let mut moved = BTreeSet::new();
    for _ in 0..domains.len() {
        let l = m.loads(&place);
        let in_use: BTreeSet<u32> = place.iter().flatten().copied().collect();
        let Some((&b, &lb)) = l
            .iter()
            .filter(|(c, _)| in_use.contains(c) && m.over(p, &place, &l, **c))
            .max_by(|x, y| x.1.total_cmp(y.1))
        else {
            break;
        };
        // The best: leaves the core under the threshold, fits where it goes, onto a core in
        // use, the lowest load after.
        let mut best: Option<Candidate> = None;
        for d in 0..domains.len() {
            if !place[d].contains(&b) || moved.contains(&d) {
                continue;
            }
            for &i in &m.may[d] {
                if place[d].contains(&i) {
                    continue;
                }
                let (swap, wide) = moved_to(&place[d], b, i);
                // Wider only for a domain that fills its cores: one that does not would not
                // use another.
                let mut cands = vec![swap];
                if m.saturated(d, &place[d]) {
                    cands.push(wide);
                }
                for cand in cands {
                    let mut trial = place.clone();
                    trial[d] = cand.clone();
                    let lt = m.loads(&trial);
                    let top = lt[&b].max(lt[&i]);
                    if top >= lb - EPS {
                        continue;
                    }
                    let key = (
                        lt[&b] <= p.threshold + 1e-9,
                        lt[&i] <= p.threshold + 1e-9,
                        in_use.contains(&i),
                    );
                    let better = best
                        .as_ref()
                        .is_none_or(|(k, t, ..)| key > *k || (key == *k && top < *t - 1e-9));
                    if better {
                        best = Some((key, top, d, cand, i));
                    }
                }
            }
        }
        let Some((_, _, d, cand, i)) = best else {
            break;
        };
        why.insert(
            domains[d].name.clone(),
            format!(
                "power: cpu {b} at {} over {}: onto cpu {i}",
                pct(lb),
                pct(p.threshold)
            ),
        );
        place[d] = cand;
        moved.insert(d);
    }
    (place, why)
}

/// Does the foreground domain get, by its CPU weight on the cores of `place`, at least what
/// it uses now?
fn fg_keeps_share(m: &Model, place: &[Vec<u32>]) -> bool {
    let Some(f) = m.domains.iter().position(|d| d.foreground) else {
        return true;
    };
    let fd = &m.domains[f];
    let mut got = 0.0;
    for c in &place[f] {
        let weights: f64 = place
            .iter()
            .enumerate()
            .filter(|(_, cpus)| cpus.contains(c))
            .map(|(d, cpus)| f64::from(m.domains[d].weight.max(1)) / cpus.len() as f64)
            .sum();
        let mine = f64::from(fd.weight.max(1)) / place[f].len() as f64;
        got += (1.0 - m.other[c]) * mine / weights.max(1e-9);
    }
    got + EPS >= fd.total().min(place[f].len() as f64)
}

/// The domains on `k` target cores (more if a domain's allowed cores are elsewhere), each
/// core at most `limit` loaded; None when they do not fit.
fn pack(m: &Model, k: usize, limit: f64) -> Option<Vec<Vec<u32>>> {
    // Cores in use first, the busiest first (fewest moves), then the rest in order.
    let now = m.loads(&m.now);
    let in_use: BTreeSet<u32> = m.now.iter().flatten().copied().collect();
    let mut order = m.cores.clone();
    order.sort_by(|a, b| {
        in_use
            .contains(b)
            .cmp(&in_use.contains(a))
            .then(now[b].total_cmp(&now[a]))
            .then(a.cmp(b))
    });
    let target: Vec<u32> = order.into_iter().take(k).collect();
    for fg_alone in [false, true] {
        if let Some(place) = pack_onto(m, &target, limit, fg_alone) {
            if fg_keeps_share(m, &place) {
                return Some(place);
            }
        }
    }
    None
}

fn pack_onto(m: &Model, target: &[u32], limit: f64, fg_alone: bool) -> Option<Vec<Vec<u32>>> {
    let n = m.domains.len();
    let mut load: BTreeMap<u32, f64> = m.other.clone();
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut place = vec![Vec::new(); n];
    let mut order: Vec<usize> = (0..n).collect();
    // The foreground first when it is to be alone; then the largest first.
    order.sort_by(|&a, &b| {
        let fa = fg_alone && m.domains[a].foreground;
        let fb = fg_alone && m.domains[b].foreground;
        fb.cmp(&fa)
            .then(m.domains[b].total().total_cmp(&m.domains[a].total()))
            .then(a.cmp(&b))
    });
    for d in order {
        let dom = &m.domains[d];
        let on_target: Vec<u32> = target
            .iter()
            .copied()
            .filter(|c| m.may[d].contains(c) && !taken.contains(c))
            .collect();
        // Off the target only when the profile keeps it elsewhere.
        let options = if on_target.is_empty() {
            m.may[d].clone()
        } else {
            on_target
        };
        if options.is_empty() {
            place[d] = m.now[d].clone();
            continue;
        }
        let total = dom.total();
        // A domain on one core stays on one (it may fill a core of its own); one on more
        // narrows only as far as the limit allows.
        let single = m.now[d].len() == 1 && total <= 1.0;
        let want = if single {
            1
        } else {
            ((total / limit).ceil() as usize).clamp(1, options.len())
        };
        let empty = |c: u32, load: &BTreeMap<u32, f64>| (load[&c] - m.other[&c]).abs() < 1e-9;
        let fits = |cpus: &[u32], load: &BTreeMap<u32, f64>| {
            let each = total / cpus.len() as f64;
            cpus.iter().all(|c| {
                load[c] + each <= limit + 1e-9
                    || (single && empty(*c, load) && load[c] + each <= 1.0 + 1e-9)
            })
        };
        // Where it is, if that is a fit of the right size; else the first cores that fit.
        let here = m.now[d].len() == want
            && m.now[d].iter().all(|c| options.contains(c))
            && fits(&m.now[d], &load);
        let cpus = if here {
            m.now[d].clone()
        } else {
            let mut pick: Vec<u32> = Vec::new();
            for &c in &options {
                if pick.len() == want {
                    break;
                }
                if fits(&[c], &load) || (want > 1 && load[&c] + total / want as f64 <= limit + 1e-9)
                {
                    pick.push(c);
                }
            }
            if pick.len() < want {
                return None;
            }
            pick.sort_unstable();
            pick
        };
        let each = total / cpus.len() as f64;
        for c in &cpus {
            *load.get_mut(c)? += each;
        }
        if fg_alone && dom.foreground {
            taken.extend(cpus.iter().copied());
        }
        place[d] = cpus;
    }
    Some(place)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(policy: Policy) -> Params {
        Params {
            policy,
            ..Params::default()
        }
    }

    fn dom(name: &str, allowed: &[u32], cpus: &[u32], usage: &[(u32, f64)]) -> DomainView {
        DomainView {
            name: name.into(),
            allowed: allowed.to_vec(),
            cpus: cpus.to_vec(),
            usage: usage.iter().copied().collect(),
            weight: 100,
            foreground: false,
            since_move_ms: None,
        }
    }

    fn cores(loads: &[f64]) -> Vec<Core> {
        loads
            .iter()
            .enumerate()
            .map(|(i, &load)| Core {
                cpu: i as u32,
                load,
            })
            .collect()
    }

    #[test]
    fn balance_moves_one_of_two_hogs_sharing_a_core() {
        let d = [
            dom("a", &[0, 1], &[0], &[(0, 0.5)]),
            dom("b", &[0, 1], &[0], &[(0, 0.5)]),
        ];
        let m = decide(&params(Policy::Balance), &cores(&[1.0, 0.0]), &d);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].to, vec![1]);
        assert!(m[0].reason.contains("cpu 0 at 100%"), "{}", m[0].reason);
        // Apart, each on a core of its own: nothing more to do.
        let d = [
            dom("a", &[0, 1], &[0], &[(0, 1.0)]),
            dom("b", &[0, 1], &[1], &[(1, 1.0)]),
        ];
        assert!(decide(&params(Policy::Balance), &cores(&[1.0, 1.0]), &d).is_empty());
    }

    #[test]
    fn balance_waits_out_the_residency_and_leaves_the_kernel_its_cpuset() {
        let mut d = [
            dom("a", &[0, 1], &[0], &[(0, 0.5)]),
            dom("b", &[0, 1], &[0], &[(0, 0.5)]),
        ];
        d[0].since_move_ms = Some(1000);
        d[1].since_move_ms = Some(4999);
        assert!(decide(&params(Policy::Balance), &cores(&[1.0, 0.0]), &d).is_empty());
        d[1].since_move_ms = Some(5000);
        let m = decide(&params(Policy::Balance), &cores(&[1.0, 0.0]), &d);
        assert_eq!(m[0].domain, "b");
        // On every core it may use: the kernel balances it, not us.
        let d = [dom("a", &[0, 1], &[0, 1], &[(0, 1.0)])];
        assert!(decide(&params(Policy::Balance), &cores(&[1.0, 0.0]), &d).is_empty());
        // Confined by its profile to the busy core: it stays.
        let d = [
            dom("a", &[0], &[0], &[(0, 0.5)]),
            dom("b", &[0], &[0], &[(0, 0.5)]),
        ];
        assert!(decide(&params(Policy::Balance), &cores(&[1.0, 0.0]), &d).is_empty());
    }

    #[test]
    fn balance_widens_a_domain_that_fills_its_core() {
        let d = [dom("a", &[0, 1], &[0], &[(0, 1.0)])];
        let m = decide(&params(Policy::Balance), &cores(&[1.0, 0.0]), &d);
        assert_eq!(m[0].to, vec![0, 1]);
    }

    #[test]
    fn power_packs_a_light_load_and_spreads_a_heavy_one() {
        let p = params(Policy::Power);
        let d = [
            dom("a", &[0, 1], &[0, 1], &[(0, 0.15), (1, 0.15)]),
            dom("b", &[0, 1], &[0, 1], &[(0, 0.1), (1, 0.1)]),
        ];
        let m = decide(&p, &cores(&[0.25, 0.25]), &d);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m.iter().all(|m| m.to == m.to[..1] && m.to == [m.to[0]]));
        assert_eq!(m[0].to, m[1].to);
        // Packed, 50% on one core: stays.
        let d = [
            dom("a", &[0, 1], &[0], &[(0, 0.3)]),
            dom("b", &[0, 1], &[0], &[(0, 0.2)]),
        ];
        assert!(decide(&p, &cores(&[0.5, 0.0]), &d).is_empty());
        // Over the threshold: spread at once, residency or not.
        let mut d = [
            dom("a", &[0, 1], &[0], &[(0, 0.6)]),
            dom("b", &[0, 1], &[0], &[(0, 0.4)]),
        ];
        d[0].since_move_ms = Some(10);
        d[1].since_move_ms = Some(10);
        let m = decide(&p, &cores(&[1.0, 0.0]), &d);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].to, vec![1]);
        assert!(
            m[0].reason.contains("cpu 0 at 100% over 80%"),
            "{}",
            m[0].reason
        );
        // 75% in all fits under 80% but not under 70%: spread stays spread.
        let d = [
            dom("a", &[0, 1], &[0], &[(0, 0.4)]),
            dom("b", &[0, 1], &[1], &[(1, 0.35)]),
        ];
        assert!(decide(&p, &cores(&[0.4, 0.35]), &d).is_empty());
    }

    #[test]
    fn power_never_squeezes_the_foreground_below_its_share() {
        let p = params(Policy::Power);
        let mut d = [
            dom("fg", &[0, 1], &[0], &[(0, 0.3)]),
            dom("bg", &[0, 1], &[1], &[(1, 0.3)]),
        ];
        // The background at the weight of the foreground: packed, the foreground would get
        // half a core only when both want more, still more than its 30%: packed.
        d[0].foreground = true;
        d[0].weight = 100;
        d[1].weight = 100;
        assert_eq!(decide(&p, &cores(&[0.3, 0.3]), &d).len(), 1);
        // The foreground uses 65% and the other is as heavy as it: kept apart.
        let mut d = [
            dom("fg", &[0, 1], &[0], &[(0, 0.65)]),
            dom("bg", &[0, 1], &[1], &[(1, 0.05)]),
        ];
        d[0].foreground = true;
        d[1].weight = 10_000;
        assert!(decide(&p, &cores(&[0.65, 0.05]), &d).is_empty());
    }

    #[test]
    fn fixed_moves_nothing() {
        let d = [
            dom("a", &[0, 1], &[0], &[(0, 0.5)]),
            dom("b", &[0, 1], &[0], &[(0, 0.5)]),
        ];
        assert!(decide(&params(Policy::Fixed), &cores(&[1.0, 0.0]), &d).is_empty());
    }

    /// A random machine: up to 16 cores, some of them a realtime domain's (not given to the
    /// scheduler), domains with random allowed cores, placements and loads.
    fn machine() -> impl Strategy<Value = (Vec<Core>, Vec<u32>, Vec<DomainView>)> {
        (2u32..=16)
            .prop_flat_map(|n| {
                let rt = proptest::collection::btree_set(0..n, 0..(n as usize / 2));
                let doms = proptest::collection::vec(
                    (
                        proptest::collection::btree_set(0..n, 1..=n as usize),
                        proptest::collection::btree_set(0..n, 1..=n as usize),
                        proptest::collection::vec(0.0f64..1.0, n as usize),
                        any::<bool>(),
                        proptest::option::of(0u64..10_000),
                        1u32..1000,
                    ),
                    0..8,
                );
                (
                    Just(n),
                    rt,
                    doms,
                    proptest::collection::vec(0.0f64..0.2, n as usize),
                )
            })
            .prop_map(|(n, rt, doms, other)| {
                let rt: Vec<u32> = rt.into_iter().collect();
                let mut views = Vec::new();
                for (i, (allowed, cpus, use_, fg, since, weight)) in doms.into_iter().enumerate() {
                    let allowed: Vec<u32> = allowed.into_iter().collect();
                    let cpus: Vec<u32> = cpus.into_iter().filter(|c| allowed.contains(c)).collect();
                    let usage = cpus
                        .iter()
                        .map(|&c| (c, use_[c as usize] / cpus.len() as f64))
                        .collect();
                    views.push(DomainView {
                        name: format!("d{i}"),
                        allowed: allowed.clone(),
                        cpus: if cpus.is_empty() { allowed } else { cpus },
                        usage,
                        weight,
                        foreground: fg && i == 0,
                        since_move_ms: since,
                    });
                }
                let mut load = other;
                for d in &views {
                    for (c, u) in &d.usage {
                        load[*c as usize] += u;
                    }
                }
                let cores = (0..n)
                    .filter(|c| !rt.contains(c))
                    .map(|c| Core {
                        cpu: c,
                        load: load[c as usize].min(1.0),
                    })
                    .collect();
                (cores, rt, views)
            })
    }

    proptest! {
        #[test]
        fn placements_stay_allowed_off_realtime_cores_and_never_empty(
            (cores, rt, doms) in machine(),
            policy in prop::sample::select(Policy::ALL.to_vec()),
        ) {
            let p = params(policy);
            for m in decide(&p, &cores, &doms) {
                let d = doms.iter().find(|d| d.name == m.domain).unwrap();
                prop_assert!(!m.to.is_empty(), "{m:?}");
                prop_assert!(m.to.iter().all(|c| d.allowed.contains(c)), "{m:?} {d:?}");
                prop_assert!(m.to.iter().all(|c| !rt.contains(c)), "{m:?} on a realtime core {rt:?}");
                prop_assert!(m.to.iter().all(|c| cores.iter().any(|k| k.cpu == *c)));
                prop_assert!(m.to.windows(2).all(|w| w[0] < w[1]), "{m:?}");
            }
        }
    }
}
