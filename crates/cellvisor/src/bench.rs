//! `cellvisor bench`: benchmarks run side by side with peers, printed as a table and written
//! as JSON.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};

/// `cellvisor bench [SUITE OPTIONS]` or `cellvisor bench SUBCOMMAND ...`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: Option<BenchCmd>,
    #[command(flatten)]
    suite: SuiteArgs,
}

/// The suite: the survey's Section 5 natively and in every backend, side by side.
#[derive(Args, Debug)]
pub struct SuiteArgs {
    /// Fewer rounds, shorter timings (for CI)
    #[arg(long)]
    quick: bool,
    /// Backends beside native: container (cellvisor), microvm (cellvisor's VMM; needs
    /// --kernel and --initrd), runc, crun
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "native,container,runc,crun"
    )]
    backends: Vec<String>,
    /// The microvm backend's guest kernel (a stock bzImage or vmlinux)
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The microvm backend's initramfs (scripts/mkinitramfs.sh: virtio drivers, mounts the
    /// suite's root disk)
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Scalability up to this many domains per backend (default 32, --quick 4)
    #[arg(long)]
    max_domains: Option<usize>,
    /// Rounds (every backend once per round, shuffled; default 7, --quick 2)
    #[arg(short = 'n', long)]
    rounds: Option<usize>,
    /// Write results.json, results.csv and the SVG plots here
    #[arg(long)]
    out: Option<PathBuf>,
    /// The static in-domain agent (default: cellvisor-agent beside this binary)
    #[arg(long)]
    agent: Option<PathBuf>,
}

pub fn run(a: &BenchArgs) -> Result<i32> {
    match &a.cmd {
        Some(c) => run_cmd(c),
        None => {
            let r = suite(&a.suite);
            // A signal's teardown is under way (its children killed, the suite failed): it
            // ends the process when it is done.
            while STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::park();
            }
            r
        }
    }
}

/// The macrobenchmarks' figures (the rest are microbenchmarks).
const MACRO: [&str; 3] = ["app_start", "codec", "save_"];

/// A progress bar of `len` steps; each message starts the next step.
struct Progress {
    bar: indicatif::ProgressBar,
    started: bool,
}

