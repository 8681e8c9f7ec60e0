//! N microVMs at once (the idle test guest: one line, then halted), and what they cost in
//! host memory: per VMM process its proportional set size, the part of it that is guest
//! memory the guest touched, and the rest — the VMM's own overhead.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::host::{mem_available_kib, pss_and_resident_of};
use crate::{io, Error, Result};

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

/// `n` VMMs (`vmm vm run`) booting `kernel` with `mem` bytes each, measured once all are up;
/// each must then stop cleanly on SIGTERM.
pub fn run(vmm: &Path, kernel: &Path, n: usize, mem: u64) -> Result<Report> {
    let work = std::env::temp_dir().join(format!("cellvisor-bench-vms-{}", std::process::id()));
    io(std::fs::create_dir_all(&work), || {
        format!("creating {}", work.display())
    })?;
    let before = mem_available_kib();
    let mut children: Vec<Child> = Vec::new();
    let r = (|| -> Result<Report> {
        for i in 0..n {
            let c = io(
                Command::new(vmm)
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
                    .spawn(),
                || "starting a VMM".into(),
            )?;
            children.push(c);
        }
        let end = Instant::now() + Duration::from_secs(30);
        for i in 0..n {
            while !std::fs::read_to_string(work.join(format!("vm{i}.log")))
                .unwrap_or_default()
                .contains(" up")
            {
                if Instant::now() > end {
                    return Err(Error::Msg(format!("VM {i} did not come up")));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let during = mem_available_kib();
        let mut samples = Vec::new();
        for c in &children {
            let pid = c.id();
            let (pss, guest) = io(pss_and_resident_of(pid, mem >> 10), || {
                format!("reading /proc/{pid}/smaps")
            })?;
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
            host: crate::host::facts(),
            overhead_kib_p50: crate::stats::median(&over).unwrap_or(f64::NAN),
            overhead_kib_max: samples.iter().map(|s| s.overhead_kib).max().unwrap_or(0),
            total_pss_mib: samples.iter().map(|s| s.pss_kib).sum::<u64>() as f64 / 1024.0,
            mem_available_drop_mib: (before - during).max(0.0) / 1024.0,
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
        return Err(Error::Msg(format!(
            "VMs that did not stop cleanly: {}",
            bad.join(", ")
        )));
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
        crate::stats::median(
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
