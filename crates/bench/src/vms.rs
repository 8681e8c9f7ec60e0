//! N microVMs at once (the idle test guest: one line, then halted; or a Linux guest with its
//! initramfs, idle, optionally with a balloon that reports free pages), and what they cost in
//! host memory: per VMM process its proportional set size, the part of it that is guest
//! memory the guest touched, and the rest — the VMM's own overhead.

use std::path::{Path, PathBuf};
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

/// The VMs: which guest, and how each VMM runs it.
#[derive(Debug, Clone)]
pub struct Guests {
    /// The `cellvisor` binary (its `vm run`).
    pub vmm: PathBuf,
    pub kernel: PathBuf,
    pub mem: u64,
    /// A Linux guest's initramfs (scripts/mkinitramfs.sh; the guest idles in `sleep`): up
    /// when it prints GUEST-UP. Without, the kernel is a test guest, up at its " up" line.
    pub initrd: Option<PathBuf>,
    /// `vm run --balloon`'s value for every VM.
    pub balloon: Option<String>,
    /// How long the VMs stay idle once all are up before they are measured.
    pub settle: Duration,
}

impl Guests {
    fn describe(&self) -> String {
        match (&self.initrd, &self.balloon) {
            (None, _) => format!(
                "the test guest {}",
                self.kernel
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
            ),
            (Some(_), None) => "a Linux guest (initramfs), idle".into(),
            (Some(_), Some(b)) => format!("a Linux guest (initramfs), idle, balloon {b}"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub guest: String,
    pub settle_s: u64,
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

/// `n` VMMs (`vm run`) booting `g`'s guest, measured once all are up and `g.settle` has
/// passed; each must then stop cleanly on SIGTERM.
pub fn run(g: &Guests, n: usize) -> Result<Report> {
    let mem = g.mem;
    let work = std::env::temp_dir().join(format!("cellvisor-bench-vms-{}", std::process::id()));
    io(std::fs::create_dir_all(&work), || {
        format!("creating {}", work.display())
    })?;
    let before = mem_available_kib();
    let mut children: Vec<Child> = Vec::new();
    let r = (|| -> Result<Report> {
        for i in 0..n {
            children.push(start_vm(g, &work, i, false)?);
        }
        wait_up(g, &work, 0..n)?;
        std::thread::sleep(Duration::from_millis(200).max(g.settle));
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
            guest: g.describe(),
            settle_s: g.settle.as_secs(),
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
        "{} microVMs of {} MiB ({}) running at once\n\
         VMM overhead per VM (PSS minus guest-touched memory): p50 {:.0} KiB, max {} KiB\n\
         guest-touched memory per VM: p50 {:.0} KiB\n\
         total PSS of all VMM processes: {:.1} MiB; MemAvailable dropped by {:.1} MiB\n",
        r.vms,
        r.guest_mem_mib,
        r.guest,
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

/// One half of [`merge`]: the VMs with or without their memory offered to KSM.
#[derive(Debug, Serialize)]
pub struct MergeSide {
    pub mergeable: bool,
    /// Host memory per VM: the VMMs' summed PSS over n with one VM, then with all of them.
    pub pss_kib_one: f64,
    pub pss_kib_all: f64,
    /// PSS added per VM past the first: (all − one) / (n − 1).
    pub pss_kib_per_added: f64,
    /// MemAvailable's drop with all of them up.
    pub mem_available_drop_mib: f64,
    /// KSM's pages_sharing with all of them up (pages kept once that others map).
    pub ksm_pages_sharing: u64,
    /// Seconds from the last VM up until KSM's figures settled.
    pub settle_s: f64,
}

#[derive(Debug, Serialize)]
pub struct MergeReport {
    pub benchmark: &'static str,
    pub guest: String,
    pub vms: usize,
    pub guest_mem_mib: u64,
    pub host: serde_json::Value,
    pub sides: Vec<MergeSide>,
    /// Memory per added VM, merged over unmerged.
    pub per_added_ratio: f64,
}

const KSM: &str = "/sys/kernel/mm/ksm";

fn ksm_read(f: &str) -> u64 {
    std::fs::read_to_string(format!("{KSM}/{f}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn ksm_write(f: &str, v: u64) -> Result<()> {
    io(std::fs::write(format!("{KSM}/{f}"), v.to_string()), || {
        format!("writing {KSM}/{f}")
    })
}

/// KSM running fast for the benchmark; put back as it was when dropped.
struct KsmOn {
    saved: Vec<(&'static str, u64)>,
}

impl KsmOn {
    fn start() -> Result<KsmOn> {
        if !Path::new(KSM).join("run").exists() {
            return Err(Error::Msg(format!(
                "{KSM}: this kernel has no page merging (KSM)"
            )));
        }
        let fields = ["run", "pages_to_scan", "sleep_millisecs"];
        let on = KsmOn {
            saved: fields.iter().map(|f| (*f, ksm_read(f))).collect(),
        };
        ksm_write("pages_to_scan", 4096)?;
        ksm_write("sleep_millisecs", 10)?;
        ksm_write("run", 1)?;
        Ok(on)
    }
}

impl Drop for KsmOn {
    fn drop(&mut self) {
        // KSM off before the run: what the run merged is unmerged (only the run's VMs were
        // merging, and they are gone), then stopped. On before: left merging as it was.
        if self.saved.iter().any(|(f, v)| *f == "run" && *v == 0) {
            let _ = ksm_write("run", 2);
        }
        for (f, v) in self.saved.iter().rev() {
            let _ = ksm_write(f, *v);
        }
    }
}

/// Wait until KSM has scanned everything `scans` more times (two scans merge a page), 120 s
/// at most; the seconds it took.
fn ksm_settle(scans: u64) -> f64 {
    let t = Instant::now();
    let goal = ksm_read("full_scans") + scans;
    while ksm_read("full_scans") < goal && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed().as_secs_f64()
}

fn start_vm(g: &Guests, work: &Path, i: usize, mergeable: bool) -> Result<Child> {
    let mut c = Command::new(&g.vmm);
    c.args([
        "vm",
        "run",
        "--mem",
        &format!("{}M", g.mem >> 20),
        "--console",
    ])
    .arg(work.join(format!("vm{i}.log")))
    .arg("--kernel")
    .arg(&g.kernel)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(initrd) = &g.initrd {
        c.arg("--initrd").arg(initrd).args([
            "--cmdline",
            &format!("{} cellvisor.run=\"sleep 1000000\"", crate::vm::CMDLINE),
        ]);
    }
    if let Some(b) = &g.balloon {
        c.args(["--balloon", b]);
    }
    if mergeable {
        c.arg("--mergeable");
    }
    io(c.spawn(), || "starting a VMM".into())
}

/// Every VM in `vms` said it is up (a Linux guest takes longer: 60 s, and 10 s more a VM).
fn wait_up(g: &Guests, work: &Path, vms: std::ops::Range<usize>) -> Result<()> {
    let (marker, per_vm) = match g.initrd {
        Some(_) => ("GUEST-UP", 10),
        None => (" up", 0),
    };
    let end = Instant::now() + Duration::from_secs(60 + per_vm * vms.len() as u64);
    for i in vms {
        while !std::fs::read_to_string(work.join(format!("vm{i}.log")))
            .unwrap_or_default()
            .contains(marker)
        {
            if Instant::now() > end {
                return Err(Error::Msg(format!("VM {i} did not come up")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

fn pss_sum(children: &[Child]) -> f64 {
    children.iter().map(|c| crate::host::pss_kib(c.id())).sum()
}

/// One side of [`merge`]: one VM, then n, measured once KSM has settled; all stopped after.
fn merge_side(g: &Guests, work: &Path, n: usize, mergeable: bool) -> Result<MergeSide> {
    let before = mem_available_kib();
    let mut children = Vec::new();
    let r = (|| -> Result<MergeSide> {
        children.push(start_vm(g, work, 0, mergeable)?);
        wait_up(g, work, 0..1)?;
        std::thread::sleep(g.settle);
        // KSM scans only memory offered to it: without, there is nothing to wait for.
        let settle = |mergeable: bool| if mergeable { ksm_settle(3) } else { 0.0 };
        settle(mergeable);
        let one = pss_sum(&children);
        for i in 1..n {
            children.push(start_vm(g, work, i, mergeable)?);
        }
        wait_up(g, work, 0..n)?;
        std::thread::sleep(g.settle);
        let settle_s = settle(mergeable);
        let all = pss_sum(&children);
        Ok(MergeSide {
            mergeable,
            pss_kib_one: one,
            pss_kib_all: all,
            pss_kib_per_added: (all - one) / (n.max(2) - 1) as f64,
            mem_available_drop_mib: (before - mem_available_kib()).max(0.0) / 1024.0,
            ksm_pages_sharing: ksm_read("pages_sharing"),
            settle_s,
        })
    })();
    for c in &children {
        // SAFETY: SIGTERM to our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    for mut c in children {
        let _ = c.wait();
    }
    for i in 0..n {
        let _ = std::fs::remove_file(work.join(format!("vm{i}.log")));
    }
    r
}

/// Page merging: `n` alike VMs (the fill guest: 32 MiB of pages the same in every VM) with
/// their memory not offered to KSM, then offered, KSM running fast for the run (its
/// settings put back after): host memory per added VM on each side.
pub fn merge(g: &Guests, n: usize) -> Result<MergeReport> {
    if n < 2 {
        return Err(Error::Msg("--merge: at least two VMs".into()));
    }
    let work = std::env::temp_dir().join(format!("cellvisor-bench-merge-{}", std::process::id()));
    io(std::fs::create_dir_all(&work), || {
        format!("creating {}", work.display())
    })?;
    let r = (|| -> Result<MergeReport> {
        let _ksm = KsmOn::start()?;
        let sides = vec![
            merge_side(g, &work, n, false)?,
            merge_side(g, &work, n, true)?,
        ];
        Ok(MergeReport {
            benchmark: "alike microVMs with and without page merging (KSM)",
            guest: g.describe(),
            vms: n,
            guest_mem_mib: g.mem >> 20,
            host: crate::host::facts(),
            per_added_ratio: sides[1].pss_kib_per_added / sides[0].pss_kib_per_added,
            sides,
        })
    })();
    let _ = std::fs::remove_dir_all(&work);
    r
}

pub fn merge_table(r: &MergeReport) -> String {
    let mut s = format!(
        "{} alike microVMs of {} MiB ({}), KSM running\n\
         {:<10} {:>12} {:>12} {:>16} {:>14}\n",
        r.vms,
        r.guest_mem_mib,
        r.guest,
        "merging",
        "PSS 1 VM",
        "PSS all",
        "per added VM",
        "pages_sharing"
    );
    for side in &r.sides {
        s += &format!(
            "{:<10} {:>8.1} MiB {:>8.1} MiB {:>12.1} MiB {:>14}\n",
            if side.mergeable { "on" } else { "off" },
            side.pss_kib_one / 1024.0,
            side.pss_kib_all / 1024.0,
            side.pss_kib_per_added / 1024.0,
            side.ksm_pages_sharing
        );
    }
    s += &format!(
        "memory per added VM, merging on / off: {:.3}\n",
        r.per_added_ratio
    );
    s
}