impl Progress {
    fn new(len: usize) -> Self {
        let bar = indicatif::ProgressBar::new(len as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Progress {
            bar,
            started: false,
        }
    }

    fn step(&mut self, msg: &str) {
        if self.started {
            self.bar.inc(1);
        }
        self.started = true;
        self.bar.set_message(msg.to_string());
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn suite(a: &SuiteArgs) -> Result<i32> {
    let me = std::env::current_exe().context("finding this binary")?;
    let guest = match (&a.kernel, &a.initrd) {
        (Some(k), Some(i)) => Some(bench::vm::Guest::new(&me, k, i)?),
        (None, None) => None,
        _ => return Err(anyhow!("--kernel and --initrd go together")),
    };
    let backends = bench::suite::backends(&a.backends, &me, guest)?;
    let agent = agent_path(&a.agent)?;
    let app = std::env::current_exe()?.with_file_name("cellvisor-app");
    if !app.is_file() {
        return Err(anyhow!(
            "the benchmark application {} is missing (cargo build puts it beside cellvisor)",
            app.display()
        ));
    }
    let rounds = a.rounds.unwrap_or(if a.quick { 2 } else { 7 });
    if rounds == 0 {
        return Err(anyhow!("--rounds must be at least 1"));
    }
    // The survey saves 100 files; --quick saves 20.
    let files = if a.quick { 20 } else { 100 };
    // 5 ms: the interval LMbench settles on where its clock is fine enough (its "enough").
    let interval_ms = if a.quick { 2 } else { 5 };
    let work = tempdir()?;
    teardown_on_signal(&work, &backends);
    let mut bar = Progress::new(rounds * backends.len());
    let r = bench::suite::run(
        &backends,
        &agent,
        &app,
        &work,
        rounds,
        interval_ms,
        files,
        a.quick,
        &mut |msg| bar.step(msg),
    );
    drop(bar);
    let report = match r {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e.into());
        }
    };
    print!("{}", bench::suite::table(&report));
    // Scalability: the backends that ran, n = 1, 2, 4, ... up to 32 (--quick: 4).
    let max = a.max_domains.unwrap_or(if a.quick { 4 } else { 32 }).max(1);
    let ns: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
        .take_while(|&n| n <= max)
        .collect();
    let window = std::time::Duration::from_millis(if a.quick { 300 } else { 1000 });
    let scale_dir = work.join("scale");
    let mut bar = Progress::new(ns.len() * report.backends.len());
    let scale = bench::scale::run(
        &report.backends,
        &agent,
        &scale_dir,
        &ns,
        window,
        &mut |msg| bar.step(msg),
    );
    drop(bar);
    let _ = std::fs::remove_dir_all(&work);
    let scale = scale?;
    print!("{}", bench::scale::table(&scale));
    if let Some(dir) = &a.out {
        let mut doc = serde_json::to_value(&report)?;
        doc["scale"] = serde_json::to_value(&scale)?;
        write_report(dir, "results.json", &doc)?;
        for (name, text) in [
            ("results.csv", bench::suite::csv(&report)),
            ("scale.csv", bench::scale::csv(&scale)),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        let micro = |t: &str| !MACRO.iter().any(|m| t.starts_with(m));
        bench::plot::normalized(
            &report,
            micro,
            "Microbenchmarks and guest/host switch, normalized to native (lower is better; pipe_bandwidth higher)",
            &dir.join("micro.svg"),
        )
        ?;
        bench::plot::normalized(
            &report,
            |t| !micro(t),
            "Macrobenchmarks, normalized to native (app start, save: lower is better; codec: higher)",
            &dir.join("macro.svg"),
        )
        ?;
        bench::scale::plots(&scale, dir)?;
        eprintln!(
            "wrote results.csv, scale.csv, micro.svg, macro.svg, scale-{{cpu,memory,storage}}.svg in {}",
            dir.display()
        );
    }
    Ok(0)
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Container start: `run` of a /bin/true container N times per runtime, shuffled rounds
    Start {
        /// Rounds (each runtime runs once per round)
        #[arg(short = 'n', long, default_value_t = 30)]
        rounds: usize,
        /// Runtimes to compare: names on PATH or paths; "cellvisor" is this binary
        #[arg(long, value_delimiter = ',', default_value = "cellvisor,crun,runc")]
        runtimes: Vec<String>,
        /// Write start.json (every sample, host facts) here
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Channel round trip (1 B, 4 KiB, 1 MiB) and bandwidth vs a pipe and a Unix socket,
    /// between two processes and between two container domains
    Channel {
        /// Rounds (every case once per round, shuffled)
        #[arg(short = 'n', long, default_value_t = 5)]
        rounds: usize,
        /// Fewer iterations per case
        #[arg(long)]
        quick: bool,
        /// Between what: processes, domains (root; needs the agent), or both
        #[arg(long, value_delimiter = ',', default_value = "processes,domains")]
        between: Vec<String>,
        /// The static in-domain agent (default: cellvisor-agent beside this binary)
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Write channel.json here
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Foreground switch latency through cellvisord (request to the new foreground holding
    /// its devices and the old one in the background): p50 and p99, throttle and freeze
    Fg {
        /// Switches per background mode
        #[arg(short = 'n', long, default_value_t = 200)]
        switches: usize,
        /// The static in-domain agent (default: cellvisor-agent beside this binary)
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Write fg.json here
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// MicroVM boot: VMM start to the first guest userspace line, cellvisor's VMM beside QEMU's
    /// microvm on the same kernel and initramfs (scripts/mkinitramfs.sh); needs a /dev/kvm that
    /// boots a stock kernel (on this kind of machine: inside scripts/kvm-test-host.sh)
    Boot {
        /// Guest kernel (bzImage or vmlinux)
        #[arg(long)]
        kernel: PathBuf,
        /// Initramfs whose /init prints "GUEST-UP <uptime>" and reboots
        #[arg(long)]
        initrd: PathBuf,
        /// Boots per VMM
        #[arg(short = 'n', long, default_value_t = 5)]
        rounds: usize,
        /// QEMU to compare with (its microvm machine); none: ours alone
        #[arg(long)]
        qemu: Option<PathBuf>,
        /// QEMU's firmware directory (its -L)
        #[arg(long)]
        qemu_firmware: Option<PathBuf>,
        /// Write boot.json here
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Many microVMs at once (the idle test guest: scripts/mktiny.sh OUT idle) and the host
    /// memory they use: per-VM VMM overhead (PSS minus guest-touched memory) and the total
    Vms {
        /// The guest kernel
        #[arg(long)]
        kernel: PathBuf,
        /// How many VMs
        #[arg(short = 'n', long, default_value_t = 20)]
        vms: usize,
        /// Guest memory per VM
        #[arg(long, default_value = "128M")]
        mem: String,
        /// Write vms.json here
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The in-domain agent: given, or beside this binary.
fn agent_path(given: &Option<PathBuf>) -> Result<PathBuf> {
    let p = match given {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("cellvisor-agent"),
    };
    if !p.is_file() {
        return Err(anyhow!(
            "the in-domain agent {} is missing (make build puts it beside cellvisor; or --agent)",
            p.display()
        ));
    }
    Ok(p)
}

fn run_cmd(cmd: &BenchCmd) -> Result<i32> {
    match cmd {
        BenchCmd::Channel {
            rounds,
            quick,
            between,
            agent,
            out,
        } => {
            for b in between {
                if b != "processes" && b != "domains" {
                    return Err(anyhow!("--between: {b:?} is not processes or domains"));
                }
            }
            let mut doc = serde_json::json!({"benchmark": "channel vs pipe vs unix socket", "rounds": rounds, "host": bench::start::host_facts()});
            if between.iter().any(|b| b == "processes") {
                let rows =
                    bench::ipc::run(&[1, 4096, 1 << 20], *rounds, *quick, &mut |done, all| {
                        eprint!("\rbetween two processes: round {done}/{all}");
                        let _ = std::io::stderr().flush();
                    });
                eprintln!();
                let rows = rows?;
                println!("between two processes:");
                print!("{}", bench::ipc::table(&rows));
                doc["processes"] = serde_json::to_value(&rows)?;
            }
            if between.iter().any(|b| b == "domains") {
                let agent = agent_path(agent)?;
                let work = tempdir()?;
                let base = work.join("base");
                bench::start::busybox_rootfs(&base)?;
                eprintln!("between two domains: {rounds} rounds...");
                let rows = bench::domains::run(&base, &agent, *rounds, *quick);
                let _ = std::fs::remove_dir_all(&work);
                let rows = rows?;
                println!("between two container domains (the same two processes for all three):");
                print!("{}", bench::ipc::table(&rows));
                doc["domains"] = serde_json::to_value(&rows)?;
            }
            if let Some(dir) = out {
                write_report(dir, "channel.json", &doc)?;
            }
            Ok(0)
        }
        BenchCmd::Boot {
            kernel,
            initrd,
            rounds,
            qemu,
            qemu_firmware,
            out,
        } => {
            let r = crate::benchboot::run(
                kernel,
                initrd,
                *rounds,
                qemu.as_deref(),
                qemu_firmware.as_deref(),
            )?;
            print!("{}", crate::benchboot::table(&r));
            if let Some(dir) = out {
                write_report(dir, "boot.json", &r)?;
            } else {
                println!("{}", serde_json::to_string(&r)?);
            }
            Ok(0)
        }
        BenchCmd::Vms {
            kernel,
            vms,
            mem,
            out,
        } => {
            let mem = domain::profile::parse_size(mem)
                .ok_or_else(|| anyhow!("--mem: {mem:?} is not a size like 128M"))?;
            let r = crate::benchvms::run(kernel, *vms, mem)?;
            print!("{}", crate::benchvms::table(&r));
            if let Some(dir) = out {
                write_report(dir, "vms.json", &r)?;
            }
            Ok(0)
        }
        BenchCmd::Fg {
            switches,
            agent,
            out,
        } => {
            let agent = agent_path(agent)?;
            let report = crate::benchfg::run(*switches, &agent)?;
            print!("{}", crate::benchfg::table(&report));
            if let Some(dir) = out {
                write_report(dir, "fg.json", &report)?;
            }
            Ok(0)
        }
        BenchCmd::Start {
            rounds,
            runtimes,
            out,
        } => {
            let me = std::env::current_exe().context("finding this binary")?;
            let mut rts = Vec::new();
            for name in runtimes {
                match bench::start::runtime(name, &me) {
                    Some(r) => rts.push(r),
                    None => eprintln!("skipping {name}: not found"),
                }
            }
            if rts.is_empty() {
                return Err(anyhow!("no runtime to benchmark"));
            }
            let work = tempdir()?;
            let r = bench::start::run(&rts, *rounds, &work, &mut |done, all| {
                eprint!("\rround {done}/{all}");
                let _ = std::io::stderr().flush();
            });
            eprintln!();
            let _ = std::fs::remove_dir_all(&work);
            let report = r?;
            print!("{}", bench::start::table(&report));
            if let Some(dir) = out {
                write_report(dir, "start.json", &report)?;
            }
            Ok(0)
        }
    }
}

/// Write a report as pretty JSON into `dir/name`.
fn write_report(dir: &std::path::Path, name: &str, v: &impl serde::Serialize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(v)?)
        .with_context(|| format!("writing {}", p.display()))?;
    eprintln!("wrote {}", p.display());
    Ok(())
}

/// Set while a signal's teardown runs.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Stopped by SIGINT, SIGTERM or SIGHUP, the suite removes what it made (its children,
/// containers, cgroups, work directory) and exits 128 + the signal. The signals are blocked
/// from here on in this thread and the threads it starts, and taken by one thread of their
/// own; children start with them unblocked (std resets the mask at spawn).
fn teardown_on_signal(work: &std::path::Path, backends: &[bench::suite::Backend]) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    let (work, backends) = (work.to_path_buf(), backends.to_vec());
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
            eprintln!("cellvisor bench: {sig}: removing what this run made");
            bench::suite::teardown(&work, &backends);
            std::process::exit(128 + sig as i32);
        }
    });
}

fn tempdir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("cellvisor-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}
