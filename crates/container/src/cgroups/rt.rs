//! Real-time budgets with cgroup v1 RT group scheduling (`cpu.rt_runtime_us` per
//! `cpu.rt_period_us`). A new group starts with runtime 0, where `SCHED_FIFO` is refused
//! (EPERM); and the kernel takes a group's runtime only if the budgets of its children fit in
//! it, as fractions of their periods. So a container's budget is granted from the top down:
//! every ancestor below the hierarchy's root is raised, first, to what its children then need
//! ([`raise`]); when the container goes, each is lowered back to what its remaining children
//! need ([`release`]). [`needed`] is the arithmetic, the kernel's own (to_ratio, BW_SHIFT 20).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Context, Error, Result};

/// This host, as a profile is checked against it: its online CPUs, the real-time share of
/// CPU time it grants (`kernel.sched_rt_runtime_us` / `sched_rt_period_us`), whether its
/// cpuset is cgroup v1's and whether a group can have a real-time budget of its own.
pub fn host() -> domain::profile::Host {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let mut h = domain::profile::Host::default();
    let online = online_cpus();
    if !online.is_empty() {
        h.cpus = Some(online);
    }
    if let Ok(r) = read("/proc/sys/kernel/sched_rt_runtime_us").trim().parse() {
        h.rt_runtime_us = r;
    }
    if let Ok(p) = read("/proc/sys/kernel/sched_rt_period_us").trim().parse() {
        h.rt_period_us = p;
    }
    let hs = super::hierarchies().unwrap_or_default();
    let v1 = |c: &str| {
        hs.iter().find_map(|h| match h {
            super::Hierarchy::V1 { mount, options, .. } if options.split(',').any(|o| o == c) => {
                Some(mount.clone())
            }
            _ => None,
        })
    };
    h.cpuset_v1 = v1("cpuset").is_some();
    h.exclusive_cpus = h.cpuset_v1
        || hs.iter().any(|h| {
            matches!(h, super::Hierarchy::Unified(root) if root.join("cpuset.cpus.isolated").exists())
        });
    h.rt_group_budgets = v1("cpu").is_some_and(|m| m.join("cpu.rt_runtime_us").exists());
    h
}

/// This host's online CPUs (empty when /sys does not say): one file, where that is all a
/// caller needs of [`host`].
pub fn online_cpus() -> Vec<u32> {
    let online = fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    domain::profile::cpu_list(online.trim())
}

/// The kernel's fixed point for bandwidth ratios.
const BW_SHIFT: u32 = 20;

/// runtime / period in the kernel's fixed point; -1 (no limit) counts as the whole period.
fn ratio(runtime: i64, period: u64) -> u128 {
    let period = period.max(1) as u128;
    let runtime = if runtime < 0 { period } else { runtime as u128 };
    (runtime << BW_SHIFT) / period
}

/// The runtime a group of period `period` needs for children of (runtime, period) budgets.
pub fn needed(period: u64, children: &[(i64, u64)]) -> u64 {
    let sum: u128 = children.iter().map(|&(r, p)| ratio(r, p)).sum();
    // The smallest r with (r << BW_SHIFT) / period >= sum.
    (sum * period as u128).div_ceil(1 << BW_SHIFT) as u64
}

fn read_num(p: &Path) -> Result<i64> {
    let text = fs::read_to_string(p).ctx(|| format!("reading {}", p.display()))?;
    text.trim().parse().map_err(|_| {
        Error::Msg(format!(
            "{}: {:?} is not a number",
            p.display(),
            text.trim()
        ))
    })
}

/// A group's (runtime, period).
fn budget(dir: &Path) -> Result<(i64, u64)> {
    Ok((
        read_num(&dir.join("cpu.rt_runtime_us"))?,
        read_num(&dir.join("cpu.rt_period_us"))? as u64,
    ))
}

/// The budgets of `dir`'s children, but `skip`'s.
fn children(dir: &Path, skip: Option<&Path>) -> Result<Vec<(i64, u64)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).ctx(|| format!("reading {}", dir.display()))? {
        let p = e.ctx(|| format!("reading {}", dir.display()))?.path();
        if p.is_dir() && Some(p.as_path()) != skip && p.join("cpu.rt_runtime_us").exists() {
            out.push(budget(&p)?);
        }
    }
    Ok(out)
}

/// Budgets in the hierarchy at `mount` change one container at a time (between two runtimes
/// that grant at once, the second would count on a sibling's budget before it was written):
/// held from the grant until the container's own budget is written, and while one is given
/// back.
pub fn lock(mount: &Path) -> Result<fs::File> {
    crate::util::flock(mount, true).ctx(|| format!("locking {}", mount.display()))
}

