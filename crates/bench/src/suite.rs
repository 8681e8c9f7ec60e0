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

use serde::Serialize;

use crate::stats::{median, Rng};
use crate::{io, vm, Error, Result};

/// One way to run the workload.
#[derive(Debug, Clone, Serialize)]
pub struct Backend {
    pub name: String,
    /// The OCI runtime (none for native; cellvisor for a microVM, whose VMM it jails).
    pub runtime: Option<PathBuf>,
    pub version: String,
    /// What a microvm backend boots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<vm::Guest>,
}

/// The backends named (native first, always), or why one cannot run. `guest` is what the
/// microvm backend boots (`--kernel`, `--initrd`).
pub fn backends(
    names: &[String],
    cellvisor: &Path,
    guest: Option<vm::Guest>,
) -> Result<Vec<Backend>> {
    let mut out = vec![Backend {
        name: "native".into(),
        runtime: None,
        version: String::new(),
        guest: None,
    }];
    for n in names {
        match n.as_str() {
            "native" => {}
            "container" => {
                let rt = crate::start::runtime("cellvisor", cellvisor)
                    .ok_or_else(|| Error::Msg(format!("{}: cannot run", cellvisor.display())))?;
                out.push(Backend {
                    name: "container".into(),
                    runtime: Some(rt.path),
                    version: rt.version,
                    guest: None,
                });
            }
            "runc" | "crun" => match crate::start::runtime(n, cellvisor) {
                Some(rt) => out.push(Backend {
                    name: n.clone(),
                    runtime: Some(rt.path),
                    version: rt.version,
                    guest: None,
                }),
                None => return Err(Error::Msg(format!("--backends: {n} is not installed"))),
            },
            "microvm" => {
                let g = guest.clone().ok_or_else(|| {
                    Error::Msg(
                        "--backends microvm needs --kernel K --initrd I (scripts/mkinitramfs.sh makes I)"
                            .into(),
                    )
                })?;
                let rt = crate::start::runtime("cellvisor", cellvisor)
                    .ok_or_else(|| Error::Msg(format!("{}: cannot run", cellvisor.display())))?;
                let kernel = g.kernel.file_name().unwrap_or_default().to_string_lossy();
                out.push(Backend {
                    name: "microvm".into(),
                    runtime: Some(rt.path),
                    version: format!("{}, guest {kernel}", rt.version),
                    guest: Some(g),
                });
            }
            other => {
                return Err(Error::Msg(format!(
                    "--backends: unknown backend {other:?} (native, container, microvm, runc, crun)"
                )))
            }
        }
    }
    Ok(out)
}

/// One run of one backend in one round: each figure's median of 11 and the 11 timings.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub round: usize,
    pub backend: String,
    pub figures: Vec<Figure>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub median: f64,
    pub samples: Vec<f64>,
}

/// A test's result for one backend over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub backend: String,
    /// Median over rounds of the run medians.
    pub median: f64,
    /// Median over rounds of (this backend / native) within each round.
    pub ratio_to_native: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub test: String,
    pub unit: String,
    /// Whether a higher figure is better (bandwidth) or a lower one (latency).
    pub higher_is_better: bool,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub rounds: usize,
    pub quick: bool,
    pub interval_ms: u64,
    pub host: serde_json::Value,
    pub backends: Vec<Backend>,
    pub rows: Vec<Row>,
    /// Every run, with every timing.
    pub runs: Vec<Run>,
    /// Backends that could not run (left out of rows and runs).
    pub failed: Vec<Failed>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub backend: String,
    pub error: String,
}

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
    if b.guest.is_some() {
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
                .arg(work.join(format!("state-{}", b.name)))
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
        || format!("starting {}", b.name),
    )?;
    drop((dom_rx, dom_tx));
    let echo = std::thread::spawn(move || {
        agent::micro::host_echo(host_rx.as_raw_fd(), host_tx.as_raw_fd());
        drop((host_rx, host_tx));
    });
    let out = io(child.wait_with_output(), || format!("running {}", b.name))?;
    let _ = echo.join();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Msg(format!(
            "{}: {}",
            b.name,
            err.lines().last().unwrap_or("failed")
        )));
    }
    parse(&out.stdout).map_err(|e| Error::Msg(e).within(&b.name))
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
    r.map_err(|e| e.within(&b.name))
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

