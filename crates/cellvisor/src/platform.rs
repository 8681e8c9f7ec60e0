//! The device platform's verbs (`up`, `down`, `ps`, `fg`, `channel`, `logs`, `top`, `sched`,
//! `balloon`): each is a request to cellvisord's REST API on its Unix socket.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Args, Debug, Clone)]
pub struct Daemon {
    /// cellvisord's API socket
    #[arg(long, env = "CELLVISOR_SOCKET", default_value = "/run/cellvisord.sock")]
    pub socket: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum PlatformCmd {
    /// Bring domains up (all of the daemon's profile if none is named)
    Up {
        names: Vec<String>,
        #[command(flatten)]
        d: Daemon,
    },
    /// Stop domains (all if none is named)
    Down {
        names: Vec<String>,
        /// Also remove their private layers and logs
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        d: Daemon,
    },
    /// Show the foreground domain, or make NAME the foreground domain
    Fg {
        name: Option<String>,
        #[command(flatten)]
        d: Daemon,
    },
    /// Channels between domains, under the profile's policy
    #[command(subcommand)]
    Channel(ChannelCmd),
    /// A domain's output
    Logs {
        name: String,
        /// Keep printing what it writes
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        d: Daemon,
    },
    /// The scheduler: its policy, each core's load, which domain is where, the last moves;
    /// `sched POLICY` switches it (balance, power, fixed); `sched place NAME CPUS` puts a
    /// domain on CPUS (within its profile's)
    Sched {
        /// POLICY, or `place NAME CPUS`
        args: Vec<String>,
        /// The daemon's answer as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        d: Daemon,
    },
    /// A microvm domain's balloon (`balloon = true` in its profile entry): its figures and
    /// the guest's memory, or with --size, ask the guest to give that much back
    Balloon {
        name: String,
        /// The balloon's new size (e.g. 64M; 0 gives it all back)
        #[arg(long)]
        size: Option<String>,
        /// The daemon's answer as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        d: Daemon,
    },
    /// Live CPU and memory use per domain, and each core's load
    Top {
        /// Refreshes before exiting (default: until interrupted)
        #[arg(short = 'n', long)]
        iterations: Option<u64>,
        /// Seconds between refreshes
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        #[command(flatten)]
        d: Daemon,
    },
}

#[derive(Subcommand, Debug)]
pub enum ChannelCmd {
    /// Open channel NAME from FROM to TO, if the policy allows it
    Open {
        from: String,
        to: String,
        name: String,
        /// Buffer per direction (e.g. 16K); default: the policy rule's
        #[arg(long)]
        buffer: Option<String>,
        #[command(flatten)]
        d: Daemon,
    },
    /// Open channels
    Ls {
        #[command(flatten)]
        d: Daemon,
    },
    /// Close channel ID (both domains see it closed)
    Close {
        id: u64,
        #[command(flatten)]
        d: Daemon,
    },
}

impl PlatformCmd {
    pub fn name(&self) -> &'static str {
        match self {
            PlatformCmd::Up { .. } => "up",
            PlatformCmd::Down { .. } => "down",
            PlatformCmd::Fg { .. } => "fg",
            PlatformCmd::Channel(_) => "channel",
            PlatformCmd::Logs { .. } => "logs",
            PlatformCmd::Top { .. } => "top",
            PlatformCmd::Sched { .. } => "sched",
            PlatformCmd::Balloon { .. } => "balloon",
        }
    }
}

/// A balloon's figures, for people.
fn balloon_table(name: &str, v: &Value) -> String {
    let mib = |k: &str| v[k].as_u64().unwrap_or(0);
    let stat = |k: &str| {
        v["stats"][k].as_u64().map_or("-".to_string(), |b| {
            format!("{:.1} MiB", b as f64 / 1048576.0)
        })
    };
    let mut s = format!(
        "{name}: balloon {} MiB of the guest's {} MiB (the guest holds {} MiB in it); {} MiB of freed memory reported\n\
         guest: free {}, available {}, caches {}\n",
        mib("target_mib"),
        mib("guest_mib"),
        mib("actual_mib"),
        mib("reported_mib"),
        stat("free_memory"),
        stat("available_memory"),
        stat("disk_caches"),
    );
    if let Some(f) = v["fault"].as_str() {
        s.push_str(&format!("the balloon failed: {f}\n"));
    }
    s
}

