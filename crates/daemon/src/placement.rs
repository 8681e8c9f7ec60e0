//! The host's side of the realtime domains' cores: the daemon (and every domain start it
//! forks) runs off them, and so do the device's interrupts, where /proc/irq lets them be
//! moved, and the kernel's unbound work (its workqueues' cpumask); and the cores, idle, poll
//! instead of halting (their per-CPU PM QoS resume latency set to none: the cpuidle
//! governor's shallowest state, where a wake-up from a halted vCPU or a deep C-state costs
//! tens of µs) — the price is power. Every file changed is kept with what it held in one
//! record for the host (`/run/cellvisor-placement/record.json`, under a lock), with the state
//! directories of the daemons that hold it; it is put back when the last of them ends with
//! nothing up (a holder whose state directory is gone no longer counts).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use domain::profile::{cpu_list, cpu_list_string};
use domain::Profile;

/// The cores the profile's realtime domains own.
pub fn owned_cores(p: &Profile) -> Vec<u32> {
    let mut owned: Vec<u32> = p
        .domains
        .iter()
        .filter(|d| d.realtime.is_some())
        .filter_map(|d| d.cpus.as_deref())
        .flat_map(cpu_list)
        .collect();
    owned.sort_unstable();
    owned.dedup();
    owned
}

/// Where an interrupt now on `current` goes: off the `owned` cores, onto what is left of its
/// own (or, when nothing is, onto the `online` cores no realtime domain owns). None when it
/// is off them already.
pub fn irq_target(current: &[u32], owned: &[u32], online: &[u32]) -> Option<Vec<u32>> {
    if !current.iter().any(|c| owned.contains(c)) {
        return None;
    }
    let keep: Vec<u32> = current
        .iter()
        .copied()
        .filter(|c| !owned.contains(c))
        .collect();
    if !keep.is_empty() {
        return Some(keep);
    }
    let rest: Vec<u32> = online
        .iter()
        .copied()
        .filter(|c| !owned.contains(c))
        .collect();
    (!rest.is_empty()).then_some(rest)
}

/// CPUs as the kernel's hex cpumask: 32-bit words, most significant first, comma-separated.
pub fn hex_mask(cpus: &[u32]) -> String {
    let words = cpus.iter().map(|c| c / 32 + 1).max().unwrap_or(1) as usize;
    let mut w = vec![0u32; words];
    for c in cpus {
        w[(c / 32) as usize] |= 1 << (c % 32);
    }
    let mut parts: Vec<String> = w.iter().rev().map(|x| format!("{x:08x}")).collect();
    // The first word without its leading zeros.
    parts[0] = format!("{:x}", w[words - 1]);
    parts.join(",")
}

/// What [`keep_off`] did with the interrupts and the cores' idle.
#[derive(Debug, Default)]
pub struct Moved {
    pub moved: usize,
    /// What stays as it was.
    pub refused: usize,
    /// Why, for the first few.
    pub why: Vec<String>,
}

impl std::fmt::Display for Moved {
    /// `3 interrupts and idle states moved for the realtime cores; 1 could not be (...)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} interrupts and idle states moved for the realtime cores",
            self.moved
        )?;
        if self.refused > 0 {
            write!(
                f,
                "; {} could not be ({})",
                self.refused,
                self.why.join(", ")
            )?;
        }
        Ok(())
    }
}

fn online() -> Vec<u32> {
    container::cgroups::rt::online_cpus()
}

/// Run this process (and what it forks from now on) on `cpus`; false when none of them can be.
fn run_on(cpus: impl IntoIterator<Item = u32>) -> Result<bool, String> {
    let mut set = nix::sched::CpuSet::new();
    let mut any = false;
    for c in cpus {
        any |= set.set(c as usize).is_ok();
    }
    if any {
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .map_err(|e| format!("setting this process's CPUs: {e}"))?;
    }
    Ok(any)
}

/// Keep the daemon and the interrupts off the realtime domains' cores of `p`; `state` keeps
/// the interrupts' first affinities for [`restore`].
pub fn keep_off(p: &Profile, state: &Path) -> Result<Moved, String> {
    let owned = owned_cores(p);
    if owned.is_empty() {
        return Ok(Moved::default());
    }
    let online = online();
    if !run_on(online.iter().copied().filter(|c| !owned.contains(c)))? {
        return Err("the realtime domains own every CPU: no core left for the daemon".into());
    }
    // What each file holds and is to hold; the record of what they held is written before
    // any of them.
    let mut moves: Vec<(String, PathBuf, String)> = Vec::new();
    let irqs = std::fs::read_dir("/proc/irq")
        .into_iter()
        .flatten()
        .flatten();
    for e in irqs.filter(|e| e.path().is_dir()) {
        let file = e.path().join("smp_affinity_list");
        let Ok(now) = std::fs::read_to_string(&file) else {
            continue;
        };
        if let Some(to) = irq_target(&cpu_list(now.trim()), &owned, &online) {
            let what = format!("irq {}", e.file_name().to_string_lossy());
            moves.push((what, file, cpu_list_string(&to)));
        }
    }
    for c in &owned {
        let file = PathBuf::from(format!(
            "/sys/devices/system/cpu/cpu{c}/power/pm_qos_resume_latency_us"
        ));
        if file.exists() {
            moves.push((format!("cpu {c}'s idle"), file, "n/a".into()));
        }
    }
    // Unbound kernel work (writeback, ...) on the other cores too.
    let wq = PathBuf::from("/sys/devices/virtual/workqueue/cpumask");
    let rest: Vec<u32> = online
        .iter()
        .copied()
        .filter(|c| !owned.contains(c))
        .collect();
    if wq.exists() {
        moves.push(("unbound workqueues".into(), wq, hex_mask(&rest)));
    }
    let now: Vec<(String, String)> = moves
        .iter()
        .filter_map(|(_, f, _)| {
            let v = std::fs::read_to_string(f).ok()?;
            Some((f.display().to_string(), v.trim().to_string()))
        })
        .collect();
    with_record(|r| r.hold(&state.display().to_string(), now))?;
    let mut out = Moved::default();
    for (what, file, to) in moves {
        match std::fs::write(&file, to) {
            Ok(()) => out.moved += 1,
            Err(err) => {
                out.refused += 1;
                if out.why.len() < 3 {
                    out.why.push(format!("{what}: {err}"));
                }
            }
        }
    }
    Ok(out)
}

