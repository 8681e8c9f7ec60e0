//! Density (`cellvisor bench density`): n idle container domains at once — `run -d` of a
//! sleeping program on one shared read-only root, each in a cgroup of its own — with each
//! OCI runtime, one after the other in one run (cellvisor beside crun): how the start
//! latency grows with n (p50 and p99 of each tenth of the starts), the creation rate, the
//! host memory per domain (the slope of MemTotal − MemAvailable over n), the runtime's `list`
//! at each tenth, the teardown, and what was left. With `--daemon`, the same n through
//! cellvisord from one profile entry with `replicas = n`: the `up`, the daemon's RSS and
//! descriptors per domain, `ps` and a foreground switch among them, `down`, what was left.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use crate::backend::Backend;
use crate::device::Device;
use crate::host::{fd_count, host_used_kib, rss_kib};
use crate::scale::{fit_slope, prepare, remove_parent_cgroups, start, stop};
use crate::soak::{leaks, settled, snapshot};
use crate::stats::{median, quantile};
use crate::{io, Error, Result};

#[derive(Debug, Clone)]
pub struct Plan {
    /// Domains at once.
    pub n: usize,
    /// The OCI runtimes (container, crun, runc), in this order.
    pub backends: Vec<Backend>,
    /// The same n through cellvisord, from a replicated profile entry.
    pub daemon: bool,
    /// Rounds of the runtimes, each round in the other order (the first runtime of a run
    /// warms the kernel's caches for the next); figures are medians over the rounds.
    pub rounds: usize,
}

