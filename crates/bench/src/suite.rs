//! The survey's Section 5 on this machine: the same workloads natively and in every backend,
//! side by side. Each round runs every backend once, in shuffled order; a backend's figure in
//! a round is the median of its 11 timings (the agent's `micro`), its ratio to native is taken
//! within the round, and the report gives the median over rounds of both.
//!
//! Backends: `native` (the agent as a host process, chrooted into the bundle's root so that
//! it runs the same programs), `container` (a cellvisor container: the
//! OCI runtime of this project, default spec with its seccomp filter, namespaces and cgroups),
//! `runc` and `crun` (the same bundle under the peers), `microvm` (a cellvisor microVM domain:
//! its VMM jailed in a container domain, booting a stock kernel whose root is that bundle's
//! root as a shared ext4 image under a private copy-on-write layer; see vm.rs). The agent's
//! `micro` measures the LMbench-style microbenchmarks and the guest/host switch: a 1-byte
//! round trip with a host thread over a pipe pair handed into the domain (descriptors 3 and
//! 4; in a microVM a vsock stream), plus in a microVM the exit round trip. Then the
//! macrobenchmarks (`--macro`): the start of a dynamically linked application mapping 32 MiB
//! of assets (cold: its files evicted from the page cache first; warm), a PNG codec's frames
//! per second, and saving 100 files of 10 KB to 5 MB, each synced, into the domain's own root.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::{Backend, Kind};
use crate::report::{rows, Failed, Figure, Report, Run, ScaleReport};
use crate::stats::Rng;
use crate::{io, vm, Error, Result};

/// The host's vsock port that a microVM guest's agent reaches for the guest/host switch.
const HOST_PORT: u32 = 5000;
/// A microVM's memory and vCPUs in the suite (the codec, 32 MiB of assets and up to 5 MB
/// files in its page cache).
const VM_MEM_MIB: u64 = 512;
/// How long one microVM run may take once its guest is up.
const VM_RUN_DEADLINE: Duration = Duration::from_secs(3600);

/// The agent's command line in every backend: everything on CPU 0 (as LMBENCH_SCHED=SINGLE:
/// on two vCPUs of a nested VM a wake-up across CPUs costs an IPI through the outer
/// hypervisor, and the round trips would be bimodal), the host's echo on descriptors 3 and 4,
/// or in a microVM on a vsock stream, where it also times the exit round trip.
fn agent_args(interval_ms: u64, files: usize, microvm: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "/bin/cellvisor-agent",
        "micro",
        "--cpu",
        "0",
        "--interval-ms",
    ]
    .map(String::from)
    .to_vec();
    a.push(interval_ms.to_string());
    if microvm {
        a.extend([
            "--host-vsock".into(),
            HOST_PORT.to_string(),
            "--exit-port".into(),
        ]);
    } else {
        a.extend(["--host-fds".into(), "3,4".into()]);
    }
    a.extend(["--macro".into(), "--files".into(), files.to_string()]);
    a
}

