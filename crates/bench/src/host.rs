//! Readings of the host the benchmarks measure with: CPU time, memory (MemAvailable, a
//! process's PSS or its guest memory's resident part, a cgroup's charge), storage, and the
//! facts a report carries. Each reads /proc, /sys or a directory, and changes nothing.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A file's text, empty when it cannot be read.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The jiffies of all CPUs, as /proc/stat's first line lists them (user, nice, system, idle,
/// iowait, irq, softirq, steal, ...).
pub fn cpu_stat() -> Vec<u64> {
    read(Path::new("/proc/stat"))
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect()
}

/// (busy, total) jiffies of all CPUs.
pub fn cpu_jiffies() -> (u64, u64) {
    let v = cpu_stat();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The host's CPU use over `d`, % of all CPUs.
pub fn cpu_use(d: Duration) -> f64 {
    let (b0, t0) = cpu_jiffies();
    std::thread::sleep(d);
    let (b1, t1) = cpu_jiffies();
    100.0 * (b1 - b0) as f64 / (t1 - t0).max(1) as f64
}

/// The /proc/meminfo fields `keys` (like `MemTotal:`), KiB each (0 when absent).
fn meminfo_kib<const N: usize>(keys: [&str; N]) -> [f64; N] {
    let info = read(Path::new("/proc/meminfo"));
    keys.map(|k| {
        info.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    })
}

/// MemTotal − MemAvailable, KiB.
pub fn host_used_kib() -> f64 {
    let [total, avail] = meminfo_kib(["MemTotal:", "MemAvailable:"]);
    total - avail
}

/// `name` on PATH or in the system directories.
pub fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// The resident set size of process `pid`, KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    read(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// How many descriptors process `pid` ("self" for this one) has open.
pub fn fd_count(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A process's descriptors at rest: the fewest seen over 100 ms — or, with `goal`, as soon
/// as no more than it, within 2 s (a connection just answered can still be closing).
pub fn steady_fds(pid: u32, goal: Option<usize>) -> usize {
    let (n, wait) = match goal {
        None => (20, std::time::Duration::from_millis(5)),
        Some(_) => (200, std::time::Duration::from_millis(10)),
    };
    let mut least = usize::MAX;
    for _ in 0..n {
        least = least.min(fd_count(&pid.to_string()));
        if goal.is_some_and(|g| least <= g) {
            break;
        }
        std::thread::sleep(wait);
    }
    least
}

/// The proportional set size of process `pid`, KiB.
pub fn pss_kib(pid: u32) -> f64 {
    read(Path::new(&format!("/proc/{pid}/smaps_rollup")))
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The cgroup directory of `path` for `controller` (v1), or the unified one (v2).
pub fn cgroup_dir(controller: &str, path: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.join(path.trim_start_matches('/'))
    } else {
        root.join(controller).join(path.trim_start_matches('/'))
    }
}

/// The memory the cgroup at `path` charges, KiB (v2 `memory.current`, v1 `usage_in_bytes`).
pub fn cgroup_memory_kib(path: &str) -> Option<f64> {
    let d = cgroup_dir("memory", path);
    let v = read(&d.join("memory.current"));
    let v = if v.is_empty() {
        read(&d.join("memory.usage_in_bytes"))
    } else {
        v
    };
    v.trim().parse::<f64>().ok().map(|b| b / 1024.0)
}

/// The processes in the cgroup at `path`.
pub fn cgroup_pids(path: &str) -> Vec<u32> {
    read(&cgroup_dir("memory", path).join("cgroup.procs"))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Bytes under `p` (files only, each counted once by its allocated blocks), KiB.
pub fn du_kib(p: &Path) -> f64 {
    let mut total = 0u64;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total as f64 / 1024.0
}

/// MemAvailable, KiB.
pub fn mem_available_kib() -> f64 {
    meminfo_kib(["MemAvailable:"])[0]
}

/// A process's PSS, and the resident part of its mappings of exactly `size_kib` (a VMM's
/// guest memory), KiB.
pub fn pss_and_resident_of(pid: u32, size_kib: u64) -> std::io::Result<(u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let (mut pss, mut resident, mut size) = (0, 0, 0);
    let num = |l: &str| -> u64 {
        l.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    for l in smaps.lines() {
        if l.starts_with("Size:") {
            size = num(l);
        } else if l.starts_with("Rss:") && size == size_kib {
            resident += num(l);
        } else if l.starts_with("Pss:") {
            pss += num(l);
        }
    }
    Ok((pss, resident))
}

/// Bytes of the unnamed files (a VM's copy-on-write layers) that process `pid` holds, KiB.
pub fn unnamed_files_kib(pid: u32) -> f64 {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return 0.0;
    };
    rd.flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().ends_with(" (deleted)"))
                .unwrap_or(false)
        })
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .filter(|m| m.is_file())
        .map(|m| (m.blocks() * 512) as f64 / 1024.0)
        .sum()
}

/// Kernel, CPU, cgroup layout: what the figures depend on.
pub fn facts() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else if Path::new("/sys/fs/cgroup/unified").exists() {
        "v1 (hybrid)"
    } else {
        "v1"
    };
    serde_json::json!({
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "cpu": cpu,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cgroup": cgroup,
        "nesting": nesting(&read("/proc/cpuinfo"), Path::new("/dev/kvm").exists()),
    })
}

/// Where this machine sits: bare metal or a VM (the CPU's `hypervisor` flag), and what its
/// /dev/kvm runs on (the CPU's vmx/svm, or neither: a nested "PVM"-style KVM that emulates
/// guest ring 0).
pub(crate) fn nesting(cpuinfo: &str, kvm: bool) -> String {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let hw = ["vmx", "svm"].into_iter().find(|f| flags.contains(f));
    let place = if flags.contains(&"hypervisor") {
        "a VM"
    } else {
        "bare metal"
    };
    let kvm = match (kvm, hw) {
        (false, _) => "no /dev/kvm".to_string(),
        (true, Some(f)) => format!("/dev/kvm on {f}"),
        (true, None) => "/dev/kvm without vmx/svm (guest ring 0 emulated, PVM-style)".into(),
    };
    format!("{place}; {kvm}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_figures_read() {
        let (b, t) = cpu_jiffies();
        assert!(t > 0 && b <= t);
        assert!(host_used_kib() > 0.0);
        assert!(mem_available_kib() > 0.0);
        assert!(pss_kib(std::process::id()) > 0.0);
        let (pss, _) = pss_and_resident_of(std::process::id(), 0).unwrap();
        assert!(pss > 0);
    }

    #[test]
    fn nesting_is_named_from_the_cpu_flags() {
        let info = |flags: &str| format!("processor\t: 0\nflags\t\t: fpu {flags} sse\n");
        assert_eq!(
            nesting(&info("hypervisor"), true),
            "a VM; /dev/kvm without vmx/svm (guest ring 0 emulated, PVM-style)"
        );
        assert_eq!(
            nesting(&info("hypervisor svm"), true),
            "a VM; /dev/kvm on svm"
        );
        assert_eq!(nesting(&info("vmx"), true), "bare metal; /dev/kvm on vmx");
        assert_eq!(nesting(&info("vmx"), false), "bare metal; no /dev/kvm");
        assert!(facts()["nesting"].as_str().is_some_and(|s| !s.is_empty()));
    }
}
