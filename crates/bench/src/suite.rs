//! The survey's Section 5 on this machine: the same workloads natively and in every backend,
//! side by side. Each round runs every backend once, in shuffled order; a backend's figure in
//! a round is the median of its 11 timings (the agent's `micro`), its ratio to native is taken
//! within the round, and the report gives the median over rounds of both.
//!
//! Backends: `native` (the agent as a host process, chrooted into the bundle's root so that
//! it runs the same programs), `container` (a cellvisor container: the
//! OCI runtime of this project, default spec with its seccomp filter, namespaces and cgroups),
//! `runc` and `crun` (the same bundle under the peers). The agent's `micro` measures the
//! LMbench-style microbenchmarks and the guest/host switch: a 1-byte round trip with a host
//! thread over a pipe pair handed into the domain (descriptors 3 and 4). Then the
//! macrobenchmarks (`--macro`): the start of a dynamically linked application mapping 32 MiB
//! of assets (cold: its files evicted from the page cache first; warm), a PNG codec's frames
//! per second, and saving 100 files of 10 KB to 5 MB, each synced, into the domain's own root.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::stats::{median, Rng};
use crate::{io, Error, Result};

/// One way to run the workload.
#[derive(Debug, Clone, Serialize)]
pub struct Backend {
    pub name: String,
    /// The OCI runtime (none for native).
    pub runtime: Option<PathBuf>,
    pub version: String,
}

/// The backends named (native first, always), or why one cannot run.
pub fn backends(names: &[String], cellvisor: &Path) -> Result<Vec<Backend>> {
    let mut out = vec![Backend {
        name: "native".into(),
        runtime: None,
        version: String::new(),
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
                });
            }
            "runc" | "crun" => match crate::start::runtime(n, cellvisor) {
                Some(rt) => out.push(Backend {
                    name: n.clone(),
                    runtime: Some(rt.path),
                    version: rt.version,
                }),
                None => return Err(Error::Msg(format!("--backends: {n} is not installed"))),
            },
            "microvm" => {
                return Err(Error::Msg(
                    "--backends: microvm is not in the suite yet (its boot, memory and exit figures: `cellvisor bench boot|vms`)".into(),
                ))
            }
            other => {
                return Err(Error::Msg(format!(
                    "--backends: unknown backend {other:?} (native, container, runc, crun)"
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

/// Run the agent's `micro` once in `b`; `work` holds the bundle (made by [`prepare`]).
/// The agent's command line in every backend.
fn agent_args(interval_ms: u64, files: usize) -> Vec<String> {
    [
        "/bin/cellvisor-agent",
        "micro",
        "--host-fds",
        "3,4",
        "--interval-ms",
        &interval_ms.to_string(),
        "--macro",
        "--files",
        &files.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

fn run_once(
    b: &Backend,
    work: &Path,
    id: &str,
    interval_ms: u64,
    files: usize,
) -> Result<Vec<Figure>> {
    let (host_rx, dom_tx) = agent::micro::pipe().map_err(Error::Msg)?;
    let (dom_rx, host_tx) = agent::micro::pipe().map_err(Error::Msg)?;
    let mut cmd = match &b.runtime {
        None => {
            // Native: a plain host process, chrooted into the bundle's root only so that it
            // runs the very same programs (the agent, busybox's sh) as the domains.
            let rootfs = container::util::cstring(work.join("bundle/rootfs"));
            let args = agent_args(interval_ms, files);
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
    parse(&out.stdout).map_err(|e| Error::Msg(format!("{}: {e}", b.name)))
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

/// The shared libraries a dynamic program loads (as `ldd` lists them), its interpreter too.
fn libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let out = io(Command::new("ldd").arg(program).output(), || {
        format!("ldd {}", program.display())
    })?;
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
    spec["process"]["args"] = serde_json::json!(agent_args(interval_ms, files));
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
                Err(e) if i > 0 => failed[i] = Some(e.to_string()),
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
fn rows(backends: &[Backend], runs: &[Run]) -> Vec<Row> {
    let Some(first) = runs.iter().find(|r| r.backend == "native") else {
        return Vec::new();
    };
    let value = |round: usize, backend: &str, test: &str| {
        runs.iter()
            .find(|r| r.round == round && r.backend == backend)
            .and_then(|r| r.figures.iter().find(|f| f.name == test))
            .map(|f| f.median)
    };
    let rounds = runs.iter().map(|r| r.round + 1).max().unwrap_or(0);
    first
        .figures
        .iter()
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
        s += &format!(
            "{:<20} {:>8} {:>12.3}",
            row.test, row.unit, row.cells[0].median
        );
        for c in row.cells.iter().skip(1) {
            s += &format!(" {:>12}", format!("{:.3}x", c.ratio_to_native));
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

    #[test]
    fn ratios_are_taken_within_a_round() {
        let bs: Vec<Backend> = ["native", "container"]
            .iter()
            .map(|n| Backend {
                name: n.to_string(),
                runtime: None,
                version: String::new(),
            })
            .collect();
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
    fn the_agents_output_parses() {
        let figs = parse(b"noise\n{\"micro\":[{\"name\":\"pipe_bandwidth\",\"unit\":\"MiB/s\",\"median\":2.0,\"samples\":[1.0,2.0,3.0]}]}\n").unwrap();
        assert_eq!(figs[0].name, "pipe_bandwidth");
        assert_eq!(figs[0].samples.len(), 3);
        assert!(parse(b"nothing").is_err());
    }
}