/// Run the agent's `micro` once in `b`; `work` holds the bundle (made by [`prepare`]).
fn run_once(
    b: &Backend,
    work: &Path,
    id: &str,
    interval_ms: u64,
    files: usize,
) -> Result<Vec<Figure>> {
    if b.kind == Kind::Microvm {
        return run_vm_once(b, work, id);
    }
    let (host_rx, dom_tx) = agent::micro::pipe().map_err(Error::Msg)?;
    let (dom_rx, host_tx) = agent::micro::pipe().map_err(Error::Msg)?;
    let mut cmd = match &b.runtime {
        None => {
            // Native: a plain host process, chrooted into the bundle's root only so that it
            // runs the very same programs (the agent, busybox's sh) as the domains.
            let rootfs = container::util::cstring(work.join("bundle/rootfs"));
            let args = agent_args(interval_ms, files, false);
            let mut c = Command::new(&args[0]);
            c.args(&args[1..]);
            // SAFETY: chroot and chdir with valid C strings between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    if libc::chroot(rootfs.as_ptr()) < 0 || libc::chdir(c"/".as_ptr()) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            c
        }
        Some(rt) => {
            let mut c = Command::new(rt);
            c.arg("--root")
                .arg(work.join(format!("state-{}", b.name())))
                .args(["run", "--preserve-fds", "2", "--bundle"])
                .arg(work.join("bundle"))
                .arg(id);
            c
        }
    };
    let (r, w) = (dom_rx.as_raw_fd(), dom_tx.as_raw_fd());
    // SAFETY: between fork and exec the child only moves two descriptors into place (dup2
    // clears close-on-exec on the copies).
    unsafe {
        cmd.pre_exec(move || {
            let (r2, w2) = (
                libc::fcntl(r, libc::F_DUPFD_CLOEXEC, 10),
                libc::fcntl(w, libc::F_DUPFD_CLOEXEC, 10),
            );
            if r2 < 0 || w2 < 0 || libc::dup2(r2, 3) < 0 || libc::dup2(w2, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = io(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn(),
        || format!("starting {}", b.name()),
    )?;
    drop((dom_rx, dom_tx));
    let echo = std::thread::spawn(move || {
        agent::micro::host_echo(host_rx.as_raw_fd(), host_tx.as_raw_fd());
        drop((host_rx, host_tx));
    });
    let out = io(child.wait_with_output(), || format!("running {}", b.name()))?;
    let _ = echo.join();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Msg(format!(
            "{}: {}",
            b.name(),
            err.lines().last().unwrap_or("failed")
        )));
    }
    parse(&out.stdout).map_err(|e| Error::Msg(e).within(b.name()))
}

/// Run the agent's `micro` once in a microVM (the bundle made by [`prepare_vm`]): the host's
/// echo listens at the guest's host port, the figures come on the VMM's console.
fn run_vm_once(b: &Backend, work: &Path, id: &str) -> Result<Vec<Figure>> {
    let rt = b.runtime.as_deref().unwrap_or(Path::new("cellvisor"));
    let dir = work.join("vm");
    let sock = vm::vsock_path(&dir.join("run"), HOST_PORT);
    let _ = std::fs::remove_file(&sock);
    let listener = io(UnixListener::bind(&sock), || {
        format!("listening on {}", sock.display())
    })?;
    let echo = std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            agent::micro::host_echo(s.as_raw_fd(), s.as_raw_fd());
        }
    });
    let state = work.join("state-microvm");
    let err_file = dir.join("run.err");
    let errf = io(std::fs::File::create(&err_file), || {
        format!("creating {}", err_file.display())
    })?;
    let child = Command::new(rt)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(dir.join("bundle"))
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(errf)
        .spawn();
    let r = match child {
        Ok(mut child) => {
            let mut console = vm::Console::new(child.stdout.take().expect("piped"));
            let r = vm::wait_boot(&mut console, &err_file)
                .and_then(|()| console.expect("GUEST-DONE", Instant::now() + VM_RUN_DEADLINE));
            if r.is_err() {
                let _ = Command::new(rt)
                    .arg("--root")
                    .arg(&state)
                    .args(["delete", "--force", id])
                    .output();
            }
            console.drain();
            let status = child.wait();
            r.and_then(|()| match status {
                Ok(s) if s.success() => parse(console.text.as_bytes()).map_err(Error::Msg),
                _ => Err(Error::Msg(format!(
                    "the VMM failed: {}",
                    std::fs::read_to_string(&err_file)
                        .unwrap_or_default()
                        .lines()
                        .last()
                        .unwrap_or("")
                ))),
            })
        }
        Err(e) => io(Err(e), || format!("starting {}", rt.display())),
    };
    // Wake the echo if the guest never connected.
    let _ = std::os::unix::net::UnixStream::connect(&sock);
    let _ = echo.join();
    let _ = std::fs::remove_file(&sock);
    r.map_err(|e| e.within(b.name()))
}

/// The microvm backend's bundle in `work/vm`: the suite's root (the bundle's rootfs, with
/// room for the saved files) as a shared ext4 image, and the jailed VMM running the agent.
fn prepare_vm(work: &Path, g: &vm::Guest, interval_ms: u64, files: usize) -> Result<()> {
    let dir = work.join("vm");
    io(std::fs::create_dir_all(dir.join("run")), || {
        format!("creating {}", dir.display())
    })?;
    let saved: usize = agent::workload::file_sizes(files).iter().sum();
    let image = dir.join("root.img");
    vm::root_image(
        &work.join("bundle/rootfs"),
        &image,
        (saved >> 20) as u64 * 2 + 64,
    )?;
    let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get().min(32) as u8);
    vm::bundle(
        g,
        &image,
        &dir.join("bundle"),
        Some(&dir.join("run")),
        &agent_args(interval_ms, files, true).join(" "),
        VM_MEM_MIB,
        vcpus,
    )
}

/// The agent's JSON line.
pub fn parse(stdout: &[u8]) -> std::result::Result<Vec<Figure>, String> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("{\"micro\""))
        .ok_or("no figures in the agent's output")?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    serde_json::from_value(v["micro"].clone()).map_err(|e| e.to_string())
}

