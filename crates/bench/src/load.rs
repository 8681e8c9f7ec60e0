//! The daemon under load (`cellvisor bench api`): many API clients at once, mixing reads and
//! mutations (foreground switches, channels opened and closed), beside many idle connections
//! held open — some silent, some half-way through a request's head. Every request must get an
//! answer; a new client's request is timed beside the same request on the idle daemon (in one
//! run, as a ratio); afterwards the platform is checked consistent and the daemon's
//! descriptors and memory are read again.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daemon::client::request;
use serde::Serialize;
use serde_json::json;

use crate::device::Device;
use crate::{Error, Result};

/// How hard to load the daemon.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Concurrent clients, each on a thread of its own.
    pub clients: usize,
    /// Requests per client.
    pub requests: usize,
    /// Idle connections held open meanwhile.
    pub idle: usize,
    /// Probe requests (a new client's `GET /v1/version`) on the idle daemon.
    pub probes: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub host: serde_json::Value,
    pub clients: usize,
    pub requests_per_client: usize,
    pub idle_connections: usize,
    /// Requests sent and answered (any HTTP status), and those that got no answer.
    pub sent: usize,
    pub answered: usize,
    pub unanswered: usize,
    /// Answers by status: 200, 201 a channel opened, 204 one closed, and the refusals the mix
    /// provokes (409 a channel already open, 404 none to close).
    pub by_status: std::collections::BTreeMap<u16, usize>,
    /// The first few requests that got no answer, and why.
    pub failures: Vec<String>,
    /// A new client's request, µs: on the idle daemon, and while loaded.
    pub probe_idle_us_p50: f64,
    pub probe_idle_us_p99: f64,
    pub probe_loaded_us_p50: f64,
    pub probe_loaded_us_p99: f64,
    pub probe_loaded_count: usize,
    /// loaded p50 / idle p50.
    pub probe_ratio_p50: f64,
    /// How long the clients took, and requests per second.
    pub seconds: f64,
    pub requests_per_s: f64,
    /// The daemon's open descriptors and RSS before the load and after (idle connections and
    /// channels closed).
    pub daemon_fds_before: usize,
    pub daemon_fds_after: usize,
    pub daemon_rss_kib_before: u64,
    pub daemon_rss_kib_after: u64,
    /// The platform after the load: every domain running, one foreground.
    pub consistent: bool,
}

/// One client's `i`th request: mostly reads, some switches and channel churn.
fn pick(client: usize, i: usize) -> (&'static str, String, Option<serde_json::Value>) {
    let chan = json!({"from": "common", "to": "trusted", "channel": "messages"});
    match (client * 7 + i * 3) % 10 {
        0..=3 => ("GET", "/v1/domains".into(), None),
        4 => ("GET", "/v1/channels".into(), None),
        5 => ("GET", "/v1/stats".into(), None),
        6 => {
            let to = if (client + i).is_multiple_of(2) {
                "common"
            } else {
                "trusted"
            };
            ("PUT", "/v1/foreground".into(), Some(json!({"name": to})))
        }
        7 => ("POST", "/v1/channels".into(), Some(chan)),
        // The channel this client opened last (filled in by the client), if any.
        8 => ("DELETE", "/v1/channels/".into(), None),
        _ => ("GET", "/v1/foreground".into(), None),
    }
}

