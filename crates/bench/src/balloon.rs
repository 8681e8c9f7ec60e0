//! `cellvisor bench balloon`: memory a microVM gives back through its virtio balloon. Two
//! alike idle guests side by side, both with a balloon, one with free page reporting: their
//! host memory (PSS, and the resident part of guest memory) sampled while idle. Then, on the
//! guest without reporting, the balloon inflated to a target and deflated (how long each
//! takes, what the host gets back); on the guest with reporting (and deflate on OOM), the
//! balloon inflated and the guest made to allocate more than it has left: it must get its
//! memory back from the balloon without an OOM kill. Needs a /dev/kvm that boots a stock
//! kernel (scripts/bench-balloon-vm.sh runs it in the KVM test host) and an initramfs from
//! scripts/mkinitramfs.sh (which loads virtio_balloon).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::host::pss_and_resident_of;
use crate::vm::{wait_boot, Console, CMDLINE};
use crate::{io, Error, Result};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub vmm: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub mem: u64,
    /// How long the guests stay idle before the figures are taken.
    pub idle: Duration,
    /// The balloon's target when inflated, MiB.
    pub target_mib: u64,
    /// What the guest allocates with the balloon inflated, MiB.
    pub fill_mib: u64,
}

/// One idle guest's host memory at a moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub at_s: f64,
    pub pss_kib: u64,
    pub guest_resident_kib: u64,
}

#[derive(Debug, Serialize)]
pub struct Idle {
    pub reporting: bool,
    pub samples: Vec<Sample>,
    /// The median of the last third of the samples.
    pub pss_mib: f64,
    pub guest_resident_mib: f64,
    /// The balloon's figures at the end (the guest's own statistics among them).
    pub balloon: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct Inflate {
    pub target_mib: u64,
    /// Seconds until the driver held the target, and until it gave it all back.
    pub inflate_s: f64,
    pub deflate_s: f64,
    pub guest_resident_before_mib: f64,
    pub guest_resident_inflated_mib: f64,
    pub pss_inflated_mib: f64,
}

#[derive(Debug, Serialize)]
pub struct Realloc {
    pub balloon_mib: u64,
    pub fill_mib: u64,
    /// Bytes the guest wrote, as it counted them.
    pub filled_bytes: u64,
    pub oom_kill: bool,
    /// What the balloon held after the guest took its memory back.
    pub balloon_after_mib: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub host: serde_json::Value,
    pub guest_mem_mib: u64,
    pub idle_s: u64,
    pub with_reporting: Idle,
    pub without_reporting: Idle,
    /// PSS with reporting / without.
    pub pss_ratio: f64,
    pub inflate: Inflate,
    pub realloc: Realloc,
}

/// One guest: its VMM, console, stdin (the guest reads a line from its console before it
/// allocates) and control socket.
struct Vm {
    child: Child,
    stdin: Option<ChildStdin>,
    console: Console,
    control: PathBuf,
}

impl Vm {
    fn start(o: &Options, work: &Path, name: &str, balloon: &str) -> Result<Vm> {
        let control = work.join(format!("{name}.sock"));
        let guest = format!(
            "read -t 3600 go; dd if=/dev/zero of=/fill bs=1M count={} 2>/dev/null; echo ALLOC-$(wc -c < /fill); read -t 3600 go",
            o.fill_mib
        );
        let err = work.join(format!("{name}.err"));
        let mut child = io(
            Command::new(&o.vmm)
                .args(["vm", "run", "--kernel"])
                .arg(&o.kernel)
                .arg("--initrd")
                .arg(&o.initrd)
                .args(["--mem", &format!("{}M", o.mem >> 20)])
                .args(["--balloon", balloon, "--control"])
                .arg(&control)
                .args(["--cmdline", &format!("{CMDLINE} cellvisor.run=\"{guest}\"")])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(
                    std::fs::File::create(&err)
                        .map(Stdio::from)
                        .unwrap_or(Stdio::null()),
                )
                .spawn(),
            || format!("starting {}", o.vmm.display()),
        )?;
        let stdin = child.stdin.take();
        let out = child
            .stdout
            .take()
            .ok_or_else(|| Error::Msg("no console".into()))?;
        let mut vm = Vm {
            child,
            stdin,
            console: Console::new(out),
            control,
        };
        if let Err(e) = wait_boot(&mut vm.console, &err) {
            vm.stop();
            return Err(e);
        }
        Ok(vm)
    }