/// What the placement changed on this host, and who holds it.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The state directories of the daemons (and benchmarks) that placed the host.
    pub holders: BTreeSet<String>,
    /// Each file changed and what it held before the first holder.
    pub saved: BTreeMap<String, String>,
}

impl Record {
    /// `holder` places the host; `now` is what the files it changes hold (kept for those not
    /// kept already: an earlier holder's change is not taken for the original).
    pub fn hold(&mut self, holder: &str, now: Vec<(String, String)>) {
        self.holders.insert(holder.to_string());
        for (f, v) in now {
            self.saved.entry(f).or_insert(v);
        }
    }

    /// `holder` is done (and so is every holder `alive` says is gone): when nobody holds the
    /// record any more, what to write back.
    pub fn release(&mut self, holder: &str, alive: impl Fn(&str) -> bool) -> Vec<(String, String)> {
        self.holders.remove(holder);
        self.holders.retain(|h| alive(h));
        if !self.holders.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut self.saved).into_iter().collect()
    }
}

/// The host's record of what the placement changed.
const RECORD_DIR: &str = "/run/cellvisor-placement";

/// Run `f` on the host's record, under its lock; the record saved after (removed when empty).
fn with_record<T>(f: impl FnOnce(&mut Record) -> T) -> Result<T, String> {
    let dir = Path::new(RECORD_DIR);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let _lock = container::cgroups::rt::lock(dir).map_err(|e| domain::chain(&e))?;
    let file = dir.join("record.json");
    let mut r: Record = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let out = f(&mut r);
    if r == Record::default() {
        let _ = std::fs::remove_file(&file);
    } else {
        let data = serde_json::to_vec(&r).unwrap_or_default();
        container::util::write_atomic(&file, &data).map_err(|e| domain::chain(&e))?;
    }
    Ok(out)
}

/// `state`'s holder is done: this process runs on every CPU again, and when it was the last
/// holder, what [`keep_off`] changed is put back.
pub fn restore(state: &Path) {
    let _ = run_on(online());
    let back = with_record(|r| r.release(&state.display().to_string(), |h| Path::new(h).exists()))
        .unwrap_or_default();
    for (file, was) in back {
        // Only the kind of files keep_off changes.
        if file.starts_with("/proc/irq/")
            || file.starts_with("/sys/devices/system/cpu/")
            || file.starts_with("/sys/devices/virtual/workqueue/")
        {
            let _ = std::fs::write(&file, was);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupts_leave_the_realtime_cores() {
        let online = [0, 1, 2, 3];
        // Off the owned core, onto what is left of its own.
        assert_eq!(
            irq_target(&[0, 1, 2, 3], &[3], &online),
            Some(vec![0, 1, 2])
        );
        // Only on owned cores: onto every core no realtime domain owns.
        assert_eq!(irq_target(&[3], &[2, 3], &online), Some(vec![0, 1]));
        // Already off them: left alone.
        assert_eq!(irq_target(&[0], &[3], &online), None);
        // Nowhere else to go.
        assert_eq!(irq_target(&[0], &[0], &[0]), None);
    }

    #[test]
    fn the_last_holder_puts_the_host_back() {
        let mut r = Record::default();
        r.hold("/a", vec![("/wq".into(), "3".into())]);
        // A second holder sees the first one's change: not taken for the original.
        r.hold(
            "/b",
            vec![("/wq".into(), "1".into()), ("/irq".into(), "0-1".into())],
        );
        assert!(r.release("/a", |_| true).is_empty());
        let back = r.release("/b", |_| true);
        assert_eq!(
            back,
            [
                ("/irq".to_string(), "0-1".to_string()),
                ("/wq".into(), "3".into())
            ]
        );
        assert_eq!(r, Record::default());
        // A holder that died without letting go no longer counts.
        r.hold("/gone", vec![("/wq".into(), "3".into())]);
        r.hold("/c", vec![]);
        assert_eq!(r.release("/c", |h| h != "/gone").len(), 1);
    }

    #[test]
    fn cpumasks_in_the_kernels_hex() {
        assert_eq!(hex_mask(&[0]), "1");
        assert_eq!(hex_mask(&[0, 2, 3]), "d");
        assert_eq!(hex_mask(&[0, 33]), "2,00000001");
    }
}
