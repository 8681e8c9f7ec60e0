//! Scalability with the number of domains, as the survey's Figures 8–10: for n = 1, 2, 4, ...
//! concurrent domains of each backend (native: n plain processes), the start latency (p50,
//! p99) and creation rate, the host's CPU use with the n domains idle, the throughput of n
//! busy domains (relative to n native processes), memory (PSS summed over each domain's
//! processes, the cgroup's own figure, and the host's MemTotal − MemAvailable, with its slope
//! per domain) and storage (each domain's private bytes plus the shared root over n).
//!
//! A microvm domain (vm.rs) boots its guest with the scale root as a shared ext4 image; it is
//! up when its guest prints DOMAIN-UP (start latency includes the guest kernel's boot), its
//! private storage is its copy-on-write layer (an unnamed file its VMM holds) and runtime
//! state, the shared is the image, kernel and initramfs. Its guest's clock is not the host's,
//! so a busy guest spins on the host's signal (over vsock) rather than on a wall-clock window.

use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::{Backend, Kind};
use crate::host::{cgroup_memory_kib, cgroup_pids, cpu_use, du_kib, host_used_kib, pss_kib, read};
use crate::report::{Point, ScaleFailed, ScaleReport, Slope};
use crate::stats::{median, quantile};
use crate::{io, vm, Error, Result};

/// A microvm domain's guest memory here (the profile's default).
const VM_MEM_MIB: u64 = domain::profile::DEFAULT_VM_MEMORY >> 20;
/// The host's vsock port a busy guest waits on for its start signal.
const SPIN_PORT: u32 = 5001;
/// What an idle microVM guest runs once up.
const VM_IDLE: &str = "echo DOMAIN-UP; exec sleep 1000000";

/// The bundles on one shared read-only root: `idle` runs sleep (each domain started with its
/// own cgroupsPath, `/cvscale-<pid>/<backend>-<i>`), `busy` the agent's spin. With a microvm
/// backend, that root as an ext4 image too (`vm/root.img`).
pub(crate) fn prepare(work: &Path, agent: &Path, guest: Option<&vm::Guest>) -> Result<()> {
    let rootfs = work.join("rootfs");
    crate::rootfs::busybox(&rootfs)?;
    io(
        std::fs::copy(agent, rootfs.join("bin/cellvisor-agent")),
        || format!("copying {}", agent.display()),
    )?;
    if guest.is_some() {
        io(std::fs::create_dir_all(work.join("vm")), || {
            "creating vm/".into()
        })?;
        vm::root_image(&rootfs, &work.join("vm/root.img"), 16)?;
    }
    for (name, args) in [
        ("idle", vec!["/bin/sleep", "1000000"]),
        ("busy", vec!["/bin/cellvisor-agent", "spin", "0", "0"]),
    ] {
        let b = work.join(name);
        io(std::fs::create_dir_all(&b), || {
            format!("creating {}", b.display())
        })?;
        let mut spec = container::runtime::default_spec(false);
        spec["process"]["terminal"] = serde_json::json!(false);
        spec["process"]["args"] = serde_json::json!(args);
        spec["root"]["path"] = serde_json::json!(rootfs);
        io(
            std::fs::write(b.join("config.json"), spec.to_string()),
            || "writing config.json".into(),
        )?;
    }
    Ok(())
}

/// Change a bundle's config.json.
fn edit_config(bundle: &Path, f: impl FnOnce(&mut serde_json::Value)) -> Result<()> {
    let path = bundle.join("config.json");
    let text = io(std::fs::read_to_string(&path), || {
        format!("reading {}", path.display())
    })?;
    let mut spec: serde_json::Value = crate::json(serde_json::from_str(&text), || {
        format!("reading {}", path.display())
    })?;
    f(&mut spec);
    io(std::fs::write(&path, spec.to_string()), || {
        format!("writing {}", path.display())
    })
}

/// Set a bundle's cgroupsPath for one domain.
fn with_cgroup(work: &Path, bundle: &str, cg: &str) -> Result<PathBuf> {
    let b = work.join(bundle);
    edit_config(&b, |spec| {
        spec["linux"]["cgroupsPath"] = serde_json::json!(cg)
    })?;
    Ok(b)
}