    fn ask(&self, req: serde_json::Value) -> Result<serde_json::Value> {
        vmm::control::request(&self.control, &req).map_err(Error::Msg)
    }

    fn figures(&self) -> Result<serde_json::Value> {
        self.ask(serde_json::json!({"op": "balloon-stats"}))
    }

    /// (PSS, resident guest memory) in KiB.
    fn memory(&self, mem: u64) -> Result<(u64, u64)> {
        let pid = self.child.id();
        io(pss_and_resident_of(pid, mem >> 10), || {
            format!("reading /proc/{pid}/smaps")
        })
    }

    /// Set the balloon to `mib` and wait until the driver holds it (to within a MiB: a guest
    /// short of memory keeps its last pages); the seconds it took.
    fn balloon_to(&self, mib: u64) -> Result<f64> {
        let t = Instant::now();
        self.ask(serde_json::json!({"op": "balloon", "size_mib": mib}))?;
        let deadline = t + Duration::from_secs(120);
        loop {
            let f = self.figures()?;
            if f["actual_mib"]
                .as_u64()
                .is_some_and(|a| a <= mib && a + 1 >= mib)
            {
                return Ok(t.elapsed().as_secs_f64());
            }
            if let Some(fault) = f["fault"].as_str() {
                return Err(Error::Msg(format!("the balloon failed: {fault}")));
            }
            if Instant::now() > deadline {
                return Err(Error::Msg(format!(
                    "the balloon did not reach {mib} MiB in 120 s: {f}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Tell the guest to go on (a line on its console).
    fn go(&mut self) -> Result<()> {
        let s = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::Msg("no console input".into()))?;
        io(s.write_all(b"go\n"), || "writing to the console".into())
    }

    /// SIGTERM, and wait: the VMM must stop cleanly.
    fn stop(&mut self) -> Option<String> {
        // SAFETY: SIGTERM to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        match self.child.wait() {
            Ok(s) if s.code() == Some(128 + libc::SIGTERM) || s.success() => None,
            other => Some(format!("{other:?}")),
        }
    }
}

fn median_tail(v: &[f64]) -> f64 {
    crate::stats::median(&v[v.len() * 2 / 3..]).unwrap_or(f64::NAN)
}

/// Sample both idle guests once a second for `o.idle`.
fn idle(o: &Options, on: &Vm, off: &Vm) -> Result<(Idle, Idle)> {
    let t = Instant::now();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    loop {
        for (vm, v) in [(on, &mut a), (off, &mut b)] {
            let (pss, guest) = vm.memory(o.mem)?;
            v.push(Sample {
                at_s: t.elapsed().as_secs_f64(),
                pss_kib: pss,
                guest_resident_kib: guest,
            });
        }
        if t.elapsed() >= o.idle {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let side = |vm: &Vm, samples: Vec<Sample>, reporting| -> Result<Idle> {
        let pss: Vec<f64> = samples.iter().map(|s| s.pss_kib as f64 / 1024.0).collect();
        let guest: Vec<f64> = samples
            .iter()
            .map(|s| s.guest_resident_kib as f64 / 1024.0)
            .collect();
        Ok(Idle {
            reporting,
            pss_mib: median_tail(&pss),
            guest_resident_mib: median_tail(&guest),
            balloon: vm.figures()?,
            samples,
        })
    };
    Ok((side(on, a, true)?, side(off, b, false)?))
}

/// Run it; both VMs are stopped (and must stop cleanly) whatever happens.
pub fn run(o: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    let work = std::env::temp_dir().join(format!("cellvisor-bench-balloon-{}", std::process::id()));
    io(std::fs::create_dir_all(&work), || {
        format!("creating {}", work.display())
    })?;
    let mut vms: Vec<Vm> = Vec::new();
    let r = (|| -> Result<Report> {
        progress("booting two guests: a balloon with free page reporting, and one without");
        vms.push(Vm::start(
            o,
            &work,
            "reporting",
            "reporting,deflate-on-oom",
        )?);
        vms.push(Vm::start(o, &work, "plain", "deflate-on-oom")?);
        progress(&format!("idle for {} s", o.idle.as_secs()));
        let (with, without) = idle(o, &vms[0], &vms[1])?;
        progress("inflating and deflating the balloon of the guest without reporting");
        let plain = &vms[1];
        let before = plain.memory(o.mem)?.1;
        let inflate_s = plain.balloon_to(o.target_mib)?;
        // What the host got back settles once the driver holds the target.
        let (pss_in, guest_in) = plain.memory(o.mem)?;
        let deflate_s = plain.balloon_to(0)?;
        let inflate = Inflate {
            target_mib: o.target_mib,
            inflate_s,
            deflate_s,
            guest_resident_before_mib: before as f64 / 1024.0,
            guest_resident_inflated_mib: guest_in as f64 / 1024.0,
            pss_inflated_mib: pss_in as f64 / 1024.0,
        };
        progress(&format!(
            "the guest with reporting allocates {} MiB with {} MiB in its balloon",
            o.fill_mib, o.target_mib
        ));
        vms[0].balloon_to(o.target_mib)?;
        vms[0].go()?;
        let line = vms[0]
            .console
            .wait_for("ALLOC-", Instant::now() + Duration::from_secs(300))
            .map_err(|m| {
                Error::Msg(format!(
                    "the guest did not finish allocating ({m:?}): {}",
                    vms[0].console.tail()
                ))
            })?;
        let after = vms[0].figures()?;
        let realloc = Realloc {
            balloon_mib: o.target_mib,
            fill_mib: o.fill_mib,
            filled_bytes: line["ALLOC-".len()..].trim().parse().unwrap_or(0),
            oom_kill: vms[0].console.text.contains("Out of memory"),
            balloon_after_mib: after["actual_mib"].as_u64().unwrap_or(u64::MAX),
        };
        Ok(Report {
            benchmark: "virtio-balloon: idle guests' host memory, inflate, deflate, reallocation",
            host: crate::host::facts(),
            guest_mem_mib: o.mem >> 20,
            idle_s: o.idle.as_secs(),
            pss_ratio: with.pss_mib / without.pss_mib,
            with_reporting: with,
            without_reporting: without,
            inflate,
            realloc,
        })
    })();
    let bad: Vec<String> = vms.iter_mut().filter_map(Vm::stop).collect();
    let left: Vec<String> = vms
        .iter()
        .filter(|v| v.control.exists())
        .map(|v| v.control.display().to_string())
        .collect();
    let _ = std::fs::remove_dir_all(&work);
    let report = r?;
    if !bad.is_empty() || !left.is_empty() {
        return Err(Error::Msg(format!(
            "VMs that did not stop cleanly: {bad:?}; sockets left: {left:?}"
        )));
    }
    Ok(report)
}

pub fn table(r: &Report) -> String {
    let idle = |i: &Idle| {
        format!(
            "  {:<18} PSS {:>6.1} MiB   guest memory resident {:>6.1} MiB   reported {} MiB in {} ranges\n",
            if i.reporting { "with reporting" } else { "without reporting" },
            i.pss_mib,
            i.guest_resident_mib,
            i.balloon["reported_mib"],
            i.balloon["reports"],
        )
    };
    let i = &r.inflate;
    let a = &r.realloc;
    format!(
        "virtio-balloon, idle {} MiB guests after {} s (medians of the last third of 1 s samples):\n{}{}  PSS ratio (with / without reporting): {:.2}\n\
         inflate to {} MiB: {:.2} s, guest memory resident {:.1} -> {:.1} MiB (PSS {:.1}); deflate: {:.2} s\n\
         {} MiB allocated with {} MiB in the balloon: {} bytes written, OOM kill: {}, balloon after: {} MiB\n",
        r.guest_mem_mib,
        r.idle_s,
        idle(&r.with_reporting),
        idle(&r.without_reporting),
        r.pss_ratio,
        i.target_mib,
        i.inflate_s,
        i.guest_resident_before_mib,
        i.guest_resident_inflated_mib,
        i.pss_inflated_mib,
        i.deflate_s,
        a.fill_mib,
        a.balloon_mib,
        a.filled_bytes,
        if a.oom_kill { "yes" } else { "no" },
        a.balloon_after_mib,
    )
}