/// The groups from just below `mount` down to `dir`'s parent, top first.
pub(super) fn ancestors(mount: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(mount) && *a != mount)
        .map(Path::to_path_buf)
        .collect();
    out.reverse();
    out
}

/// Make room for `dir` (a new group in the cpu hierarchy at `mount`) to get `runtime` µs per
/// `period` µs: every ancestor raised to what its children need with it. Ancestors keep what
/// they had when it is already enough.
pub fn raise(mount: &Path, dir: &Path, runtime: i64, period: u64) -> Result<()> {
    let chain = ancestors(mount, dir);
    // Bottom up: what each ancestor needs, given the one below it needs that.
    let mut want = vec![0u64; chain.len()];
    let mut below = (dir.to_path_buf(), runtime, period);
    for (i, a) in chain.iter().enumerate().rev() {
        let (now, p) = budget(a)?;
        let mut kids = children(a, Some(&below.0))?;
        kids.push((below.1, below.2));
        let need = needed(p, &kids);
        want[i] = need;
        below = (a.clone(), now.max(need as i64), p);
    }
    // Top down: a parent's budget first, then its child's.
    for (a, need) in chain.iter().zip(want) {
        let (now, _) = budget(a)?;
        if now >= 0 && (now as u64) < need {
            let f = a.join("cpu.rt_runtime_us");
            fs::write(&f, need.to_string()).map_err(|e| {
                Error::Io {
                    what: format!(
                        "granting a real-time budget of {runtime} µs per {period} µs: {} cannot be raised to {need} (its parent has no more to give)",
                        f.display()
                    ),
                    source: e,
                }
            })?;
        }
    }
    Ok(())
}

/// `dir` is gone: lower its ancestors, bottom up, to what their remaining children need
/// (best effort: a group the kernel will not lower keeps its budget).
pub fn release(mount: &Path, dir: &Path) {
    for a in ancestors(mount, dir).iter().rev() {
        let (Ok((now, p)), Ok(kids)) = (budget(a), children(a, None)) else {
            continue;
        };
        let need = needed(p, &kids);
        if now > need as i64 {
            // The kernel counts a removed group's budget until the group is released, a
            // little after rmdir returns (EINVAL until then): try again for a while.
            let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while fs::write(a.join("cpu.rt_runtime_us"), need.to_string()).is_err()
                && std::time::Instant::now() < end
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_needs_what_its_children_take_of_its_period() {
        assert_eq!(needed(1_000_000, &[]), 0);
        assert_eq!(needed(1_000_000, &[(100_000, 1_000_000)]), 100_000);
        // Two children at 10% and 25% of their own periods: 35% of the parent's.
        assert_eq!(
            needed(1_000_000, &[(10_000, 100_000), (250_000, 1_000_000)]),
            350_000
        );
        // Rounded up: what is written is always enough for the kernel's check.
        let n = needed(1_000_000, &[(1, 3)]);
        assert!(((n as u128) << BW_SHIFT) / 1_000_000 >= ratio(1, 3), "{n}");
        // No limit (-1) takes the whole period.
        assert_eq!(needed(1_000_000, &[(-1, 1_000_000)]), 1_000_000);
    }

    fn group(dir: &Path, runtime: i64, period: u64) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("cpu.rt_runtime_us"), runtime.to_string()).unwrap();
        fs::write(dir.join("cpu.rt_period_us"), period.to_string()).unwrap();
    }

    fn runtime(dir: &Path) -> i64 {
        read_num(&dir.join("cpu.rt_runtime_us")).unwrap()
    }

    #[test]
    fn a_budget_is_granted_from_the_top_down_and_given_back() {
        // A fake tree: /cpu (the root), /cpu/cellvisor with a sibling holding 10%, and the
        // new container's group.
        let t = tempfile::tempdir().unwrap();
        let mount = t.path().join("cpu");
        group(&mount, 950_000, 1_000_000);
        let cv = mount.join("cellvisor");
        group(&cv, 100_000, 1_000_000);
        group(&cv.join("other"), 100_000, 1_000_000);
        let deep = cv.join("pod");
        group(&deep, 0, 1_000_000);
        let me = deep.join("c1");
        group(&me, 0, 1_000_000);
        raise(&mount, &me, 200_000, 1_000_000).unwrap();
        assert_eq!(runtime(&deep), 200_000);
        assert_eq!(runtime(&cv), 300_000);
        // The root is not one of ours to change.
        assert_eq!(runtime(&mount), 950_000);
        // Enough already: nothing lowered by a smaller ask.
        raise(&mount, &me, 50_000, 1_000_000).unwrap();
        assert_eq!(runtime(&cv), 300_000);
        fs::remove_dir_all(&me).unwrap();
        release(&mount, &me);
        assert_eq!(runtime(&deep), 0);
        assert_eq!(runtime(&cv), 100_000);
    }
}