/// One tenth of the starts.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Domains running at the end of it.
    pub n: usize,
    pub start_ms_p50: f64,
    pub start_ms_p99: f64,
    /// Host memory in use above the run's start, KiB.
    pub used_kib: f64,
    /// The runtime's `list` of all n, ms.
    pub list_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeRun {
    pub backend: String,
    pub round: usize,
    pub version: String,
    pub n: usize,
    /// From the first start to the last one's return.
    pub start_all_s: f64,
    pub starts_per_s: f64,
    pub steps: Vec<Step>,
    /// Least-squares slope of the used memory over n.
    pub kib_per_domain: f64,
    /// `delete --force` of all n.
    pub teardown_s: f64,
    /// What the run left (empty: nothing).
    pub leaked: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DaemonRun {
    pub n: usize,
    pub up_s: f64,
    pub rss_kib_idle: u64,
    pub rss_kib_up: u64,
    pub fds_idle: usize,
    pub fds_up: usize,
    /// `GET /v1/domains` of all n: median of 5, ms.
    pub ps_ms: f64,
    /// A foreground switch to a replica, ms.
    pub fg_ms: f64,
    pub down_s: f64,
    pub leaked: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub host: serde_json::Value,
    pub runtimes: Vec<RuntimeRun>,
    /// A runtime that could not run here, and why (crun 1.8 on a hybrid host whose hugetlb
    /// controller is on cgroup v2): left out, the others measured.
    pub failed: Vec<Failed>,
    pub daemon: Option<DaemonRun>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub backend: String,
    pub error: String,
}

impl Report {
    pub fn leaked(&self) -> bool {
        self.runtimes.iter().any(|r| !r.leaked.is_empty())
            || self.daemon.as_ref().is_some_and(|d| !d.leaked.is_empty())
    }

    /// (runtime, figure) pairs of each runtime against the first (cellvisor): ours / peer's.
    /// Each runtime's (creation rate, memory per domain): medians over its rounds, in the
    /// order the runtimes were asked for.
    pub fn medians(&self) -> Vec<(String, f64, f64)> {
        let mut names: Vec<&str> = Vec::new();
        for r in &self.runtimes {
            if !names.contains(&r.backend.as_str()) {
                names.push(&r.backend);
            }
        }
        names
            .into_iter()
            .map(|n| {
                let of = |f: &dyn Fn(&RuntimeRun) -> f64| {
                    let v: Vec<f64> = self
                        .runtimes
                        .iter()
                        .filter(|r| r.backend == n)
                        .map(f)
                        .collect();
                    median(&v).unwrap_or(f64::NAN)
                };
                (
                    n.to_string(),
                    of(&|r| r.starts_per_s),
                    of(&|r| r.kib_per_domain),
                )
            })
            .collect()
    }

    /// Each peer against the first (cellvisor): ours / peer's, of the medians.
    pub fn ratios(&self) -> Vec<(String, f64, f64)> {
        let m = self.medians();
        let Some(ours) = m.first().cloned() else {
            return Vec::new();
        };
        m[1..]
            .iter()
            .map(|(name, rate, kib)| (name.clone(), ours.1 / rate, ours.2 / kib))
            .collect()
    }
}

/// The runtime's `list`, ms.
fn list_ms(b: &Backend, work: &Path) -> Result<f64> {
    let rt = b.runtime.as_ref().ok_or(Error::Msg("no runtime".into()))?;
    let state = work.join(format!("state-{}", b.name()));
    let t = Instant::now();
    let st = io(
        Command::new(rt)
            .arg("--root")
            .arg(&state)
            .arg("list")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status(),
        || format!("{} list", b.name()),
    )?;
    if !st.success() {
        return Err(Error::Msg(format!("{} list failed", b.name())));
    }
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// n domains of one runtime: started, measured by tenths, torn down, checked.
fn runtime(
    b: &Backend,
    work: &Path,
    n: usize,
    round: usize,
    tick: &mut dyn FnMut(&str),
) -> Result<RuntimeRun> {
    // Page cache and reclaimable slab out of the way, so the used memory is the domains'.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let prefix = format!("cvscale-{}", std::process::id());
    let states = [work.join(format!("state-{}", b.name()))];
    let before = snapshot(work, &prefix, &states);
    let used0 = host_used_kib();
    let mut ds = Vec::with_capacity(n);
    let mut steps = Vec::new();
    let mut slice = Vec::new();
    let tenth = n.div_ceil(10).max(1);
    let t = Instant::now();
    let started = (|| -> Result<()> {
        for i in 0..n {
            let (d, ms) = start(b, work, "idle", i)?;
            ds.push(d);
            slice.push(ms);
            if ds.len() % tenth == 0 || ds.len() == n {
                steps.push(Step {
                    n: ds.len(),
                    start_ms_p50: median(&slice).unwrap_or(f64::NAN),
                    start_ms_p99: quantile(&slice, 0.99).unwrap_or(f64::NAN),
                    used_kib: host_used_kib() - used0,
                    list_ms: list_ms(b, work)?,
                });
                slice.clear();
                tick(&format!("{} {}/{n}", b.name(), ds.len()));
            }
        }
        Ok(())
    })();
    let start_all_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for d in ds {
        stop(b, work, d);
    }
    let teardown_s = t.elapsed().as_secs_f64();
    remove_parent_cgroups();
    started?;
    let after = settled(work, &prefix, &states, &before);
    let xy: Vec<(f64, f64)> = steps.iter().map(|s| (s.n as f64, s.used_kib)).collect();
    Ok(RuntimeRun {
        backend: b.name().to_string(),
        round,
        version: b.version.clone(),
        n,
        start_all_s,
        starts_per_s: n as f64 / start_all_s.max(1e-9),
        steps,
        kib_per_domain: fit_slope(&xy),
        teardown_s,
        leaked: leaks(&before, &after),
    })
}

/// The replicated profile: one home domain in front and `n` alike apps.
pub fn replicated_profile(n: usize) -> String {
    format!(
        "name = \"density\"\nbase = \"rootfs\"\n[foreground]\ninitial = \"home\"\n\
         [[domain]]\nname = \"home\"\nrole = \"trusted\"\ncommand = [\"/bin/sleep\", \"1000000\"]\n\
         [[domain]]\nname = \"app\"\nrole = \"common\"\ncommand = [\"/bin/sleep\", \"1000000\"]\n\
         memory = \"16M\"\npids = 16\nreplicas = {n}\n"
    )
}

/// n domains through cellvisord from [`replicated_profile`].
fn daemon(work: &Path, agent: &Path, n: usize, tick: &mut dyn FnMut(&str)) -> Result<DaemonRun> {
    let dir = work.join("daemon");
    io(std::fs::create_dir_all(&dir), || {
        format!("creating {}", dir.display())
    })?;
    crate::rootfs::busybox(&dir.join("d").join("rootfs"))?;
    let name = "d";
    let mut dev = Device::start(name, &dir, &replicated_profile(n), agent)?;
    let pid = dev
        .pid()
        .ok_or(Error::Msg("cellvisord is not running".into()))?;
    let states = [dev.dir.join("state")];
    let prefix = dev.prefix.clone();
    let before = snapshot(&dir, &prefix, &[]);
    let (rss_kib_idle, fds_idle) = (rss_kib(pid), fd_count(&pid.to_string()));
    tick(&format!("daemon: up {n}"));
    let t = Instant::now();
    dev.api("POST", "/v1/up", None)?;
    let up_s = t.elapsed().as_secs_f64();
    let (rss_kib_up, fds_up) = (rss_kib(pid), fd_count(&pid.to_string()));
    let mut ps = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let v = dev.api("GET", "/v1/domains", None)?;
        ps.push(t.elapsed().as_secs_f64() * 1e3);
        let running = v
            .as_array()
            .map_or(0, |a| a.iter().filter(|d| d["status"] == "running").count());
        if running != n + 1 {
            return Err(Error::Msg(format!(
                "cellvisord: {running} of {} domains running after up",
                n + 1
            )));
        }
    }
    let t = Instant::now();
    dev.api(
        "PUT",
        "/v1/foreground",
        Some(&serde_json::json!({"name": format!("app-{}", n.div_ceil(2))})),
    )?;
    let fg_ms = t.elapsed().as_secs_f64() * 1e3;
    tick(&format!("daemon: down {n}"));
    let t = Instant::now();
    dev.api("POST", "/v1/down?purge=true", None)?;
    let down_s = t.elapsed().as_secs_f64();
    dev.stop();
    let after = settled(&dir, &prefix, &states, &before);
    Ok(DaemonRun {
        n,
        up_s,
        rss_kib_idle,
        rss_kib_up,
        fds_idle,
        fds_up,
        ps_ms: median(&ps).unwrap_or(f64::NAN),
        fg_ms,
        down_s,
        leaked: leaks(&before, &after),
    })
}

/// Run the plan in `work` (made here, removed after).
pub fn run(plan: &Plan, agent: &Path, work: &Path, tick: &mut dyn FnMut(&str)) -> Result<Report> {
    if plan.n == 0 {
        return Err(Error::Msg("-n: at least one domain".into()));
    }
    io(std::fs::create_dir_all(work), || {
        format!("creating {}", work.display())
    })?;
    let r = (|| -> Result<Report> {
        prepare(work, agent, None)?;
        let mut runtimes = Vec::new();
        let mut failed = Vec::new();
        for round in 0..plan.rounds.max(1) {
            let mut order: Vec<&Backend> = plan.backends.iter().collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for b in order {
                if failed.iter().any(|f: &Failed| f.backend == b.name()) {
                    continue;
                }
                match runtime(b, work, plan.n, round, tick) {
                    Ok(r) => runtimes.push(r),
                    // Ours must run; a peer that cannot is said and left out.
                    Err(e) if b.kind != crate::backend::Kind::Container => failed.push(Failed {
                        backend: b.name().to_string(),
                        error: e.to_string(),
                    }),
                    Err(e) => return Err(e),
                }
            }
        }
        let daemon = if plan.daemon {
            Some(daemon(work, agent, plan.n, tick)?)
        } else {
            None
        };
        Ok(Report {
            benchmark: "density",
            host: crate::host::facts(),
            runtimes,
            failed,
            daemon,
        })
    })();
    remove_parent_cgroups();
    let _ = std::fs::remove_dir_all(work);
    r
}

/// The report as a table.
pub fn table(r: &Report) -> String {
    let mut s = String::from(
        "# n idle container domains at once (run -d of sleep), one runtime after the other\n",
    );
    s += &format!(
        "{:<10} {:>6} {:>9} {:>8} {:>10} {:>10} {:>9} {:>9}\n",
        "runtime", "n", "start p50", "p99", "used MiB", "list ms", "per s", "KiB/dom"
    );
    for rt in &r.runtimes {
        for st in &rt.steps {
            s += &format!(
                "{:<10} {:>6} {:>9.1} {:>8.1} {:>10.1} {:>10.1}\n",
                rt.backend,
                st.n,
                st.start_ms_p50,
                st.start_ms_p99,
                st.used_kib / 1024.0,
                st.list_ms
            );
        }
        s += &format!(
            "{:<10} round {}: all {} in {:.1} s: {:.1} starts/s, {:.0} KiB per domain, teardown {:.1} s, left {}\n",
            rt.backend,
            rt.round + 1,
            rt.n,
            rt.start_all_s,
            rt.starts_per_s,
            rt.kib_per_domain,
            rt.teardown_s,
            if rt.leaked.is_empty() { "nothing".to_string() } else { rt.leaked.join("; ") }
        );
    }
    for f in &r.failed {
        s += &format!("{}: could not run here: {}\n", f.backend, f.error);
    }
    for (name, rate, kib) in r.medians() {
        s += &format!(
            "{name:<10} medians over the rounds: {rate:.1} starts/s, {kib:.0} KiB per domain\n"
        );
    }
    for (peer, rate, mem) in r.ratios() {
        s += &format!(
            "cellvisor / {peer}: creation rate {rate:.2}x (higher is better), memory per domain {mem:.2}x (lower is better)\n"
        );
    }
    if let Some(d) = &r.daemon {
        s += &format!(
            "cellvisord, {} replicas + 1: up {:.1} s ({:.1} ms each), RSS {:.1} MiB before up, {:.1} MiB after ({:.1} KiB per domain up), descriptors {} before up (a port per domain), {} after ({:.2} per domain), ps {:.1} ms, fg {:.1} ms, down {:.1} s, left {}\n",
            d.n,
            d.up_s,
            d.up_s * 1e3 / (d.n + 1) as f64,
            d.rss_kib_idle as f64 / 1024.0,
            d.rss_kib_up as f64 / 1024.0,
            d.rss_kib_up.saturating_sub(d.rss_kib_idle) as f64 / (d.n + 1) as f64,
            d.fds_idle,
            d.fds_up,
            d.fds_up as f64 / (d.n + 1) as f64,
            d.ps_ms,
            d.fg_ms,
            d.down_s,
            if d.leaked.is_empty() { "nothing".to_string() } else { d.leaked.join("; ") }
        );
    }
    s
}

/// The two plots: start latency (p50 per tenth) and host memory over n, one line per runtime.
pub fn plots(r: &Report, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let series = |f: &dyn Fn(&Step) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
        r.runtimes
            .iter()
            .map(|rt| {
                (
                    format!("{} (round {})", rt.backend, rt.round + 1),
                    rt.steps.iter().map(|s| (s.n as f64, f(s))).collect(),
                )
            })
            .collect()
    };
    let start = dir.join("density-start.svg");
    crate::plot::lines(
        "Start latency as domains accumulate (p50 of each tenth)",
        "ms",
        &series(&|s| s.start_ms_p50),
        &start,
    )?;
    let mem = dir.join("density-memory.svg");
    crate::plot::lines(
        "Host memory in use with n idle domains",
        "MiB",
        &series(&|s| s.used_kib / 1024.0),
        &mem,
    )?;
    Ok(vec![start, mem])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replicated_profile_parses_to_n_plus_one_domains() {
        let p =
            domain::profile::parse(&replicated_profile(250), "d.toml", Path::new("/x")).unwrap();
        assert_eq!(p.domains.len(), 251);
        assert_eq!(p.domains[250].name, "app-250");
    }
}
