//! Foreground switch latency. Two cellvisord instances run the phone profile side by side,
//! one throttling its background domains and one freezing them; the foreground goes back
//! and forth between trusted and common, alternating between the two daemons. Each sample is
//! a request to the API until its answer (the new foreground holds its devices, the old one
//! is in the background), as the client sees it and as the daemon measured it.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use crate::device::Device;
use crate::{Error, Result};

#[derive(Debug, Serialize)]
pub struct ModeReport {
    /// throttle or freeze.
    pub background: String,
    pub switches: usize,
    pub client_us_p50: f64,
    pub client_us_p99: f64,
    pub daemon_us_p50: f64,
    pub daemon_us_p99: f64,
    pub client_us: Vec<f64>,
    pub daemon_us: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub host: serde_json::Value,
    pub modes: Vec<ModeReport>,
}

/// The embedded phone profile on the shared root `base`, its background domains in `mode`
/// (throttle or freeze): the profile's TOML with those two keys set and no realtime domain,
/// checked as a profile.
pub fn profile(base: &Path, mode: &str) -> Result<String> {
    let bad = |e: &dyn std::fmt::Display| Error::Msg(format!("the phone profile: {e}"));
    let mut t: toml::Table = domain::DEFAULT_PROFILE.parse().map_err(|e| bad(&e))?;
    t.insert("base".into(), base.display().to_string().into());
    let fg = t
        .get_mut("foreground")
        .and_then(|f| f.as_table_mut())
        .ok_or_else(|| bad(&"no [foreground]"))?;
    fg.insert("background".into(), mode.into());
    // Two devices run side by side on one machine: a core can be one realtime domain's
    // alone, so neither device's modem is realtime here (the switches do not involve it).
    if let Some(ds) = t.get_mut("domain").and_then(|d| d.as_array_mut()) {
        for d in ds.iter_mut().filter_map(|d| d.as_table_mut()) {
            d.remove("realtime");
        }
    }
    let text = toml::to_string(&t).map_err(|e| bad(&e))?;
    domain::profile::parse(&text, "phone.toml", Path::new("/")).map_err(|e| bad(&e))?;
    Ok(text)
}

/// One daemon of the benchmark, in one background mode.
struct Instance {
    mode: &'static str,
    dev: Device,
}

impl Instance {
    fn start(mode: &'static str, work: &Path, base: &Path, agent: &Path) -> Result<Instance> {
        let dev = Device::start(&format!("fg-{mode}"), work, &profile(base, mode)?, agent)?;
        dev.api("POST", "/v1/up", None)?;
        Ok(Instance { mode, dev })
    }

    /// One switch: (client µs, daemon µs).
    fn switch(&self, to: &str) -> Result<(f64, f64)> {
        let t = Instant::now();
        let v = self
            .dev
            .api("PUT", "/v1/foreground", Some(&json!({"name": to})))?;
        let client = t.elapsed().as_secs_f64() * 1e6;
        Ok((client, v["switch_us"].as_f64().unwrap_or(f64::NAN)))
    }

    /// The new foreground sees its device nodes, the old one none (nodes the host has).
    fn verify(&self, fg: &str, bg: &str) -> Result<()> {
        let doms = self.dev.api("GET", "/v1/domains", None)?;
        let pid = |n: &str| {
            doms.as_array()
                .and_then(|a| a.iter().find(|d| d["name"] == n))
                .and_then(|d| d["pid"].as_i64())
        };
        for node in ["/dev/vcs1", "/dev/tty1"] {
            if !Path::new(node).exists() {
                continue;
            }
            let sees = |n: &str| {
                pid(n).is_some_and(|p| Path::new(&format!("/proc/{p}/root{node}")).exists())
            };
            if !sees(fg) || (self.mode == "throttle" && sees(bg)) {
                return Err(Error::Msg(format!(
                    "after the switch to {fg} ({}), {node} is not where it belongs",
                    self.mode
                )));
            }
        }
        Ok(())
    }
}

/// `switches` switches per background mode, with the in-domain `agent`; `progress` hears
/// how far it is.
pub fn run(
    switches: usize,
    agent: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Report> {
    let work = std::env::temp_dir().join(format!("cellvisor-bench-fg-{}", std::process::id()));
    let base = work.join("base");
    let r = crate::rootfs::busybox(&base).and_then(|()| {
        let insts = [
            Instance::start("throttle", &work, &base, agent)?,
            Instance::start("freeze", &work, &base, agent)?,
        ];
        let mut samples = vec![(Vec::new(), Vec::new()); insts.len()];
        for i in 0..switches {
            let (to, from) = if i % 2 == 0 {
                ("common", "trusted")
            } else {
                ("trusted", "common")
            };
            for (k, inst) in insts.iter().enumerate() {
                let (c, d) = inst.switch(to)?;
                samples[k].0.push(c);
                samples[k].1.push(d);
                if i % 10 == 0 {
                    inst.verify(to, from)?;
                }
            }
            progress(i + 1, switches);
        }
        let q = |v: &[f64], p: f64| crate::stats::quantile(v, p).unwrap_or(f64::NAN);
        Ok(insts
            .iter()
            .zip(samples)
            .map(|(inst, (c, d))| ModeReport {
                background: inst.mode.into(),
                switches,
                client_us_p50: q(&c, 0.5),
                client_us_p99: q(&c, 0.99),
                daemon_us_p50: q(&d, 0.5),
                daemon_us_p99: q(&d, 0.99),
                client_us: c,
                daemon_us: d,
            })
            .collect())
    });
    let _ = std::fs::remove_dir_all(&work);
    Ok(Report {
        benchmark: "foreground switch latency",
        host: crate::host::facts(),
        modes: r?,
    })
}

pub fn table(r: &Report) -> String {
    let mut s = format!(
        "{:<10} {:>8} {:>14} {:>14} {:>14} {:>14}\n",
        "background",
        "switches",
        "client p50 µs",
        "client p99 µs",
        "daemon p50 µs",
        "daemon p99 µs"
    );
    for m in &r.modes {
        s += &format!(
            "{:<10} {:>8} {:>14.0} {:>14.0} {:>14.0} {:>14.0}\n",
            m.background,
            m.switches,
            m.client_us_p50,
            m.client_us_p99,
            m.daemon_us_p50,
            m.daemon_us_p99
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_phone_profile_is_set_by_its_keys_not_its_text() {
        let text = profile(Path::new("/srv/base"), "freeze").unwrap();
        let p = domain::profile::parse(&text, "p.toml", Path::new("/")).unwrap();
        assert_eq!(p.base, Some(PathBuf::from("/srv/base")));
        assert_eq!(p.background, domain::profile::BackgroundMode::Freeze);
        assert!(p.domains.iter().all(|d| d.realtime.is_none()));
        let mut phone =
            domain::profile::parse(domain::DEFAULT_PROFILE, "p.toml", Path::new("/")).unwrap();
        // The phone's, but no domain realtime (two devices side by side).
        for d in &mut phone.domains {
            d.realtime = None;
        }
        assert_eq!(p.domains, phone.domains);
        assert_eq!(p.device_nodes, phone.device_nodes);
        assert!(profile(Path::new("/b"), "sometimes").is_err());
    }
}