/// Remove what a suite run under `work` made, when it is stopped part way (a signal): its
/// child processes (runtimes, native domains), every container in the runtimes' state
/// directories (the suite's and the scalability's, detached domains and microVMs included),
/// the cgroups of this run's domains and the scalability's parents, and `work` itself.
pub fn teardown(work: &Path, backends: &[Backend]) {
    let me = std::process::id().to_string();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for pid in rd
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The parent pid is the second field after the command's closing parenthesis.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1));
            if ppid == Some(me.as_str()) {
                // SAFETY: kill(2) on a child of ours.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    for b in backends {
        let Some(rt) = &b.runtime else { continue };
        for state in [
            work.join(format!("state-{}", b.name)),
            work.join(format!("scale/state-{}", b.name)),
        ] {
            for e in std::fs::read_dir(&state).into_iter().flatten().flatten() {
                let _ = Command::new(rt)
                    .arg("--root")
                    .arg(&state)
                    .args(["delete", "--force"])
                    .arg(e.file_name())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
    // What a runtime killed part way through a create left: cgroups named after this run's
    // containers (suite-, cvspin-, cvscale-<pid>), their processes killed first.
    let pid = std::process::id();
    let ours = [
        format!("suite-{pid}-"),
        format!("cvspin-{pid}-"),
        format!("cvscale-{pid}"),
    ];
    for root in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        remove_cgroups(&root.path(), &ours, 3);
    }
    remove_cgroups(Path::new("/sys/fs/cgroup"), &ours, 3);
    let _ = std::fs::remove_dir_all(work);
}

/// Remove the cgroups below `dir` (at most `depth` levels down) whose names start with one of
/// `names`, with everything under them: processes killed, then directories deepest first.
fn remove_cgroups(dir: &Path, names: &[String], depth: usize) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if names.iter().any(|n| name.starts_with(n.as_str())) {
            remove_tree(&p);
        } else if depth > 1 {
            remove_cgroups(&p, names, depth - 1);
        }
    }
}

fn remove_tree(cg: &Path) {
    for e in std::fs::read_dir(cg).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_tree(&e.path());
        }
    }
    for _ in 0..50 {
        let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) on a process of this run's own domain.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if std::fs::remove_dir(cg).is_ok() || !cg.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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

/// The interpreter (dynamic loader) an ELF program names (PT_INTERP), if any.
fn interpreter(elf: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    // A 64-bit little-endian ELF only (the suite's application is built here).
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(0x20)? as usize, u16_at(0x36)?, u16_at(0x38)?);
    (0..phnum as usize).find_map(|i| {
        let ph = phoff + i * phentsize as usize;
        if elf.get(ph..ph + 4)? != 3u32.to_le_bytes() {
            return None; // not PT_INTERP
        }
        let (off, len) = (u64_at(ph + 8)? as usize, u64_at(ph + 32)? as usize);
        let name = elf.get(off..off + len)?.split(|&b| b == 0).next()?;
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(name)))
    })
}