/// A request that must succeed: its body, or the daemon's one-line error.
fn call(d: &Daemon, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let (status, v) = daemon::client::request(&d.socket, method, path, body)?;
    if status >= 400 {
        bail!(
            "{}",
            v["error"]
                .as_str()
                .unwrap_or("cellvisord refused the request")
        );
    }
    Ok(v)
}

fn table(domains: &Value) -> String {
    let mut s = format!(
        "{:<12} {:<9} {:<10} {:<8} {:>3} {:>8} {:>7} {}\n",
        "NAME", "ROLE", "BACKEND", "STATUS", "FG", "PID", "WEIGHT", "DEVICES"
    );
    for d in domains.as_array().into_iter().flatten() {
        let devices: Vec<&str> = d["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str())
            .collect();
        s += &format!(
            "{:<12} {:<9} {:<10} {:<8} {:>3} {:>8} {:>7} {}\n",
            d["name"].as_str().unwrap_or(""),
            d["role"].as_str().unwrap_or(""),
            d["backend"].as_str().unwrap_or(""),
            d["status"].as_str().unwrap_or(""),
            if d["foreground"] == true { "*" } else { "" },
            d["pid"]
                .as_i64()
                .map(|p| p.to_string())
                .unwrap_or("-".into()),
            d["cpu_weight"].to_string(),
            devices.join(",")
        );
        if let Some(e) = d["error"].as_str() {
            s += &format!("  {e}\n");
        }
    }
    s
}

fn pct(v: &Value) -> String {
    v.as_f64()
        // A smoothed load a hair below zero reads 0%, not -0%.
        .map(|x| format!("{:.0}%", (x * 100.0).max(0.0)))
        .unwrap_or("-".into())
}

/// Each core's load and the domains on it: `cpu 0  97%  trusted,common`.
fn cores(s: &Value) -> String {
    let mut out = String::new();
    for c in s["cores"].as_array().into_iter().flatten() {
        let names: Vec<&str> = c["domains"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str())
            .collect();
        let who = match c["realtime"].as_str() {
            Some(rt) => format!("{rt} (realtime, its own)"),
            None if names.is_empty() => "-".into(),
            None if names.len() <= 8 => names.join(","),
            // A device of many domains: the first few and how many more.
            None => format!("{} and {} more", names[..6].join(","), names.len() - 6),
        };
        out += &format!(
            "cpu {:<3} {:>5}  {who}\n",
            c["cpu"].to_string(),
            pct(&c["load"])
        );
    }
    out
}

/// `cellvisor sched`'s screen.
fn sched_screen(s: &Value) -> String {
    let mut out = format!(
        "policy {} (period {} ms, spread {}, threshold {} less a margin of {}, {} ms on a core); {} ticks, {:.0} µs of CPU each ({:.3}% of a core)\n",
        s["policy"].as_str().unwrap_or("?"),
        s["period_ms"],
        pct(&s["spread"]),
        pct(&s["threshold"]),
        pct(&s["margin"]),
        s["min_residency_ms"],
        s["ticks"],
        s["cpu_us_per_tick"].as_f64().unwrap_or(0.0),
        s["cpu_share"].as_f64().unwrap_or(0.0) * 100.0
    );
    out += &cores(s);
    out += &format!(
        "{:<12} {:<8} {:<8} {:>6}\n",
        "DOMAIN", "CPUS", "ALLOWED", "LOAD"
    );
    for d in s["domains"].as_array().into_iter().flatten() {
        out += &format!(
            "{:<12} {:<8} {:<8} {:>6}\n",
            d["name"].as_str().unwrap_or(""),
            d["cpus"].as_str().unwrap_or(""),
            d["allowed"].as_str().unwrap_or(""),
            pct(&d["load"])
        );
    }
    let moves = s["moves"].as_array().cloned().unwrap_or_default();
    if !moves.is_empty() {
        out += "last moves:\n";
    }
    for m in moves.iter().rev().take(8).rev() {
        out += &format!(
            "  {} {} -> {}: {} ({} µs){}\n",
            m["domain"].as_str().unwrap_or(""),
            m["from"].as_str().unwrap_or(""),
            m["to"].as_str().unwrap_or(""),
            m["reason"].as_str().unwrap_or(""),
            m["took_us"],
            m["error"]
                .as_str()
                .map(|e| format!(" failed: {e}"))
                .unwrap_or_default()
        );
    }
    out
}

fn top_once(d: &Daemon, prev: &mut Option<Value>) -> Result<String> {
    let now = call(d, "GET", "/v1/stats", None)?;
    let list = call(d, "GET", "/v1/domains", None)?;
    let sched = call(d, "GET", "/v1/scheduler", None)?;
    let mut s = cores(&sched);
    // A realtime domain is not the scheduler's: its cores are those marked its own.
    let cpus_of = |name: &str| {
        let placed = sched["domains"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name))
            .and_then(|x| x["cpus"].as_str().map(str::to_string));
        let owned: Vec<String> = sched["cores"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["realtime"] == name)
            .map(|c| c["cpu"].to_string())
            .collect();
        placed.unwrap_or(if owned.is_empty() {
            "-".into()
        } else {
            owned.join(",")
        })
    };
    s += &format!(
        "{:<12} {:<8} {:>3} {:>7} {:<6} {:>10} {:>6}\n",
        "NAME", "STATUS", "FG", "CPU%", "CPUS", "MEMORY", "PIDS"
    );
    for dom in list.as_array().into_iter().flatten() {
        let name = dom["name"].as_str().unwrap_or("");
        let find = |v: &Value| {
            v["domains"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
        };
        let cur = find(&now);
        let cpu = match (&cur, prev.as_ref().and_then(find), prev.as_ref()) {
            (Some(c), Some(p), Some(pv)) => {
                let dt = now["time_ns"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(pv["time_ns"].as_u64().unwrap_or(0));
                let du = c["cpu_ns"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(p["cpu_ns"].as_u64().unwrap_or(0));
                if dt > 0 {
                    format!("{:.1}", du as f64 * 100.0 / dt as f64)
                } else {
                    "-".into()
                }
            }
            _ => "-".into(),
        };
        let mem = cur
            .as_ref()
            .and_then(|c| c["memory_bytes"].as_u64())
            .map(|m| format!("{:.1}M", m as f64 / (1 << 20) as f64))
            .unwrap_or("-".into());
        let pids = cur
            .as_ref()
            .and_then(|c| c["pids"].as_u64())
            .map(|p| p.to_string())
            .unwrap_or("-".into());
        s += &format!(
            "{:<12} {:<8} {:>3} {:>7} {:<6} {:>10} {:>6}\n",
            name,
            dom["status"].as_str().unwrap_or(""),
            if dom["foreground"] == true { "*" } else { "" },
            cpu,
            cpus_of(name),
            mem,
            pids
        );
    }
    *prev = Some(now);
    Ok(s)
}

/// `cellvisor ps` without a container id: the domains.
pub fn ps(d: &Daemon, json: bool) -> Result<i32> {
    let v = call(d, "GET", "/v1/domains", None)?;
    if json {
        println!("{v}");
    } else {
        print!("{}", table(&v));
    }
    Ok(0)
}

pub fn run(cmd: &PlatformCmd) -> Result<i32> {
    match cmd {
        PlatformCmd::Up { names, d } => {
            if names.is_empty() {
                print!("{}", table(&call(d, "POST", "/v1/up", None)?));
            } else {
                for n in names {
                    call(d, "POST", &format!("/v1/domains/{n}/up"), None)?;
                }
                print!("{}", table(&call(d, "GET", "/v1/domains", None)?));
            }
        }
        PlatformCmd::Down { names, purge, d } => {
            let q = if *purge { "?purge=true" } else { "" };
            if names.is_empty() {
                print!(
                    "{}",
                    table(&call(d, "POST", &format!("/v1/down{q}"), None)?)
                );
            } else {
                for n in names {
                    call(d, "POST", &format!("/v1/domains/{n}/down{q}"), None)?;
                }
                print!("{}", table(&call(d, "GET", "/v1/domains", None)?));
            }
        }
        PlatformCmd::Fg { name: None, d } => {
            let v = call(d, "GET", "/v1/foreground", None)?;
            println!("{}", v["foreground"].as_str().unwrap_or("(none)"));
        }
        PlatformCmd::Fg { name: Some(n), d } => {
            let v = call(d, "PUT", "/v1/foreground", Some(&json!({"name": n})))?;
            println!(
                "foreground: {} (was {}), switched in {} µs",
                v["foreground"].as_str().unwrap_or(""),
                v["previous"].as_str().unwrap_or("none"),
                v["switch_us"]
            );
        }
        PlatformCmd::Channel(ChannelCmd::Open {
            from,
            to,
            name,
            buffer,
            d,
        }) => {
            let v = call(
                d,
                "POST",
                "/v1/channels",
                Some(&json!({"from": from, "to": to, "channel": name, "buffer": buffer})),
            )?;
            println!(
                "channel {} open: {:?} {} -> {}, {} bytes per direction",
                v["id"], name, from, to, v["buffer"]
            );
        }
        PlatformCmd::Channel(ChannelCmd::Ls { d }) => {
            let v = call(d, "GET", "/v1/channels", None)?;
            println!(
                "{:<4} {:<14} {:<12} {:<12} {:>10}",
                "ID", "CHANNEL", "FROM", "TO", "BUFFER"
            );
            for c in v.as_array().into_iter().flatten() {
                println!(
                    "{:<4} {:<14} {:<12} {:<12} {:>10}{}",
                    c["id"].to_string(),
                    c["channel"].as_str().unwrap_or(""),
                    c["from"].as_str().unwrap_or(""),
                    c["to"].as_str().unwrap_or(""),
                    c["buffer"].to_string(),
                    if c["adopted"] == true {
                        "  (adopted)"
                    } else {
                        ""
                    }
                );
            }
        }
        PlatformCmd::Channel(ChannelCmd::Close { id, d }) => {
            call(d, "DELETE", &format!("/v1/channels/{id}"), None)?;
            println!("channel {id} closed");
        }
        PlatformCmd::Balloon {
            name,
            size,
            json,
            d,
        } => {
            let path = format!("/v1/domains/{name}/balloon");
            if let Some(s) = size {
                let bytes = domain::profile::parse_size(s)
                    .ok_or_else(|| anyhow::anyhow!("--size: {s:?} is not a size like 64M"))?;
                call(d, "PUT", &path, Some(&json!({"size_mib": bytes >> 20})))?;
            }
            let v = call(d, "GET", &path, None)?;
            if *json {
                println!("{v}");
            } else {
                print!("{}", balloon_table(name, &v));
            }
        }
        PlatformCmd::Logs { name, follow, d } => {
            let mut offset = 0u64;
            loop {
                let v = call(
                    d,
                    "GET",
                    &format!("/v1/domains/{name}/logs?offset={offset}"),
                    None,
                )?;
                let mut out = std::io::stdout().lock();
                out.write_all(v["text"].as_str().unwrap_or("").as_bytes())?;
                out.flush()?;
                offset = v["offset"].as_u64().unwrap_or(offset);
                if !follow {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        PlatformCmd::Sched { args, json, d } => {
            let v = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                [] => call(d, "GET", "/v1/scheduler", None)?,
                ["place", name, cpus] => call(
                    d,
                    "PUT",
                    &format!("/v1/domains/{name}/cpus"),
                    Some(&json!({ "cpus": cpus })),
                )?,
                ["place", ..] => bail!("usage: cellvisor sched place NAME CPUS"),
                [policy] => call(
                    d,
                    "PUT",
                    "/v1/scheduler",
                    Some(&json!({ "policy": policy })),
                )?,
                _ => bail!("usage: cellvisor sched [balance|power|fixed] | sched place NAME CPUS"),
            };
            if *json {
                println!("{v}");
            } else {
                print!("{}", sched_screen(&v));
            }
        }
        PlatformCmd::Top {
            iterations,
            interval,
            d,
        } => {
            let mut prev = None;
            // A first sample, so the first screen already has CPU figures.
            top_once(d, &mut prev)?;
            let mut i = 0;
            while iterations.is_none_or(|n| i < n) {
                std::thread::sleep(Duration::from_secs_f64(interval.max(0.05)));
                let screen = top_once(d, &mut prev)?;
                if iterations.is_none() {
                    print!("\x1b[H\x1b[2J");
                }
                print!("{screen}");
                std::io::stdout().flush()?;
                i += 1;
            }
        }
    }
    Ok(0)
}