/// The bundle every OCI backend runs: a busybox root with the agent at /bin/cellvisor-agent,
/// the application, and /data for the saved files; a writable root (the domain's own storage).
pub fn prepare(
    work: &Path,
    agent: &Path,
    app: &Path,
    interval_ms: u64,
    files: usize,
) -> Result<()> {
    let bundle = work.join("bundle");
    let rootfs = bundle.join("rootfs");
    crate::rootfs::busybox(&rootfs)?;
    io(
        std::fs::copy(agent, rootfs.join("bin/cellvisor-agent")),
        || format!("copying {}", agent.display()),
    )?;
    crate::rootfs::install_app(&rootfs, app)?;
    io(std::fs::create_dir_all(rootfs.join("data")), || {
        "creating /data".into()
    })?;
    // The native run's /dev (a domain's runtime mounts its own over it).
    for (name, minor) in [("null", 3), ("zero", 5)] {
        let p = container::util::cstring(rootfs.join("dev").join(name));
        // SAFETY: mknod with a valid C string.
        if unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, minor)) } < 0 {
            return Err(Error::Msg(format!(
                "mknod /dev/{name}: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    let mut spec = container::runtime::default_spec(false);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["root"]["readonly"] = serde_json::json!(false);
    spec["process"]["args"] = serde_json::json!(agent_args(interval_ms, files, false));
    io(
        std::fs::write(bundle.join("config.json"), spec.to_string()),
        || "writing config.json".into(),
    )
}

/// How much of the suite runs: rounds, timings, files, and the scalability's domain counts.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    /// Every backend once per round, shuffled.
    pub rounds: usize,
    /// Each timing of the agent's loops, ms.
    pub interval_ms: u64,
    /// Files the save benchmark writes.
    pub files: usize,
    /// The scalability's n: 1, 2, 4, ... up to its maximum.
    pub ns: Vec<usize>,
    /// How long the scalability's CPU and busy measurements last.
    pub window: Duration,
}

impl Plan {
    /// The full suite (7 rounds, up to 32 domains) or `quick` (2 rounds, up to 4); `rounds`
    /// and `max_domains` override.
    pub fn new(quick: bool, rounds: Option<usize>, max_domains: Option<usize>) -> Result<Plan> {
        let rounds = rounds.unwrap_or(if quick { 2 } else { 7 });
        if rounds == 0 {
            return Err(Error::Msg("--rounds must be at least 1".into()));
        }
        let max = max_domains.unwrap_or(if quick { 4 } else { 32 }).max(1);
        Ok(Plan {
            quick,
            rounds,
            // 5 ms: the interval LMbench settles on where its clock is fine enough.
            interval_ms: if quick { 2 } else { 5 },
            // The survey saves 100 files.
            files: if quick { 20 } else { 100 },
            ns: std::iter::successors(Some(1usize), |n| Some(n * 2))
                .take_while(|&n| n <= max)
                .collect(),
            window: Duration::from_millis(if quick { 300 } else { 1000 }),
        })
    }
}

/// Run the suite as `plan` says over `backends` (native first), in `work`.
pub fn run(
    backends: &[Backend],
    agent: &Path,
    app: &Path,
    work: &Path,
    plan: &Plan,
    progress: &mut dyn FnMut(&str),
) -> Result<Report> {
    if !app.is_file() {
        return Err(Error::Msg(format!(
            "the benchmark application {} is missing (cargo build puts it beside cellvisor)",
            app.display()
        )));
    }
    let (rounds, interval_ms, files) = (plan.rounds, plan.interval_ms, plan.files);
    prepare(work, agent, app, interval_ms, files)?;
    if let Some(g) = backends.iter().find_map(|b| b.guest.as_ref()) {
        prepare_vm(work, g, interval_ms, files)?;
    }
    let mut runs = Vec::new();
    let mut failed: Vec<Option<String>> = vec![None; backends.len()];
    let mut rng = Rng::new(0x5eed_5eed);
    let mut order: Vec<usize> = (0..backends.len()).collect();
    for round in 0..rounds {
        rng.shuffle(&mut order);
        for &i in &order {
            let b = &backends[i];
            progress(&format!("round {}/{rounds}: {}", round + 1, b.name()));
            if failed[i].is_some() {
                continue;
            }
            let id = format!("suite-{}-{round}", std::process::id());
            match run_once(b, work, &id, interval_ms, files) {
                Ok(figures) => runs.push(Run {
                    round,
                    backend: b.kind,
                    figures,
                }),
                // Native must run; a peer that cannot is reported and left out.
                Err(e) if i > 0 => failed[i] = Some(domain::chain(&e)),
                Err(e) => return Err(e),
            }
        }
    }
    let failed: Vec<Failed> = backends
        .iter()
        .zip(failed)
        .filter_map(|(b, e)| {
            Some(Failed {
                backend: b.kind,
                error: e?,
            })
        })
        .collect();
    runs.retain(|r| !failed.iter().any(|f| f.backend == r.backend));
    let backends: Vec<Backend> = backends
        .iter()
        .filter(|b| !failed.iter().any(|f| f.backend == b.kind))
        .cloned()
        .collect();
    let backends = &backends[..];
    let mut host = crate::host::facts();
    host["peers"] = backends
        .iter()
        .filter(|b| b.kind != Kind::Native)
        .map(|b| (b.name().to_string(), serde_json::json!(b.version)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    Ok(Report {
        benchmark: "survey Section 5: microbenchmarks, guest/host switch, macrobenchmarks",
        rounds,
        quick: plan.quick,
        interval_ms,
        host,
        backends: backends.to_vec(),
        rows: rows(backends, &runs),
        runs,
        failed,
    })
}

/// The terminal table: each test's native figure, then each backend's ratio to native.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "{} — {} rounds, backends shuffled in each round; ratio = backend / native within a round, median over rounds\n",
        r.benchmark, r.rounds
    );
    s += &format!("{:<20} {:>8} {:>12}", "test", "unit", "native");
    for b in r.backends.iter().skip(1) {
        s += &format!(" {:>12}", b.name());
    }
    s += "\n";
    for row in &r.rows {
        let native = row.cells[0].median;
        let native = if native.is_nan() {
            "-".into()
        } else {
            format!("{native:.3}")
        };
        s += &format!("{:<20} {:>8} {native:>12}", row.test, row.unit);
        for c in row.cells.iter().skip(1) {
            let cell = match (c.ratio_to_native.is_nan(), c.median.is_nan()) {
                (false, _) => format!("{:.3}x", c.ratio_to_native),
                // No native figure: the backend's own (the microVM's exit round trip).
                (true, false) => format!("{:.3}", c.median),
                (true, true) => "-".into(),
            };
            s += &format!(" {cell:>12}");
        }
        s += "\n";
    }
    for f in &r.failed {
        s += &format!("could not run {}\n", f.error);
    }
    s
}

/// One line per run and test: test,unit,backend,round,median,ratio_to_native.
pub fn csv(r: &Report) -> String {
    let mut s = String::from("test,unit,backend,round,median,ratio_to_native\n");
    for run in &r.runs {
        for f in &run.figures {
            let native = r
                .runs
                .iter()
                .find(|x| x.round == run.round && x.backend == Kind::Native)
                .and_then(|x| x.figures.iter().find(|g| g.name == f.name))
                .map(|g| g.median);
            s += &format!(
                "{},{},{},{},{:.6},{}\n",
                f.name,
                f.unit,
                run.backend,
                run.round,
                f.median,
                native.map_or(String::new(), |n| format!("{:.6}", f.median / n))
            );
        }
    }
    s
}

/// The macrobenchmarks' figures (the rest are microbenchmarks).
const MACRO: [&str; 3] = ["app_start", "codec", "save_"];

/// Write a run's reports into `dir`: results.json (every timing, the host, the scalability
/// points), results.csv, scale.csv, and the SVG plots. The files written.
pub fn write(dir: &Path, report: &Report, scale: &ScaleReport) -> Result<Vec<PathBuf>> {
    let mut doc = crate::json(serde_json::to_value(report), || "the report".into())?;
    doc["scale"] = crate::json(serde_json::to_value(scale), || "the report".into())?;
    let mut files = vec![crate::report::write_json(dir, "results.json", &doc)?];
    for (name, text) in [
        ("results.csv", csv(report)),
        ("scale.csv", crate::scale::csv(scale)),
    ] {
        let p = dir.join(name);
        io(std::fs::write(&p, text), || {
            format!("writing {}", p.display())
        })?;
        files.push(p);
    }
    let micro = |t: &str| !MACRO.iter().any(|m| t.starts_with(m));
    for (name, keep, title) in [
        ("micro.svg", &micro as &dyn Fn(&str) -> bool, "Microbenchmarks and guest/host switch, normalized to native (lower is better; pipe_bandwidth higher)"),
        ("macro.svg", &|t: &str| !micro(t), "Macrobenchmarks, normalized to native (app start, save: lower is better; codec: higher)"),
    ] {
        let p = dir.join(name);
        crate::plot::normalized(report, keep, title, &p)?;
        files.push(p);
    }
    files.extend(crate::scale::plots(scale, dir)?);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_output_parses() {
        let figs = parse(b"noise\n{\"micro\":[{\"name\":\"pipe_bandwidth\",\"unit\":\"MiB/s\",\"median\":2.0,\"samples\":[1.0,2.0,3.0]}]}\n").unwrap();
        assert_eq!(figs[0].name, "pipe_bandwidth");
        assert_eq!(figs[0].samples.len(), 3);
        assert!(parse(b"nothing").is_err());
    }
}
