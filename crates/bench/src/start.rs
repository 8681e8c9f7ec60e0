//! Container start: `run` of a /bin/true container (create + start + wait + delete, as
//! `podman run --rm` needs), N rounds, every runtime once per round in shuffled order, on one
//! bundle. Reports medians, ratios to crun, the peak RSS of the runtime process, and for
//! cellvisor the time of each phase (from its `CELLVISOR_TIMINGS` marks).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use crate::stats::{median, quantile, Rng};
use crate::{io, Error, Result};

/// One runtime under test: a name and the program to run.
#[derive(Debug, Clone, Serialize)]
pub struct Runtime {
    pub name: String,
    pub path: PathBuf,
    pub version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeResult {
    pub runtime: Runtime,
    /// Wall time of each run, ms.
    pub samples_ms: Vec<f64>,
    /// Peak resident set of the runtime process (and what it waited for), KiB.
    pub maxrss_kib: Vec<u64>,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub median_maxrss_kib: u64,
    /// median / crun's median, when crun ran.
    pub ratio_to_crun: Option<f64>,
    /// Why it could not run, if it could not.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub phase: String,
    pub median_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub rounds: usize,
    pub host: serde_json::Value,
    pub results: Vec<RuntimeResult>,
    /// cellvisor's own phases, medians over the rounds.
    pub cellvisor_phases: Vec<Phase>,
}

/// Find a runtime by name on PATH, or take a path.
pub fn runtime(name: &str, cellvisor: &Path) -> Option<Runtime> {
    let path = if name == "cellvisor" {
        cellvisor.to_path_buf()
    } else if name.contains('/') {
        PathBuf::from(name)
    } else {
        std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
            .unwrap_or(None)?
    };
    let out = Command::new(&path).arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let name = Path::new(name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Some(Runtime {
        name,
        path,
        version,
    })
}

/// Run `cmd`, returning wall ms and the peak RSS (KiB) that wait4 reports.
fn timed(cmd: &mut Command) -> Result<(f64, u64, bool, String)> {
    let t = Instant::now();
    let child = io(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn(),
        || "spawning".into(),
    )?;
    let pid = child.id() as i32;
    let mut stderr = child.stderr;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if r < 0 {
        return Err(Error::Msg(format!(
            "wait4: {}",
            std::io::Error::last_os_error()
        )));
    }
    let mut err = String::new();
    if let Some(e) = stderr.as_mut() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((ms, ru.ru_maxrss as u64, ok, err.trim().to_string()))
}

/// Run the benchmark. `work` holds the bundle and the runtimes' state roots.
pub fn run(
    runtimes: &[Runtime],
    rounds: usize,
    work: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report> {
    let bundle = work.join("bundle");
    crate::rootfs::busybox(&bundle.join("rootfs"))?;
    let mut spec = container::runtime::default_spec(false);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    io(
        std::fs::write(bundle.join("config.json"), spec.to_string()),
        || "writing config.json".into(),
    )?;
    let timings = work.join("timings.jsonl");
    let _ = std::fs::remove_file(&timings);

    let mut samples: Vec<Vec<(f64, u64)>> = vec![Vec::new(); runtimes.len()];
    let mut errors: Vec<Option<String>> = vec![None; runtimes.len()];
    let mut rng = Rng::new(0x5eed);
    let mut order: Vec<usize> = (0..runtimes.len()).collect();
    for round in 0..rounds {
        rng.shuffle(&mut order);
        for &i in &order {
            if errors[i].is_some() {
                continue;
            }
            let rt = &runtimes[i];
            let id = format!("bench-{}-{round}", std::process::id());
            let mut cmd = Command::new(&rt.path);
            cmd.arg("--root")
                .arg(work.join(format!("state-{}", rt.name)))
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(&id);
            if rt.name == "cellvisor" {
                cmd.env("CELLVISOR_TIMINGS", &timings);
            }
            let (ms, rss, ok, err) = timed(&mut cmd)?;
            if ok {
                samples[i].push((ms, rss));
            } else {
                errors[i] = Some(err.lines().last().unwrap_or("failed").to_string());
            }
        }
        progress(round + 1, rounds);
    }
    let crun_median = runtimes
        .iter()
        .position(|r| r.name == "crun")
        .and_then(|i| median(&samples[i].iter().map(|s| s.0).collect::<Vec<_>>()));
    let results = runtimes
        .iter()
        .enumerate()
        .map(|(i, rt)| {
            let ms: Vec<f64> = samples[i].iter().map(|s| s.0).collect();
            let rss: Vec<u64> = samples[i].iter().map(|s| s.1).collect();
            let med = median(&ms).unwrap_or(f64::NAN);
            RuntimeResult {
                runtime: rt.clone(),
                median_ms: med,
                p10_ms: quantile(&ms, 0.1).unwrap_or(f64::NAN),
                p90_ms: quantile(&ms, 0.9).unwrap_or(f64::NAN),
                median_maxrss_kib: median(&rss.iter().map(|r| *r as f64).collect::<Vec<_>>())
                    .unwrap_or(0.0) as u64,
                ratio_to_crun: crun_median.filter(|_| !ms.is_empty()).map(|c| med / c),
                samples_ms: ms,
                maxrss_kib: rss,
                error: errors[i].clone(),
            }
        })
        .collect();
    Ok(Report {
        benchmark: "start: run --rm of /bin/true (create+start+wait+delete)",
        rounds,
        host: crate::host::facts(),
        results,
        cellvisor_phases: phases(&timings),
    })
}

/// Per-phase medians from the timing lines of `run` processes.
fn phases(file: &Path) -> Vec<Phase> {
    let mut out = phases_of(file, "run");
    // The container process's own steps, which make up "container-setup".
    out.extend(
        phases_of(file, "init")
            .into_iter()
            .filter(|p| p.phase.starts_with("init:")),
    );
    out
}

fn phases_of(file: &Path, verb: &str) -> Vec<Phase> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let runs: Vec<Vec<(String, f64)>> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["verb"] == verb)
        .map(|v| {
            v["phases"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].as_f64()? / 1000.0)))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|k| {
            let d: Vec<f64> = runs
                .iter()
                .filter(|r| r.len() == first.len())
                .map(|r| r[k].1 - if k > 0 { r[k - 1].1 } else { 0.0 })
                .collect();
            Phase {
                phase: first[k].0.clone(),
                median_ms: median(&d).unwrap_or(0.0),
            }
        })
        .collect()
}

