//! `cellvisor bench vms`: N microVMs at once (the idle test guest: one line, then halted), and
//! what they cost in host memory: per VMM process its proportional set size, the part of it
//! that is guest memory the guest touched, and the rest — the VMM's own overhead.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct VmSample {
    pub pss_kib: u64,
    pub guest_touched_kib: u64,
    pub overhead_kib: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub vms: usize,
    pub guest_mem_mib: u64,
    pub host: serde_json::Value,
    pub samples: Vec<VmSample>,
    pub overhead_kib_p50: f64,
    pub overhead_kib_max: u64,
    pub total_pss_mib: f64,
    /// MemAvailable before the VMs minus while they run.
    pub mem_available_drop_mib: f64,
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// (total PSS, RSS of the guest memory mapping) of a VMM process, KiB.
fn measure(pid: u32, guest_kib: u64) -> Result<(u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("reading /proc/{pid}/smaps"))?;
    let (mut pss, mut guest) = (0, 0);
    let mut size = 0;
    for l in smaps.lines() {
        let num = |l: &str| -> u64 {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        if l.starts_with("Size:") {
            size = num(l);
        } else if l.starts_with("Rss:") && size == guest_kib {
            guest += num(l);
        } else if l.starts_with("Pss:") {
            pss += num(l);
        }
    }
    Ok((pss, guest))
}

pub fn run(kernel: &Path, n: usize, mem: u64) -> Result<Report> {
    let me = std::env::current_exe()?;
    let work = std::env::temp_dir().join(format!("cellvisor-bench-vms-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let before = mem_available_kib();
    let mut children: Vec<Child> = Vec::new();
    let r = (|| -> Result<Report> {
        for i in 0..n {
            let c = Command::new(&me)
                .args([
                    "vm",
                    "run",
                    "--mem",
                    &format!("{}M", mem >> 20),
                    "--console",
                ])
                .arg(work.join(format!("vm{i}.log")))
                .arg("--kernel")
                .arg(kernel)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting a VMM")?;
            children.push(c);
        }
        let end = Instant::now() + Duration::from_secs(30);
        for i in 0..n {
            while !std::fs::read_to_string(work.join(format!("vm{i}.log")))
                .unwrap_or_default()
                .contains(" up")
            {
                if Instant::now() > end {
                    bail!("VM {i} did not come up");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let during = mem_available_kib();
        let mut samples = Vec::new();
        for c in &children {
            let (pss, guest) = measure(c.id(), mem >> 10)?;
            samples.push(VmSample {
                pss_kib: pss,
                guest_touched_kib: guest,
                overhead_kib: pss.saturating_sub(guest),
            });
        }
        let over: Vec<f64> = samples.iter().map(|s| s.overhead_kib as f64).collect();
        Ok(Report {
            benchmark: "microVMs at once: host memory",
            vms: n,
            guest_mem_mib: mem >> 20,
            host: bench::start::host_facts(),
            overhead_kib_p50: bench::stats::median(&over).unwrap_or(f64::NAN),
            overhead_kib_max: samples.iter().map(|s| s.overhead_kib).max().unwrap_or(0),
            total_pss_mib: samples.iter().map(|s| s.pss_kib).sum::<u64>() as f64 / 1024.0,
            mem_available_drop_mib: before.saturating_sub(during) as f64 / 1024.0,
            samples,
        })
    })();
    // Stop them all; each must end cleanly on SIGTERM.
    for c in &children {
        // SAFETY: SIGTERM to our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    let mut bad = Vec::new();
    for mut c in children {
        match c.wait() {
            Ok(s) if s.code() == Some(128 + libc::SIGTERM) => {}
            other => bad.push(format!("{other:?}")),
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let report = r?;
    if !bad.is_empty() {
        return Err(anyhow!("VMs that did not stop cleanly: {}", bad.join(", ")));
    }
    Ok(report)
}

pub fn table(r: &Report) -> String {
    format!(
        "{} microVMs of {} MiB (idle guest) running at once\n\
         VMM overhead per VM (PSS minus guest-touched memory): p50 {:.0} KiB, max {} KiB\n\
         guest-touched memory per VM: p50 {:.0} KiB\n\
         total PSS of all VMM processes: {:.1} MiB; MemAvailable dropped by {:.1} MiB\n",
        r.vms,
        r.guest_mem_mib,
        r.overhead_kib_p50,
        r.overhead_kib_max,
        bench::stats::median(
            &r.samples
                .iter()
                .map(|s| s.guest_touched_kib as f64)
                .collect::<Vec<_>>()
        )
        .unwrap_or(f64::NAN),
        r.total_pss_mib,
        r.mem_available_drop_mib
    )
}