/// The shared libraries a dynamic program loads, its interpreter too: what its loader's
/// `--list` prints (as `ldd` does, without needing ldd on the machine).
fn libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let elf = io(std::fs::read(program), || {
        format!("reading {}", program.display())
    })?;
    let Some(interp) = interpreter(&elf) else {
        return Ok(Vec::new()); // static
    };
    let out = io(
        Command::new(&interp).arg("--list").arg(program).output(),
        || format!("{} --list {}", interp.display(), program.display()),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

/// The application of the macrobenchmarks in `rootfs/app`: the dynamically linked
/// `cellvisor-app` with its libraries (copies, at their paths: a start after eviction reads
/// them from disk), 32 MiB of assets, and the list of those files (`/app/files`).
fn install_app(rootfs: &Path, app: &Path) -> Result<()> {
    let dir = rootfs.join("app");
    io(std::fs::create_dir_all(&dir), || {
        format!("creating {}", dir.display())
    })?;
    io(std::fs::copy(app, dir.join("cellvisor-app")), || {
        format!("copying {}", app.display())
    })?;
    let mut files = vec![PathBuf::from("/app/cellvisor-app")];
    for lib in libraries(app)? {
        let rel = lib.strip_prefix("/").unwrap_or(&lib);
        let dst = rootfs.join(rel);
        if let Some(d) = dst.parent() {
            io(std::fs::create_dir_all(d), || {
                format!("creating {}", d.display())
            })?;
        }
        io(std::fs::copy(&lib, &dst), || {
            format!("copying {}", lib.display())
        })?;
        files.push(lib);
    }
    let mut assets = vec![0u8; 32 << 20];
    let mut seed: u64 = 0x1234_5678_9abc_def1;
    for chunk in assets.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
    }
    io(std::fs::write(dir.join("assets.bin"), &assets), || {
        "writing the assets".into()
    })?;
    files.push("/app/assets.bin".into());
    let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    io(std::fs::write(dir.join("files"), list), || {
        "writing /app/files".into()
    })
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
    crate::start::busybox_rootfs(&rootfs)?;
    io(
        std::fs::copy(agent, rootfs.join("bin/cellvisor-agent")),
        || format!("copying {}", agent.display()),
    )?;
    install_app(&rootfs, app)?;
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

/// Run the suite: `rounds` rounds over `backends` (native first), `interval_ms` per timing.
#[allow(clippy::too_many_arguments)]
pub fn run(
    backends: &[Backend],
    agent: &Path,
    app: &Path,
    work: &Path,
    rounds: usize,
    interval_ms: u64,
    files: usize,
    quick: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Report> {
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
            progress(&format!("round {}/{rounds}: {}", round + 1, b.name));
            if failed[i].is_some() {
                continue;
            }
            let id = format!("suite-{}-{round}", std::process::id());
            match run_once(b, work, &id, interval_ms, files) {
                Ok(figures) => runs.push(Run {
                    round,
                    backend: b.name.clone(),
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
                backend: b.name.clone(),
                error: e?,
            })
        })
        .collect();
    runs.retain(|r| !failed.iter().any(|f| f.backend == r.backend));
    let backends: Vec<Backend> = backends
        .iter()
        .filter(|b| !failed.iter().any(|f| f.backend == b.name))
        .cloned()
        .collect();
    let backends = &backends[..];
    let mut host = crate::start::host_facts();
    host["peers"] = backends
        .iter()
        .filter(|b| b.runtime.is_some())
        .map(|b| (b.name.clone(), serde_json::json!(b.version)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    Ok(Report {
        benchmark: "survey Section 5: microbenchmarks, guest/host switch, macrobenchmarks",
        rounds,
        quick,
        interval_ms,
        host,
        backends: backends.to_vec(),
        rows: rows(backends, &runs),
        runs,
        failed,
    })
}

/// Per test and backend: the median over rounds, and the median of the in-round ratios.
/// Tests in native's order, then those only some backends have (the microVM's exit round
/// trip: no native figure, no ratio).
fn rows(backends: &[Backend], runs: &[Run]) -> Vec<Row> {
    if !runs.iter().any(|r| r.backend == "native") {
        return Vec::new();
    }
    let mut tests: Vec<&Figure> = Vec::new();
    for r in runs.iter().filter(|r| r.backend == "native").chain(runs) {
        for f in &r.figures {
            if !tests.iter().any(|t| t.name == f.name) {
                tests.push(f);
            }
        }
    }
    let value = |round: usize, backend: &str, test: &str| {
        runs.iter()
            .find(|r| r.round == round && r.backend == backend)
            .and_then(|r| r.figures.iter().find(|f| f.name == test))
            .map(|f| f.median)
    };
    let rounds = runs.iter().map(|r| r.round + 1).max().unwrap_or(0);
    tests
        .into_iter()
        .map(|f| Row {
            test: f.name.clone(),
            unit: f.unit.clone(),
            higher_is_better: f.unit.ends_with("/s"),
            cells: backends
                .iter()
                .map(|b| {
                    let vals: Vec<f64> = (0..rounds)
                        .filter_map(|k| value(k, &b.name, &f.name))
                        .collect();
                    let ratios: Vec<f64> = (0..rounds)
                        .filter_map(|k| {
                            Some(value(k, &b.name, &f.name)? / value(k, "native", &f.name)?)
                        })
                        .collect();
                    Cell {
                        backend: b.name.clone(),
                        median: median(&vals).unwrap_or(f64::NAN),
                        ratio_to_native: median(&ratios).unwrap_or(f64::NAN),
                    }
                })
                .collect(),
        })
        .collect()
}

/// The terminal table: each test's native figure, then each backend's ratio to native.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "{} — {} rounds, backends shuffled in each round; ratio = backend / native within a round, median over rounds\n",
        r.benchmark, r.rounds
    );
    s += &format!("{:<20} {:>8} {:>12}", "test", "unit", "native");
    for b in r.backends.iter().skip(1) {
        s += &format!(" {:>12}", b.name);
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
                .find(|x| x.round == run.round && x.backend == "native")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: usize, backend: &str, v: f64) -> Run {
        Run {
            round,
            backend: backend.into(),
            figures: vec![Figure {
                name: "null_syscall".into(),
                unit: "us".into(),
                median: v,
                samples: vec![v; 11],
            }],
        }
    }

    fn backends(names: &[&str]) -> Vec<Backend> {
        names
            .iter()
            .map(|n| Backend {
                name: n.to_string(),
                runtime: None,
                version: String::new(),
                guest: None,
            })
            .collect()
    }

    #[test]
    fn ratios_are_taken_within_a_round() {
        let bs = backends(&["native", "container"]);
        // A noisy machine: round 1 is twice as slow for both; the ratio stays 1.1.
        let runs = vec![
            run(0, "native", 1.0),
            run(0, "container", 1.1),
            run(1, "native", 2.0),
            run(1, "container", 2.2),
            run(2, "native", 1.0),
            run(2, "container", 1.1),
        ];
        let rows = rows(&bs, &runs);
        assert_eq!(rows.len(), 1);
        assert!((rows[0].cells[1].ratio_to_native - 1.1).abs() < 1e-9);
        assert_eq!(rows[0].cells[0].median, 1.0);
        assert!(!rows[0].higher_is_better);
    }

    #[test]
    fn a_dynamic_programs_loader_and_libraries_are_found() {
        // This test binary is dynamically linked: its loader, then libc among its libraries.
        let me = std::env::current_exe().unwrap();
        let interp = interpreter(&std::fs::read(&me).unwrap()).unwrap();
        assert!(
            interp.is_absolute() && interp.exists(),
            "{}",
            interp.display()
        );
        let libs = libraries(&me).unwrap();
        assert!(libs.contains(&interp), "{libs:?}");
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert_eq!(interpreter(b"\x7fELF\x01\x01 32-bit"), None);
        assert_eq!(interpreter(b"#!/bin/sh"), None);
    }

    #[test]
    fn a_figure_only_one_backend_has_gets_a_row_without_ratio() {
        let bs = backends(&["native", "microvm"]);
        let mut vm = run(0, "microvm", 2.0);
        vm.figures.push(Figure {
            name: "vm_exit".into(),
            unit: "us".into(),
            median: 9.0,
            samples: vec![9.0],
        });
        let rows = rows(&bs, &[run(0, "native", 1.0), vm]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].test, "vm_exit");
        assert!(rows[1].cells[0].median.is_nan());
        assert_eq!(rows[1].cells[1].median, 9.0);
        assert!(rows[1].cells[1].ratio_to_native.is_nan());
        assert!((rows[0].cells[1].ratio_to_native - 2.0).abs() < 1e-9);
    }

    #[test]
    fn the_agents_output_parses() {
        let figs = parse(b"noise\n{\"micro\":[{\"name\":\"pipe_bandwidth\",\"unit\":\"MiB/s\",\"median\":2.0,\"samples\":[1.0,2.0,3.0]}]}\n").unwrap();
        assert_eq!(figs[0].name, "pipe_bandwidth");
        assert_eq!(figs[0].samples.len(), 3);
        assert!(parse(b"nothing").is_err());
    }
}
