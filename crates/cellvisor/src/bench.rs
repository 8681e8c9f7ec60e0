//! `cellvisor bench`: benchmarks run side by side with peers, printed as a table and written
//! as JSON.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;

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
    /// Channel round trip (1 B, 4 KiB, 1 MiB) and bandwidth vs a pipe and a Unix socket
    Channel {
        /// Rounds (every case once per round, shuffled)
        #[arg(short = 'n', long, default_value_t = 5)]
        rounds: usize,
        /// Fewer iterations per case
        #[arg(long)]
        quick: bool,
        /// Write channel.json here
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(cmd: &BenchCmd) -> Result<i32> {
    match cmd {
        BenchCmd::Channel { rounds, quick, out } => {
            let rows = bench::ipc::run(&[1, 4096, 1 << 20], *rounds, *quick, &mut |done, all| {
                eprint!("\rround {done}/{all}");
                let _ = std::io::stderr().flush();
            });
            eprintln!();
            let rows = rows.map_err(|e| anyhow!("{e}"))?;
            print!("{}", bench::ipc::table(&rows));
            if let Some(dir) = out {
                let doc = serde_json::json!({"benchmark": "channel vs pipe vs unix socket", "rounds": rounds, "host": bench::start::host_facts(), "rows": rows});
                write_report(dir, "channel.json", &doc)?;
            }
            Ok(0)
        }
        BenchCmd::Start {
            rounds,
            runtimes,
            out,
        } => {
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
            let r = bench::start::run(&rts, *rounds, &work, &mut |done, all| {
                eprint!("\rround {done}/{all}");
                let _ = std::io::stderr().flush();
            });
            eprintln!();
            let _ = std::fs::remove_dir_all(&work);
            let report = r.map_err(|e| anyhow!("{e}"))?;
            print!("{}", bench::start::table(&report));
            if let Some(dir) = out {
                write_report(dir, "start.json", &report)?;
            }
            Ok(0)
        }
    }
}

/// Write a report as pretty JSON into `dir/name`.
fn write_report(dir: &std::path::Path, name: &str, v: &impl serde::Serialize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(v)?)
        .with_context(|| format!("writing {}", p.display()))?;
    eprintln!("wrote {}", p.display());
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("cellvisor-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}
