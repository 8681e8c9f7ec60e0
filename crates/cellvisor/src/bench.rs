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
    let backends = bench::backend::backends(&a.backends, &me, guest)?;
    let agent = agent_path(&a.agent)?;
    let app = me.with_file_name("cellvisor-app");
    let plan = bench::suite::Plan::new(a.quick, a.rounds, a.max_domains)?;
    let work = tempdir()?;
    teardown_on_signal(&work, &backends);
    let mut bar = Progress::new(plan.rounds * backends.len());
    let r = bench::suite::run(&backends, &agent, &app, &work, &plan, &mut |msg| {
        bar.step(msg)
    });
    drop(bar);
    let report = match r {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e.into());
        }
    };
    print!("{}", bench::suite::table(&report));
    let mut bar = Progress::new(plan.ns.len() * report.backends.len());
    let scale = bench::scale::run(
        &report.backends,
        &agent,
        &work.join("scale"),
        &plan.ns,
        plan.window,
        &mut |msg| bar.step(msg),
    );
    drop(bar);
    let _ = std::fs::remove_dir_all(&work);
    let scale = scale?;
    print!("{}", bench::scale::table(&scale));
    if let Some(dir) = &a.out {
        let files = bench::suite::write(dir, &report, &scale)?;
        let names: Vec<String> = files
            .iter()
            .filter_map(|f| Some(f.file_name()?.to_string_lossy().into_owned()))
            .collect();
        eprintln!("wrote {} in {}", names.join(", "), dir.display());
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
    /// cellvisord under load: concurrent clients mixing reads and mutations beside idle
    /// connections; every request answered, a new client's wait loaded vs idle, the platform
    /// consistent after (exits 1 if not)
    Api {
        /// Concurrent clients
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Requests per client
        #[arg(short = 'n', long, default_value_t = 50)]
        requests: usize,
        /// Idle connections held open meanwhile
        #[arg(long, default_value_t = 300)]
        idle: usize,
        /// A new client's requests timed on the idle daemon
        #[arg(long, default_value_t = 200)]
        probes: usize,
        /// The static in-domain agent (default: cellvisor-agent beside this binary)
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Write api.json here
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Density: n idle container domains at once with each OCI runtime, one after the other
    /// (start latency as n grows, creation rate, host memory per domain, list, teardown,
    /// what was left), and with --daemon the same n through cellvisord from one replicated
    /// profile entry (exits 1 if anything was left)
    Density {
        /// Domains at once
        #[arg(short = 'n', long, default_value_t = 1000)]
        domains: usize,
        /// The runtimes, in order: cellvisor (container), crun, runc
        #[arg(long, value_delimiter = ',', default_value = "container,crun")]
        backends: Vec<String>,
        /// Also through cellvisord (a profile entry with replicas = n)
        #[arg(long)]
        daemon: bool,
        /// Rounds of the runtimes, each in the other order; medians over them
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// The static in-domain agent (default: cellvisor-agent beside this binary)
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Write density.json, table.txt and the plots here
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Soak: lifecycles over and over — containers through the OCI CLI, a daemon's platform,
    /// microVMs — then what they left (mounts, cgroups, processes, state files, sockets, taps,
    /// descriptors) and the daemon's descriptors and RSS, first cycle vs last (exits 1 on a
    /// leak)
    Soak {
        /// Container cycles (create, start, exit, delete)
        #[arg(long, default_value_t = 1000)]
        oci: usize,
        /// Platform cycles (up, fg, channel open and close, fg, down)
        #[arg(long, default_value_t = 1000)]
        daemon: usize,
        /// MicroVM cycles (needs --vm-kernel)
        #[arg(long, default_value_t = 0)]
        vms: usize,
        /// The microVMs' guest, one that ends by itself (scripts/mktiny.sh OUT.elf)
        #[arg(long)]
        vm_kernel: Option<PathBuf>,
        /// The static in-domain agent (default: cellvisor-agent beside this binary)
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Write soak.json here
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
    /// The scheduler (root): balance moving two crowded CPU-bound domains apart beside fixed,
    /// power packing a light load onto one core and spreading it again, a realtime domain's
    /// core untouched, the scheduler's cost; and simulated machines of 2 to 16 cores
    Sched {
        /// Periods of 500 ms, windows of 2 s, one round (instead of 1 s, 5 s, three)
        #[arg(long)]
        quick: bool,
        /// Rounds of the balance case
        #[arg(long)]
        rounds: Option<u32>,
        /// The static in-domain agent (default: cellvisor-agent beside this binary)
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Write sched.json and the simulator's SVG plots here
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Real-time wake-up latency: a periodic probe in a realtime domain (SCHED_FIFO, its own
    /// core) while a common domain loads the rest, beside the same probe unloaded, in a common
    /// domain (the control), natively, and cyclictest's (root)
    Rt {
        /// 3,000 wake-ups per variant in one round instead of 100,000 in five
        #[arg(long)]
        quick: bool,
        /// Wake-ups per variant, over all rounds
        #[arg(long)]
        samples: Option<u64>,
        /// Rounds, each running every variant once (its share of the wake-ups); the ratios
        /// are medians over the rounds
        #[arg(long)]
        rounds: Option<u32>,
        /// Between wake-ups, µs
        #[arg(long, default_value_t = 1000)]
        interval_us: u64,
        /// The static in-domain agent (default: cellvisor-agent beside this binary)
        #[arg(long)]
        agent: Option<PathBuf>,
        /// The microVM variants too: the probe inside a guest booting this kernel (needs a
        /// /dev/kvm that boots a stock kernel: inside scripts/kvm-test-host.sh here)
        #[arg(long, requires = "initrd")]
        kernel: Option<PathBuf>,
        /// The microVM variants' initramfs (scripts/mkinitramfs.sh)
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        /// Write rt.json and rt-latency.svg here
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Memory a microVM gives back through its balloon: two idle guests side by side, with
    /// and without free page reporting; inflate and deflate; a guest allocating with its
    /// balloon inflated (needs a /dev/kvm that boots a stock kernel: scripts/bench-balloon-vm.sh)
    Balloon {
        /// The guest kernel
        #[arg(long)]
        kernel: PathBuf,
        /// Its initramfs (scripts/mkinitramfs.sh: it loads virtio_balloon)
        #[arg(long)]
        initrd: PathBuf,
        /// Guest memory
        #[arg(long, default_value = "128M")]
        mem: String,
        /// Seconds the guests stay idle before their memory is read
        #[arg(long, default_value_t = 60)]
        idle: u64,
        /// The balloon's size when inflated, MiB
        #[arg(long, default_value_t = 48)]
        target: u64,
        /// What the guest allocates with its balloon inflated, MiB
        #[arg(long, default_value_t = 32)]
        fill: u64,
        /// Write balloon.json here
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
        /// Page merging instead: the VMs without and with their memory offered to KSM
        /// (the fill guest, scripts/mktiny.sh OUT.elf fill, with --mem 64M), KSM running for
        /// the run; writes merge.json
        #[arg(long)]
        merge: bool,
        /// A Linux guest instead of a test guest: its initramfs (scripts/mkinitramfs.sh);
        /// each VM idles in `sleep`
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// Give every VM a balloon (`vm run --balloon`, e.g. reporting)
        #[arg(long, requires = "initrd")]
        balloon: Option<String>,
        /// Seconds the VMs stay idle once all are up, before they are measured
        #[arg(long, default_value_t = 0)]
        settle: u64,
        /// Write vms.json (merge.json) here
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
        } => channel(*rounds, *quick, between, agent, out),
        BenchCmd::Boot {
            kernel,
            initrd,
            rounds,
            qemu,
            qemu_firmware,
            out,
        } => {
            let me = std::env::current_exe().context("finding this binary")?;
            let r = bench::boot::run(
                &me,
                kernel,
                initrd,
                *rounds,
                qemu.as_deref(),
                qemu_firmware.as_deref(),
                &mut |msg| eprintln!("{msg}"),
            )?;
            print!("{}", bench::boot::table(&r));
            match out {
                Some(dir) => write_report(dir, "boot.json", &r)?,
                None => println!("{}", serde_json::to_string(&r)?),
            }
            Ok(0)
        }
        BenchCmd::Balloon {
            kernel,
            initrd,
            mem,
            idle,
            target,
            fill,
            out,
        } => {
            let mem = domain::profile::parse_size(mem)
                .ok_or_else(|| anyhow!("--mem: {mem:?} is not a size like 128M"))?;
            let o = bench::balloon::Options {
                vmm: std::env::current_exe().context("finding this binary")?,
                kernel: kernel.clone(),
                initrd: initrd.clone(),
                mem,
                idle: std::time::Duration::from_secs(*idle),
                target_mib: *target,
                fill_mib: *fill,
            };
            let r = bench::balloon::run(&o, &mut |msg| eprintln!("{msg}"))?;
            print!("{}", bench::balloon::table(&r));
            match out {
                Some(dir) => write_report(dir, "balloon.json", &r)?,
                None => println!("{}", serde_json::to_string(&r)?),
            }
            Ok(0)
        }
        BenchCmd::Vms {
            kernel,
            vms,
            mem,
            merge,
            initrd,
            balloon,
            settle,
            out,
        } => {
            let mem = domain::profile::parse_size(mem)
                .ok_or_else(|| anyhow!("--mem: {mem:?} is not a size like 128M"))?;
            let g = bench::vms::Guests {
                vmm: std::env::current_exe().context("finding this binary")?,
                kernel: kernel.clone(),
                mem,
                initrd: initrd.clone(),
                balloon: balloon.clone(),
                settle: std::time::Duration::from_secs(*settle),
            };
            if *merge {
                let r = bench::vms::merge(&g, *vms)?;
                print!("{}", bench::vms::merge_table(&r));
                if let Some(dir) = out {
                    write_report(dir, "merge.json", &r)?;
                }
                return Ok(0);
            }
            let r = bench::vms::run(&g, *vms)?;
            print!("{}", bench::vms::table(&r));
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
            let mut line = Ticker::default();
            let r = bench::fg::run(*switches, &agent, &mut |done, all| {
                if done % 20 == 0 || done == all {
                    line.show(&format!("switch {done}/{all}"));
                }
            });
            drop(line);
            let r = r?;
            print!("{}", bench::fg::table(&r));
            if let Some(dir) = out {
                write_report(dir, "fg.json", &r)?;
            }
            Ok(0)
        }
        BenchCmd::Density {
            domains,
            backends,
            daemon,
            rounds,
            agent,
            out,
        } => {
            let me = std::env::current_exe().context("finding this binary")?;
            // The native backend the list always starts with is not an OCI runtime.
            let backends: Vec<_> = bench::backend::backends(backends, &me, None)?
                .into_iter()
                .filter(|b| b.runtime.is_some())
                .collect();
            let plan = bench::density::Plan {
                n: *domains,
                backends,
                daemon: *daemon,
                rounds: *rounds,
            };
            let agent = agent_path(agent)?;
            let work = tempdir()?;
            let mut line = Ticker::default();
            let r = bench::density::run(&plan, &agent, &work, &mut |msg| line.show(msg));
            drop(line);
            let r = r?;
            let table = bench::density::table(&r);
            print!("{table}");
            if let Some(dir) = out {
                write_report(dir, "density.json", &r)?;
                std::fs::write(dir.join("table.txt"), &table)
                    .with_context(|| format!("writing {}", dir.join("table.txt").display()))?;
                for p in bench::density::plots(&r, dir)? {
                    eprintln!("wrote {}", p.display());
                }
            }
            if r.leaked() {
                eprintln!("cellvisor: bench density: something was left behind (above)");
                return Ok(1);
            }
            Ok(0)
        }
        BenchCmd::Soak {
            oci,
            daemon,
            vms,
            vm_kernel,
            agent,
            out,
        } => {
            let agent = agent_path(agent)?;
            let me = std::env::current_exe().context("finding this binary")?;
            let plan = bench::soak::Plan {
                oci: *oci,
                daemon: *daemon,
                vms: *vms,
                vm_kernel: vm_kernel.clone(),
            };
            let mut line = Ticker::default();
            let r = bench::soak::run(&plan, &me, &agent, &mut |phase, done, all| {
                if done % 10 == 0 || done == all {
                    line.show(&format!("{phase} {done}/{all}"));
                }
            });
            drop(line);
            let r = r?;
            print!("{}", bench::soak::table(&r));
            if let Some(dir) = out {
                write_report(dir, "soak.json", &r)?;
            }
            if r.leaked() {
                eprintln!("cellvisor: bench soak: something was left behind (above)");
                return Ok(1);
            }
            Ok(0)
        }
        BenchCmd::Api {
            clients,
            requests,
            idle,
            probes,
            agent,
            out,
        } => {
            let agent = agent_path(agent)?;
            let plan = bench::load::Plan {
                clients: *clients,
                requests: *requests,
                idle: *idle,
                probes: *probes,
            };
            let r = bench::load::run(plan, &agent)?;
            print!("{}", bench::load::table(&r));
            if let Some(dir) = out {
                write_report(dir, "api.json", &r)?;
            }
            if r.unanswered > 0 || !r.consistent {
                eprintln!("cellvisor: bench api: requests went unanswered or the platform is inconsistent");
                return Ok(1);
            }
            Ok(0)
        }
        BenchCmd::Start {
            rounds,
            runtimes,
            out,
        } => start(*rounds, runtimes, out),
        BenchCmd::Sched {
            quick,
            rounds,
            agent,
            out,
        } => {
            let plan = bench::sched::Plan::new(*quick, *rounds)?;
            let agent = agent_path(agent)?;
            let work = tempdir()?;
            let r = bench::sched::run(&plan, &agent, &work, &mut |msg| eprintln!("{msg}"));
            let _ = std::fs::remove_dir_all(&work);
            let r = r?;
            print!("{}", bench::sched::table(&r));
            if let Some(dir) = out {
                write_report(dir, "sched.json", &r)?;
                for p in bench::sched::plot(&r, dir)? {
                    eprintln!("wrote {}", p.display());
                }
            }
            Ok(0)
        }
        BenchCmd::Rt {
            quick,
            samples,
            rounds,
            interval_us,
            agent,
            kernel,
            initrd,
            out,
        } => {
            let guest = match (kernel, initrd) {
                (Some(k), Some(i)) => {
                    let me = std::env::current_exe().context("finding this binary")?;
                    Some(bench::vm::Guest::new(&me, k, i)?)
                }
                _ => None,
            };
            let plan = bench::rt::Plan::new(*quick, *samples, *rounds, *interval_us, guest)?;
            let agent = agent_path(agent)?;
            let work = tempdir()?;
            // A variant lasts seconds to minutes: a line each.
            let r = bench::rt::run(&plan, &agent, &work, &mut |msg| eprintln!("{msg}"));
            let _ = std::fs::remove_dir_all(&work);
            let r = r?;
            print!("{}", bench::rt::table(&r));
            if let Some(dir) = out {
                write_report(dir, "rt.json", &r)?;
                let p = bench::rt::plot(&r, dir)?;
                eprintln!("wrote {}", p.display());
            }
            Ok(0)
        }
    }
}

/// `bench channel`.
fn channel(
    rounds: usize,
    quick: bool,
    between: &[String],
    agent: &Option<PathBuf>,
    out: &Option<PathBuf>,
) -> Result<i32> {
    let between = bench::domains::between(between)?;
    let agent = if between.contains(&bench::domains::Between::Domains) {
        Some(agent_path(agent)?)
    } else {
        None
    };
    use bench::domains::{Between, Event};
    let mut line = Ticker::default();
    let r = bench::domains::channel(
        &between,
        rounds,
        quick,
        agent.as_deref(),
        &mut |ev| match ev {
            Event::Step(msg) => line.show(msg),
            Event::Done(part, rows) => {
                line.end();
                println!(
                    "{}",
                    match part {
                        Between::Processes => "between two processes:",
                        Between::Domains =>
                            "between two container domains (the same two processes for all three):",
                    }
                );
                print!("{}", bench::ipc::table(rows));
            }
        },
    );
    drop(line);
    let r = r?;
    if let Some(dir) = out {
        write_report(dir, "channel.json", &r)?;
    }
    Ok(0)
}

/// `bench start`: the runtimes found (the others skipped, said).
fn start(rounds: usize, runtimes: &[String], out: &Option<PathBuf>) -> Result<i32> {
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
    let mut line = Ticker::default();
    let r = bench::start::run(&rts, rounds, &work, &mut |done, all| {
        line.show(&format!("round {done}/{all}"))
    });
    drop(line);
    let _ = std::fs::remove_dir_all(&work);
    let r = r?;
    print!("{}", bench::start::table(&r));
    if let Some(dir) = out {
        write_report(dir, "start.json", &r)?;
    }
    Ok(0)
}

/// A progress line on stderr, rewritten in place; ended with a newline when dropped, if it
/// was shown (so an error that follows has its own line).
#[derive(Default)]
struct Ticker {
    shown: bool,
}

impl Ticker {
    fn show(&mut self, msg: &str) {
        eprint!("\r{msg}");
        let _ = std::io::stderr().flush();
        self.shown = true;
    }
}

impl Ticker {
    /// End the line (if shown): what follows has a line of its own.
    fn end(&mut self) {
        if self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.end();
    }
}

/// Write a report as pretty JSON into `dir/name`.
fn write_report(dir: &std::path::Path, name: &str, v: &impl serde::Serialize) -> Result<()> {
    let p = bench::report::write_json(dir, name, v)?;
    eprintln!("wrote {}", p.display());
    Ok(())
}

/// Set while a signal's teardown runs.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Stopped by SIGINT, SIGTERM or SIGHUP, the suite removes what it made (its children,
/// containers, cgroups, work directory) and exits 128 + the signal. The signals are blocked
/// from here on in this thread and the threads it starts, and taken by one thread of their
/// own; children start with them unblocked (std resets the mask at spawn).
fn teardown_on_signal(work: &std::path::Path, backends: &[bench::backend::Backend]) {
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
            bench::teardown::teardown(&work, &backends);
            std::process::exit(128 + sig as i32);
        }
    });
}

fn tempdir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("cellvisor-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}