/// A new client's request, timed, µs.
fn probe(sock: &Path) -> Result<f64> {
    let t = Instant::now();
    let (s, _) = request(sock, "GET", "/v1/version", None)?;
    if s != 200 {
        return Err(Error::Msg(format!("GET /v1/version answered {s}")));
    }
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

/// Load a phone-profile daemon (on a busybox root in a work directory of its own) as `plan`
/// says, with the in-domain `agent`.
pub fn run(plan: Plan, agent: &Path) -> Result<Report> {
    let work = std::env::temp_dir().join(format!("cellvisor-bench-api-{}", std::process::id()));
    let base = work.join("base");
    let r = crate::rootfs::busybox(&base).and_then(|()| {
        let profile = quiet(&crate::fg::profile(&base, "throttle")?)?;
        let mut dev = Device::start("api", &work, &profile, agent)?;
        let r = load(&dev, plan);
        dev.stop();
        r
    });
    let _ = std::fs::remove_dir_all(&work);
    r
}

/// The profile with every domain only sleeping: the channels the load opens and closes stop
/// no domain's command (the phone's trusted domain ends with its channel).
pub(crate) fn quiet(profile: &str) -> Result<String> {
    let bad = |e: &dyn std::fmt::Display| Error::Msg(format!("the phone profile: {e}"));
    let mut t: toml::Table = profile.parse().map_err(|e| bad(&e))?;
    for d in t
        .get_mut("domain")
        .and_then(|d| d.as_array_mut())
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_table_mut())
    {
        let cmd = ["/bin/sh", "-c", "exec sleep 1000000"];
        d.insert(
            "command".into(),
            cmd.iter()
                .map(|&a| a.into())
                .collect::<Vec<toml::Value>>()
                .into(),
        );
    }
    toml::to_string(&t).map_err(|e| bad(&e))
}