/// One domain of a backend.
pub(crate) struct Domain {
    id: String,
    cgroup: String,
    /// Native: the process itself.
    child: Option<Child>,
    /// A microVM: its console, read until the VMM ends (its reader must outlive the domain).
    _console: Option<vm::Console>,
}

fn runtime_cmd(rt: &Path, state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(rt);
    c.arg("--root").arg(state).args(args);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Run a runtime command whose container may outlive it (`run -d`: the container inherits the
/// runtime's stdio), so its errors go to a file, not a pipe that would stay open.
fn checked(mut c: Command, err_file: &Path, what: &str) -> Result<()> {
    let f = io(std::fs::File::create(err_file), || {
        format!("creating {}", err_file.display())
    })?;
    let st = io(c.stderr(f).status(), || what.to_string())?;
    if !st.success() {
        let e = read(err_file);
        return Err(Error::Msg(format!(
            "{what}: {}",
            e.lines().last().unwrap_or("failed")
        )));
    }
    Ok(())
}

/// A native process: `args` chrooted into the shared root (the same programs as the domains).
fn native_cmd(work: &Path, args: &[String]) -> Result<Command> {
    let root = container::util::cstring(work.join("rootfs"));
    let mut c = Command::new(&args[0]);
    c.args(&args[1..])
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: chroot and chdir with valid C strings between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if libc::chroot(root.as_ptr()) < 0 || libc::chdir(c"/".as_ptr()) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(c)
}

/// Microvm domain `i` of kind `kind`: its run directory (its VMM's vsock socket; made here).
fn vm_run_dir(work: &Path, kind: &str, i: usize) -> Result<PathBuf> {
    let run = work.join(format!("vm/run-{kind}-{i}"));
    io(std::fs::create_dir_all(&run), || {
        format!("creating {}", run.display())
    })?;
    Ok(run)
}

/// Start microvm domain `i` of kind `kind` (detached) running `cmd` in its guest, and wait for
/// the guest's DOMAIN-UP; its start time, ms.
fn start_vm(b: &Backend, work: &Path, kind: &str, i: usize, cmd: &str) -> Result<(Domain, f64)> {
    let (Some(g), Some(rt)) = (&b.guest, &b.runtime) else {
        return Err(Error::Msg(format!("{}: not a microvm backend", b.name())));
    };
    let id = format!("cvscale-{}-{kind}-{i}", std::process::id());
    let cgroup = format!("/cvscale-{}/{}-{i}", std::process::id(), b.name());
    let bdir = work.join(format!("vm/{kind}-{i}"));
    let run = vm_run_dir(work, kind, i)?;
    vm::bundle(
        g,
        &work.join("vm/root.img"),
        &bdir,
        Some(&run),
        cmd,
        VM_MEM_MIB,
        1,
    )?;
    edit_config(&bdir, |spec| {
        spec["linux"]["cgroupsPath"] = serde_json::json!(cgroup)
    })?;
    let state = work.join(format!("state-{}", b.name()));
    // The VMM's own errors go there too, for as long as it runs.
    let err_file = work.join(format!("vm/{kind}-{i}.err"));
    let errf = io(std::fs::File::create(&err_file), || {
        format!("creating {}", err_file.display())
    })?;
    let t = Instant::now();
    let mut c = runtime_cmd(rt, &state, &["run", "-d", "--bundle"]);
    c.arg(&bdir).arg(&id).stdout(Stdio::piped()).stderr(errf);
    let mut child = io(c.spawn(), || format!("{}: run -d", b.name()))?;
    let mut console = vm::Console::new(child.stdout.take().expect("piped"));
    let st = io(child.wait(), || format!("{}: run -d", b.name()))?;
    let d = Domain {
        id,
        cgroup,
        child: None,
        _console: None,
    };
    if !st.success() {
        let e = read(&err_file);
        return Err(Error::Msg(format!(
            "{}: run -d: {}",
            b.name(),
            e.lines().last().unwrap_or("failed")
        )));
    }
    let up = vm::wait_boot(&mut console, &err_file)
        .and_then(|()| console.expect("DOMAIN-UP", Instant::now() + vm::BOOT_DEADLINE));
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if let Err(e) = up {
        stop(b, work, d);
        return Err(e.within(b.name()));
    }
    Ok((
        Domain {
            _console: Some(console),
            ..d
        },
        ms,
    ))
}

/// Start domain `i` of `b` running bundle `bundle` (detached); its start time, ms.
pub(crate) fn start(b: &Backend, work: &Path, bundle: &str, i: usize) -> Result<(Domain, f64)> {
    if b.kind == Kind::Microvm {
        return start_vm(b, work, bundle, i, VM_IDLE);
    }
    let id = format!("cvscale-{}-{bundle}-{i}", std::process::id());
    let cgroup = format!("/cvscale-{}/{}-{i}", std::process::id(), b.name());
    let t = Instant::now();
    let d = match &b.runtime {
        None => {
            let spec = read(&work.join(bundle).join("config.json"));
            let what = || format!("{bundle}/config.json");
            let v: serde_json::Value = crate::json(serde_json::from_str(&spec), what)?;
            let args: Vec<String> =
                crate::json(serde_json::from_value(v["process"]["args"].clone()), what)?;
            let mut c = native_cmd(work, &args)?;
            c.stdout(Stdio::null());
            let child = io(c.spawn(), || "starting a native process".into())?;
            Domain {
                id,
                cgroup,
                child: Some(child),
                _console: None,
            }
        }
        Some(rt) => {
            let bdir = with_cgroup(work, bundle, &cgroup)?;
            let state = work.join(format!("state-{}", b.name()));
            let mut c = runtime_cmd(rt, &state, &["run", "-d", "--bundle"]);
            c.arg(&bdir).arg(&id);
            checked(c, &work.join("run.err"), &format!("{}: run -d", b.name()))?;
            Domain {
                id,
                cgroup,
                child: None,
                _console: None,
            }
        }
    };
    Ok((d, t.elapsed().as_secs_f64() * 1e3))
}

pub(crate) fn stop(b: &Backend, work: &Path, d: Domain) {
    match (&b.runtime, d.child) {
        (None, Some(mut c)) => {
            let _ = c.kill();
            let _ = c.wait();
        }
        (Some(rt), _) => {
            let state = work.join(format!("state-{}", b.name()));
            let mut c = runtime_cmd(rt, &state, &["delete", "--force"]);
            c.arg(&d.id);
            let _ = c.output();
        }
        _ => {}
    }
}

fn pids(b: &Backend, d: &Domain) -> Vec<u32> {
    match &d.child {
        Some(c) if b.kind == Kind::Native => vec![c.id()],
        _ => cgroup_pids(&d.cgroup),
    }
}

/// Milliseconds since the epoch (the host's and every domain's clock).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// n busy microVMs: each guest, once up, connects to the host's SPIN_PORT; when all have,
/// each gets the start signal, spins for the window and answers its count; their sum.
fn busy_vms(b: &Backend, work: &Path, n: usize, window: Duration) -> Result<u64> {
    use std::io::{BufRead, Write};
    let cmd = format!(
        "echo DOMAIN-UP; exec /bin/cellvisor-agent spin-go {SPIN_PORT} {}",
        window.as_millis()
    );
    let mut ds = Vec::new();
    let r = (|| -> Result<u64> {
        let mut listeners = Vec::new();
        for i in 0..n {
            let sock = vm::vsock_path(&vm_run_dir(work, "busy", i)?, SPIN_PORT);
            let _ = std::fs::remove_file(&sock);
            let l = io(UnixListener::bind(&sock), || {
                format!("listening on {}", sock.display())
            })?;
            io(l.set_nonblocking(true), || "a non-blocking listener".into())?;
            listeners.push(l);
            ds.push(start_vm(b, work, "busy", i, &cmd)?.0);
        }
        let deadline = Instant::now() + vm::BOOT_DEADLINE;
        let mut links = Vec::new();
        for l in &listeners {
            let s = loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            return Err(Error::Msg(format!(
                                "{}: a busy guest never connected",
                                b.name()
                            )));
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(source) => {
                        return Err(Error::Io {
                            what: format!("{}: accept", b.name()),
                            source,
                        })
                    }
                }
            };
            io(s.set_nonblocking(false), || "a blocking stream".into())?;
            io(s.set_read_timeout(Some(window + vm::BOOT_DEADLINE)), || {
                "a read timeout".into()
            })?;
            links.push(s);
        }
        for s in &mut links {
            io(s.write_all(b"g"), || "signalling a busy guest".into())?;
        }
        let mut total = 0;
        for s in links {
            let mut line = String::new();
            io(std::io::BufReader::new(s).read_line(&mut line), || {
                "reading a busy guest's count".into()
            })?;
            total += line
                .trim()
                .parse::<u64>()
                .map_err(|_| Error::Msg(format!("{}: a busy guest answered {line:?}", b.name())))?;
        }
        Ok(total)
    })();
    for d in ds {
        stop(b, work, d);
    }
    r
}

