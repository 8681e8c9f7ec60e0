//! MicroVM boot: VMM process start to the first guest userspace line, cellvisor's VMM and
//! QEMU's microvm machine side by side on the same kernel, initramfs and command line,
//! alternating. The initramfs's /init prints `GUEST-UP <uptime>` first thing: the guest's own
//! uptime is the kernel's share; the rest of the wall time is the VMM's (and firmware's).
//! Needs a /dev/kvm that boots a stock kernel (real hardware, or scripts/kvm-test-host.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::vm::{Console, Missed, CMDLINE};
use crate::{io, Error, Result};

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

/// How long one boot may take, to its end.
const DEADLINE: Duration = Duration::from_secs(120);

/// One boot: (wall ms to GUEST-UP, guest uptime ms there). A VM that has not printed it and
/// ended within two minutes is killed.
fn boot(cmd: &mut Command) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let end = t0 + DEADLINE;
    let mut child = io(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn(),
        || "starting the VMM".into(),
    )?;
    let mut console = Console::new(child.stdout.take().expect("piped"));
    // The line may come after a terminal's escape codes (QEMU's serial).
    let found = match console.wait_until(|l| l.contains("GUEST-UP "), end) {
        Ok(line) => {
            let wall = t0.elapsed().as_secs_f64() * 1e3;
            let up: f64 = line
                .split("GUEST-UP ")
                .nth(1)
                .and_then(|u| u.trim().parse().ok())
                .unwrap_or(f64::NAN);
            Some((wall, up * 1e3))
        }
        Err(Missed::Timeout | Missed::Closed) => None,
    };
    loop {
        if io(child.try_wait(), || "waiting for the VMM".into())?.is_some() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Msg("the VM did not end within two minutes".into()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    found.ok_or_else(|| Error::Msg("the guest never printed GUEST-UP".into()))
}

/// `rounds` boots of `kernel` with `initrd` on cellvisor's VMM (`vmm vm run`) and, with
/// `qemu`, on QEMU's microvm (`qemu_firmware` its -L); `progress` hears each boot.
pub fn run(
    vmm: &Path,
    kernel: &Path,
    initrd: &Path,
    rounds: usize,
    qemu: Option<&Path>,
    qemu_firmware: Option<&Path>,
    progress: &mut dyn FnMut(&str),
) -> Result<Report> {
    let ours = || {
        let mut c = Command::new(vmm);
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
            let mut cmd = match &qemu {
                Some(q) if i == 1 => peer(q),
                _ => ours(),
            };
            let (w, g) =
                boot(&mut cmd).map_err(|e| e.within(format!("{} boot {}", names[i], round + 1)))?;
            progress(&format!(
                "{}: {w:.0} ms to GUEST-UP (guest uptime {g:.0} ms), round {}/{rounds}",
                names[i],
                round + 1
            ));
            samples[i].0.push(w);
            samples[i].1.push(g);
        }
    }
    let med = |v: &[f64]| crate::stats::median(v).unwrap_or(f64::NAN);
    Ok(Report {
        benchmark: "boot to the first guest userspace line",
        kernel: kernel.display().to_string(),
        cmdline: CMDLINE,
        host: crate::host::facts(),
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