fn load(dev: &Device, plan: Plan) -> Result<Report> {
    dev.api("POST", "/v1/up", None)?;
    let pid = dev
        .pid()
        .ok_or_else(|| Error::Msg("the daemon is gone".into()))?;
    let q = |v: &[f64], p: f64| crate::stats::quantile(v, p).unwrap_or(f64::NAN);
    let mut r = Report {
        benchmark: "cellvisord under load",
        host: crate::host::facts(),
        clients: plan.clients,
        requests_per_client: plan.requests,
        idle_connections: plan.idle,
        ..Report::default()
    };
    // Once through a channel's life first: the daemon's connection to the channels' keeper
    // is made then, and counts among its descriptors before as after.
    let c = dev.api(
        "POST",
        "/v1/channels",
        Some(&json!({"from": "common", "to": "trusted", "channel": "messages"})),
    )?;
    dev.api("DELETE", &format!("/v1/channels/{}", c["id"]), None)?;
    let idle_probes: Vec<f64> = (0..plan.probes)
        .map(|_| probe(&dev.sock))
        .collect::<Result<_>>()?;
    r.daemon_fds_before = crate::host::steady_fds(pid, None);
    r.daemon_rss_kib_before = crate::host::rss_kib(pid);
    // The idle connections: half say nothing, half stop in the middle of a request's head.
    let mut idle = Vec::new();
    for i in 0..plan.idle {
        let mut s = UnixStream::connect(&dev.sock)
            .map_err(|e| Error::Msg(format!("idle connection {i}: {e}")))?;
        if i % 2 == 1 {
            let _ = s.write_all(b"GET /v1/domains HTTP/1.1\r\nHost: x\r\n");
        }
        idle.push(s);
    }
    let done = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new((Vec::<u16>::new(), Vec::<String>::new())));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..plan.clients)
        .map(|c| {
            let (sock, results) = (dev.sock.clone(), results.clone());
            std::thread::spawn(move || {
                // The channel this client opened and has not closed yet.
                let mut mine: Option<u64> = None;
                for i in 0..plan.requests {
                    let (m, mut p, b) = pick(c, i);
                    if m == "DELETE" {
                        // None left to close: one that does not exist (404).
                        p += &mine.take().unwrap_or(u64::MAX).to_string();
                    }
                    let got = request(&sock, m, &p, b.as_ref());
                    if let Ok((201, v)) = &got {
                        mine = v["id"].as_u64();
                    }
                    let mut r = results.lock().unwrap();
                    match got {
                        Ok((s, _)) => r.0.push(s),
                        Err(e) => r.1.push(format!("client {c}, {m} {p}: {e}")),
                    }
                }
            })
        })
        .collect();
    // A new client, again and again while the others run.
    let prober = {
        let (sock, done) = (dev.sock.clone(), done.clone());
        std::thread::spawn(move || {
            let mut v = Vec::new();
            while !done.load(Ordering::Relaxed) {
                match probe(&sock) {
                    Ok(us) => v.push(us),
                    Err(e) => return Err(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(v)
        })
    };
    for w in workers {
        let _ = w.join();
    }
    r.seconds = t0.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let loaded = prober
        .join()
        .map_err(|_| Error::Msg("the probe panicked".into()))??;
    drop(idle);
    let (statuses, failures) = std::mem::take(&mut *results.lock().unwrap());
    r.sent = plan.clients * plan.requests;
    r.answered = statuses.len();
    r.unanswered = failures.len();
    for s in statuses {
        *r.by_status.entry(s).or_default() += 1;
    }
    r.failures = failures.into_iter().take(5).collect();
    r.requests_per_s = r.sent as f64 / r.seconds;
    r.probe_idle_us_p50 = q(&idle_probes, 0.5);
    r.probe_idle_us_p99 = q(&idle_probes, 0.99);
    r.probe_loaded_us_p50 = q(&loaded, 0.5);
    r.probe_loaded_us_p99 = q(&loaded, 0.99);
    r.probe_loaded_count = loaded.len();
    r.probe_ratio_p50 = r.probe_loaded_us_p50 / r.probe_idle_us_p50;
    // The channels the mix left open closed, the daemon should be back to its descriptors of
    // before once it let go of the closed connections: wait for its count to settle.
    let chans = dev.api("GET", "/v1/channels", None)?;
    for c in chans.as_array().into_iter().flatten() {
        dev.api("DELETE", &format!("/v1/channels/{}", c["id"]), None)?;
    }
    r.daemon_fds_after = crate::host::steady_fds(pid, Some(r.daemon_fds_before));
    r.daemon_rss_kib_after = crate::host::rss_kib(pid);
    let doms = dev.api("GET", "/v1/domains", None)?;
    let doms = doms.as_array().cloned().unwrap_or_default();
    r.consistent = doms.iter().all(|d| d["status"] == "running")
        && doms.iter().filter(|d| d["foreground"] == true).count() == 1;
    Ok(r)
}

pub fn table(r: &Report) -> String {
    let mut s = format!(
        "{} clients x {} requests beside {} idle connections: {} sent, {} answered, {} unanswered ({:.1} s, {:.0} requests/s)\n",
        r.clients, r.requests_per_client, r.idle_connections, r.sent, r.answered, r.unanswered,
        r.seconds, r.requests_per_s
    );
    s += &format!(
        "answers by status: {}\n",
        r.by_status
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s += &format!(
        "a new client's GET /v1/version: idle p50 {:.0} µs p99 {:.0} µs; loaded p50 {:.0} µs p99 {:.0} µs ({} probes); loaded/idle p50 {:.2}\n",
        r.probe_idle_us_p50, r.probe_idle_us_p99, r.probe_loaded_us_p50, r.probe_loaded_us_p99,
        r.probe_loaded_count, r.probe_ratio_p50
    );
    s += &format!(
        "daemon: {} descriptors before, {} after; RSS {} KiB before, {} KiB after; platform {}\n",
        r.daemon_fds_before,
        r.daemon_fds_after,
        r.daemon_rss_kib_before,
        r.daemon_rss_kib_after,
        if r.consistent {
            "consistent"
        } else {
            "INCONSISTENT"
        }
    );
    for f in &r.failures {
        s += &format!("no answer: {f}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_has_reads_switches_and_channel_churn() {
        let mut seen = std::collections::BTreeSet::new();
        for c in 0..20 {
            for i in 0..10 {
                let (m, p, _) = pick(c, i);
                seen.insert(format!("{m} {p}"));
            }
        }
        for want in [
            "GET /v1/domains",
            "PUT /v1/foreground",
            "POST /v1/channels",
            "DELETE /v1/channels/",
        ] {
            assert!(seen.contains(want), "{want} missing from {seen:?}");
        }
    }
}
