//! `cellvisor bench boot`: VMM process start to the first guest userspace line, our VMM and
//! QEMU's microvm machine side by side on the same kernel, initramfs and command line,
//! alternating. The initramfs's /init prints `GUEST-UP <uptime>` first thing: the guest's own
//! uptime is the kernel's share; the rest of the wall time is the VMM's (and firmware's).
//! Needs a /dev/kvm that boots a stock kernel (real hardware, or scripts/kvm-test-host.sh).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
// The command line both VMMs boot with.
use bench::vm::CMDLINE;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct VmmReport {
    pub vmm: String,
    /// Process start to the GUEST-UP line, ms (every run).
    pub wall_ms: Vec<f64>,
    /// The guest's uptime at GUEST-UP, ms.
    pub guest_ms: Vec<f64>,
    pub wall_ms_p50: f64,
    pub guest_ms_p50: f64,
    /// The median of (wall - guest): what the VMM and its firmware took.
    pub vmm_ms_p50: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub kernel: String,
    pub cmdline: &'static str,
    pub host: serde_json::Value,
    pub vmms: Vec<VmmReport>,
}

/// One boot: (wall ms to GUEST-UP, guest uptime ms there). A VM that has not printed it and
/// ended within two minutes is killed.
fn boot(cmd: &mut Command) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the VMM")?;
    let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("GUEST-UP ").nth(1) {
                let up: f64 = rest.trim().parse().unwrap_or(f64::NAN);
                let _ = tx.send((t0.elapsed().as_secs_f64() * 1e3, up * 1e3));
            }
        }
    });
    let end = t0 + Duration::from_secs(120);
    let found = rx
        .recv_timeout(end.saturating_duration_since(Instant::now()))
        .ok();
    while child.try_wait()?.is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the VM did not end within two minutes");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    found.ok_or_else(|| anyhow!("the guest never printed GUEST-UP"))
}

pub fn run(
    kernel: &Path,
    initrd: &Path,
    rounds: usize,
    qemu: Option<&Path>,
    qemu_firmware: Option<&Path>,
) -> Result<Report> {
    let me = std::env::current_exe()?;
    let ours = || {
        let mut c = Command::new(&me);
        c.args([
            "vm",
            "run",
            "--mem",
            "256M",
            "--cmdline",
            CMDLINE,
            "--kernel",
        ])
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd);
        c
    };
    let peer = |q: &PathBuf| {
        let mut c = Command::new(q);
        if let Some(fw) = qemu_firmware {
            c.arg("-L").arg(fw);
        }
        c.args([
            "-enable-kvm",
            "-M",
            "microvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-kernel",
        ])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            CMDLINE,
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ]);
        c
    };
    let qemu = qemu.map(Path::to_path_buf);
    let mut names = vec!["cellvisor".to_string()];
    if qemu.is_some() {
        names.push("qemu-microvm".into());
    }
    let mut samples = vec![(Vec::new(), Vec::new()); names.len()];
    for round in 0..rounds {
        // Alternate which goes first.
        let mut order: Vec<usize> = (0..names.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (w, g) = if i == 0 {
                boot(&mut ours())
            } else {
                boot(&mut peer(qemu.as_ref().unwrap()))
            }
            .with_context(|| format!("{} boot {}", names[i], round + 1))?;
            eprintln!(
                "{}: {w:.0} ms to GUEST-UP (guest uptime {g:.0} ms)",
                names[i]
            );
            samples[i].0.push(w);
            samples[i].1.push(g);
        }
        eprintln!("round {}/{rounds}", round + 1);
    }
    let med = |v: &[f64]| bench::stats::median(v).unwrap_or(f64::NAN);
    Ok(Report {
        benchmark: "boot to the first guest userspace line",
        kernel: kernel.display().to_string(),
        cmdline: CMDLINE,
        host: bench::start::host_facts(),
        vmms: names
            .into_iter()
            .zip(samples)
            .map(|(vmm, (w, g))| {
                let diff: Vec<f64> = w.iter().zip(&g).map(|(a, b)| a - b).collect();
                VmmReport {
                    vmm,
                    wall_ms_p50: med(&w),
                    guest_ms_p50: med(&g),
                    vmm_ms_p50: med(&diff),
                    wall_ms: w,
                    guest_ms: g,
                }
            })
            .collect(),
    })
}

pub fn table(r: &Report) -> String {
    let base = r.vmms.first().map(|v| v.wall_ms_p50).unwrap_or(f64::NAN);
    let mut s = format!(
        "{:<14} {:>6} {:>14} {:>14} {:>14} {:>10}\n",
        "vmm", "runs", "wall p50 ms", "guest p50 ms", "vmm p50 ms", "ours/this"
    );
    for v in &r.vmms {
        s += &format!(
            "{:<14} {:>6} {:>14.0} {:>14.0} {:>14.0} {:>10.2}\n",
            v.vmm,
            v.wall_ms.len(),
            v.wall_ms_p50,
            v.guest_ms_p50,
            v.vmm_ms_p50,
            base / v.wall_ms_p50
        );
    }
    s
}