/// n busy domains at once: each waits for a common start, spins until a common end and
/// prints how many loop iterations it did; their sum. The start is far enough ahead for all n
/// to be up: a second, plus twice the slowest start seen with the idle domains, n times.
fn busy_round(
    b: &Backend,
    work: &Path,
    n: usize,
    window: Duration,
    slowest_start_ms: f64,
) -> Result<u64> {
    if b.kind == Kind::Microvm {
        return busy_vms(b, work, n, window);
    }
    let from = now_ms() + 1000 + (2.0 * slowest_start_ms * n as f64) as u64;
    let to = from + window.as_millis() as u64;
    let args = [
        "/bin/cellvisor-agent".to_string(),
        "spin".into(),
        from.to_string(),
        to.to_string(),
    ];
    let bdir = work.join("busy");
    edit_config(&bdir, |spec| {
        spec["process"]["args"] = serde_json::json!(args)
    })?;
    let mut kids = Vec::new();
    for i in 0..n {
        let mut c = match &b.runtime {
            None => native_cmd(work, &args)?,
            Some(rt) => {
                let state = work.join(format!("state-{}", b.name()));
                let mut c = runtime_cmd(rt, &state, &["run", "--bundle"]);
                c.arg(&bdir)
                    .arg(format!("cvspin-{}-{i}", std::process::id()));
                c
            }
        };
        c.stdout(Stdio::piped());
        kids.push(io(c.spawn(), || format!("starting {}", b.name()))?);
    }
    let mut total = 0u64;
    let mut bad = None;
    for k in kids {
        let o = io(k.wait_with_output(), || "waiting for spin".into())?;
        match String::from_utf8_lossy(&o.stdout).trim().parse::<u64>() {
            Ok(v) if o.status.success() => total += v,
            _ => bad = Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        }
    }
    match bad {
        Some(e) => Err(Error::Msg(format!("{}: busy domain failed: {e}", b.name()))),
        None => Ok(total),
    }
}