/// The report as a terminal table.
pub fn table(r: &Report) -> String {
    let mut s = format!("{} — {} rounds, shuffled\n", r.benchmark, r.rounds);
    s += &format!(
        "{:<10} {:>10} {:>10} {:>10} {:>12} {:>14}\n",
        "runtime", "median ms", "p10 ms", "p90 ms", "ratio/crun", "peak RSS KiB"
    );
    for x in &r.results {
        if let Some(e) = &x.error {
            if x.samples_ms.is_empty() {
                s += &format!("{:<10} failed: {e}\n", x.runtime.name);
                continue;
            }
        }
        let ratio = x
            .ratio_to_crun
            .map_or("-".to_string(), |v| format!("{v:.2}"));
        s += &format!(
            "{:<10} {:>10.2} {:>10.2} {:>10.2} {:>12} {:>14}\n",
            x.runtime.name, x.median_ms, x.p10_ms, x.p90_ms, ratio, x.median_maxrss_kib
        );
    }
    if !r.cellvisor_phases.is_empty() {
        s += "cellvisor phases (median ms): ";
        s += &r
            .cellvisor_phases
            .iter()
            .map(|p| format!("{} {:.2}", p.phase, p.median_ms))
            .collect::<Vec<_>>()
            .join(", ");
        s += "\n";
    }
    s
}