pub(crate) fn fit_slope(xy: &[(f64, f64)]) -> f64 {
    let n = xy.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let mx = xy.iter().map(|p| p.0).sum::<f64>() / n;
    let my = xy.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = xy.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = xy.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx.max(f64::MIN_POSITIVE)
}

/// Remove the parent cgroups the domains' cgroupsPaths made (`/cvscale-<pid>`), in every
/// hierarchy; the runtimes remove the domains' own.
pub(crate) fn remove_parent_cgroups() {
    let name = format!("cvscale-{}", std::process::id());
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(root) {
        dirs.extend(rd.flatten().map(|e| e.path()));
    }
    for d in dirs {
        let _ = std::fs::remove_dir(d.join(&name));
    }
}

/// Run the scalability measurements for `ns` over `backends` (native first).
pub fn run(
    backends: &[Backend],
    agent: &Path,
    work: &Path,
    ns: &[usize],
    window: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<ScaleReport> {
    let r = measure(backends, agent, work, ns, window, progress);
    remove_parent_cgroups();
    r
}

/// One backend with n domains: start them (idle), measure CPU, memory and storage, stop
/// them, then the busy round. `shared` is the storage all of them share, KiB.
fn point(b: &Backend, work: &Path, n: usize, window: Duration, shared: f64) -> Result<Point> {
    let cpu0 = cpu_use(window);
    let mem0 = host_used_kib();
    let mut ds = Vec::new();
    let mut times = Vec::new();
    let t = Instant::now();
    let started = (|| -> Result<()> {
        for i in 0..n {
            let (d, ms) = start(b, work, "idle", i)?;
            ds.push(d);
            times.push(ms);
        }
        Ok(())
    })();
    let all_ms = t.elapsed().as_secs_f64() * 1e3;
    let measured = started.map(|()| {
        std::thread::sleep(window / 2);
        let cpu = cpu_use(window);
        let mem = host_used_kib();
        let pss: f64 = ds.iter().flat_map(|d| pids(b, d)).map(pss_kib).sum();
        let cg: Option<f64> = match b.kind {
            Kind::Native => None,
            _ => ds.iter().map(|d| cgroup_memory_kib(&d.cgroup)).sum(),
        };
        let mut state = du_kib(&work.join(format!("state-{}", b.name())));
        if b.kind == Kind::Microvm {
            // The copy-on-write layers: unnamed files the VMMs hold.
            state += ds
                .iter()
                .flat_map(|d| pids(b, d))
                .map(crate::host::unnamed_files_kib)
                .sum::<f64>();
        }
        (cpu, mem, pss, cg, state)
    });
    for d in ds {
        stop(b, work, d);
    }
    let (cpu, mem, pss, cg, state) = measured?;
    let slowest = times.iter().copied().fold(0.0, f64::max);
    let busy = busy_round(b, work, n, window, slowest)?;
    let nf = n as f64;
    Ok(Point {
        backend: b.kind,
        n,
        start_p50_ms: median(&times).unwrap_or(f64::NAN),
        start_p99_ms: quantile(&times, 0.99).unwrap_or(f64::NAN),
        start_ms: times,
        creation_per_s: nf / (all_ms / 1e3),
        idle_cpu_pct: (cpu - cpu0).max(0.0),
        busy_ratio_to_native: None,
        busy_iterations: busy,
        pss_kib_per_domain: pss / nf,
        cgroup_kib_per_domain: cg.map(|c| c / nf),
        host_used_kib: mem - mem0,
        private_kib_per_domain: state / nf,
        shared_kib_per_domain: shared / nf,
    })
}

fn measure(
    backends: &[Backend],
    agent: &Path,
    work: &Path,
    ns: &[usize],
    window: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<ScaleReport> {
    let guest = backends.iter().find_map(|b| b.guest.as_ref());
    prepare(work, agent, guest)?;
    let shared_root = du_kib(&work.join("rootfs"));
    // A microVM shares the root image, its kernel and its initramfs.
    let shared_vm = guest.map_or(0.0, |g| {
        let size = |p: &Path| std::fs::metadata(p).map_or(0.0, |m| m.len() as f64 / 1024.0);
        du_kib(&work.join("vm/root.img")) + size(&g.kernel) + size(&g.initrd)
    });
    let mut points = Vec::new();
    let mut failed: Vec<ScaleFailed> = Vec::new();
    for &n in ns {
        for b in backends {
            if failed.iter().any(|f| f.backend == b.kind) {
                continue;
            }
            progress(&format!("{n} domains: {}", b.name()));
            let shared = if b.kind == Kind::Microvm {
                shared_vm
            } else {
                shared_root
            };
            match point(b, work, n, window, shared) {
                Ok(p) => points.push(p),
                // Native must run; a backend that cannot run n domains (memory, a guest
                // that does not boot) is reported, and not tried with more.
                Err(e) if b.kind != Kind::Native => failed.push(ScaleFailed {
                    backend: b.kind,
                    n,
                    error: domain::chain(&e),
                }),
                Err(e) => return Err(e),
            }
        }
    }
    for i in 0..points.len() {
        let native = points
            .iter()
            .find(|p| p.backend == Kind::Native && p.n == points[i].n)
            .map(|p| p.busy_iterations);
        points[i].busy_ratio_to_native = native
            .filter(|&x| x > 0)
            .map(|x| points[i].busy_iterations as f64 / x as f64);
    }
    let slopes = backends
        .iter()
        .map(|b| Slope {
            backend: b.kind,
            host_kib_per_domain: fit_slope(
                &points
                    .iter()
                    .filter(|p| p.backend == b.kind)
                    .map(|p| (p.n as f64, p.host_used_kib))
                    .collect::<Vec<_>>(),
            ),
        })
        .collect();
    Ok(ScaleReport {
        ns: ns.to_vec(),
        points,
        slopes,
        failed,
    })
}

/// The terminal table: one line per n and backend, then the memory slopes.
pub fn table(r: &ScaleReport) -> String {
    let mut s = String::from("scalability: n domains of each backend (native: n processes)\n");
    s += &format!(
        "{:>3} {:<10} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10} {:>10}\n",
        "n",
        "backend",
        "start p50",
        "p99 ms",
        "new/s",
        "idle %",
        "busy/nat",
        "PSS KiB",
        "cg KiB",
        "host KiB",
        "store KiB"
    );
    for p in &r.points {
        s += &format!(
            "{:>3} {:<10} {:>9.1} {:>9.1} {:>8.1} {:>8.2} {:>8} {:>9.0} {:>9} {:>10.0} {:>10.0}\n",
            p.n,
            p.backend,
            p.start_p50_ms,
            p.start_p99_ms,
            p.creation_per_s,
            p.idle_cpu_pct,
            p.busy_ratio_to_native
                .map_or("-".into(), |v| format!("{v:.3}")),
            p.pss_kib_per_domain,
            p.cgroup_kib_per_domain
                .map_or("-".into(), |v| format!("{v:.0}")),
            p.host_used_kib,
            p.private_kib_per_domain + p.shared_kib_per_domain,
        );
    }
    for sl in &r.slopes {
        s += &format!(
            "{}: host memory per added domain {:.0} KiB\n",
            sl.backend, sl.host_kib_per_domain
        );
    }
    for f in &r.failed {
        s += &format!(
            "could not run {} with {} domains: {}\n",
            f.backend, f.n, f.error
        );
    }
    s
}

/// One line per n and backend.
pub fn csv(r: &ScaleReport) -> String {
    let mut s = String::from("n,backend,start_p50_ms,start_p99_ms,creation_per_s,idle_cpu_pct,busy_ratio_to_native,pss_kib_per_domain,cgroup_kib_per_domain,host_used_kib,private_kib_per_domain,shared_kib_per_domain\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
    for p in &r.points {
        s += &format!(
            "{},{},{:.3},{:.3},{:.3},{:.3},{},{:.1},{},{:.1},{:.1},{:.1}\n",
            p.n,
            p.backend,
            p.start_p50_ms,
            p.start_p99_ms,
            p.creation_per_s,
            p.idle_cpu_pct,
            opt(p.busy_ratio_to_native),
            p.pss_kib_per_domain,
            opt(p.cgroup_kib_per_domain),
            p.host_used_kib,
            p.private_kib_per_domain,
            p.shared_kib_per_domain
        );
    }
    s
}

/// The survey's Figures 8–10 for this run: CPU, memory and storage over n, into `dir`.
pub fn plots(r: &ScaleReport, dir: &Path) -> Result<Vec<PathBuf>> {
    let series = |f: &dyn Fn(&Point) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
        let mut kinds: Vec<Kind> = Vec::new();
        for p in &r.points {
            if !kinds.contains(&p.backend) {
                kinds.push(p.backend);
            }
        }
        kinds
            .into_iter()
            .map(|b| {
                let pts = r
                    .points
                    .iter()
                    .filter(|p| p.backend == b)
                    .map(|p| (p.n as f64, f(p)))
                    .collect();
                (b.name().to_string(), pts)
            })
            .collect()
    };
    let out = [
        (
            "scale-cpu.svg",
            "CPU use with n idle domains (Figure 8)",
            "host CPU, % of all CPUs",
            series(&|p| p.idle_cpu_pct),
        ),
        (
            "scale-memory.svg",
            "Memory with n domains (Figure 9)",
            "PSS of all their processes, MiB",
            series(&|p| p.pss_kib_per_domain * p.n as f64 / 1024.0),
        ),
        (
            "scale-storage.svg",
            "Storage with n domains (Figure 10)",
            "private x n + shared, MiB",
            series(&|p| (p.private_kib_per_domain + p.shared_kib_per_domain) * p.n as f64 / 1024.0),
        ),
    ];
    let mut paths = Vec::new();
    for (file, title, y, s) in out {
        let p = dir.join(file);
        crate::plot::lines(title, y, &s, &p)?;
        paths.push(p);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line() {
        let pts: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0]
            .iter()
            .map(|&n| (n, 100.0 + 250.0 * n))
            .collect();
        assert!((fit_slope(&pts) - 250.0).abs() < 1e-9);
        assert!(fit_slope(&pts[..1]).is_nan());
    }
}
