//! What the suite and the scalability runs report, shared by the code that measures, the
//! tables and the plots; and the suite's rows (medians and in-round ratios), computed from
//! its runs.

use serde::Serialize;

use crate::backend::{Backend, Kind};
use crate::stats::median;

/// One run of one backend in one round: each figure's median of 11 and the 11 timings.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub round: usize,
    pub backend: Kind,
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
    pub backend: Kind,
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
    pub backend: Kind,
    pub error: String,
}

/// One backend at one n.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub backend: Kind,
    pub n: usize,
    /// Each domain's start (create + start, detached), ms.
    pub start_ms: Vec<f64>,
    pub start_p50_ms: f64,
    pub start_p99_ms: f64,
    /// Domains started per second, all n one after another.
    pub creation_per_s: f64,
    /// The host's CPU use with the n domains idle, % of all CPUs, less the use before.
    pub idle_cpu_pct: f64,
    /// Loop iterations all n busy domains did in the same wall time, / native's at this n.
    pub busy_ratio_to_native: Option<f64>,
    pub busy_iterations: u64,
    /// PSS summed over every domain's processes, per domain, KiB.
    pub pss_kib_per_domain: f64,
    /// The domain cgroup's own memory figure, per domain, KiB (none for native).
    pub cgroup_kib_per_domain: Option<f64>,
    /// MemTotal − MemAvailable with the n domains up, less before, KiB.
    pub host_used_kib: f64,
    /// Private storage per domain (its runtime state), KiB.
    pub private_kib_per_domain: f64,
    /// The shared root filesystem over n, KiB.
    pub shared_kib_per_domain: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Slope {
    pub backend: Kind,
    /// Least-squares slope of host_used_kib over n: host memory per added domain, KiB.
    pub host_kib_per_domain: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub ns: Vec<usize>,
    pub points: Vec<Point>,
    pub slopes: Vec<Slope>,
    /// Backends that could not run n domains (their points stop before).
    pub failed: Vec<ScaleFailed>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleFailed {
    pub backend: Kind,
    pub n: usize,
    pub error: String,
}

/// Per test and backend: the median over rounds, and the median of the in-round ratios.
/// Tests in native's order, then those only some backends have (the microVM's exit round
/// trip: no native figure, no ratio).
pub fn rows(backends: &[Backend], runs: &[Run]) -> Vec<Row> {
    if !runs.iter().any(|r| r.backend == Kind::Native) {
        return Vec::new();
    }
    let mut tests: Vec<&Figure> = Vec::new();
    for r in runs
        .iter()
        .filter(|r| r.backend == Kind::Native)
        .chain(runs)
    {
        for f in &r.figures {
            if !tests.iter().any(|t| t.name == f.name) {
                tests.push(f);
            }
        }
    }
    let value = |round: usize, backend: Kind, test: &str| {
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
                        .filter_map(|k| value(k, b.kind, &f.name))
                        .collect();
                    let ratios: Vec<f64> = (0..rounds)
                        .filter_map(|k| {
                            Some(value(k, b.kind, &f.name)? / value(k, Kind::Native, &f.name)?)
                        })
                        .collect();
                    Cell {
                        backend: b.kind,
                        median: median(&vals).unwrap_or(f64::NAN),
                        ratio_to_native: median(&ratios).unwrap_or(f64::NAN),
                    }
                })
                .collect(),
        })
        .collect()
}

/// Write `v` as pretty JSON into `dir/name` (the directory made if need be); the file.
pub fn write_json(
    dir: &std::path::Path,
    name: &str,
    v: &impl Serialize,
) -> crate::Result<std::path::PathBuf> {
    crate::io(std::fs::create_dir_all(dir), || {
        format!("creating {}", dir.display())
    })?;
    let p = dir.join(name);
    let text = crate::json(serde_json::to_string_pretty(v), || {
        format!("the report {name}")
    })?;
    crate::io(std::fs::write(&p, text), || {
        format!("writing {}", p.display())
    })?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: usize, backend: Kind, v: f64) -> Run {
        Run {
            round,
            backend,
            figures: vec![Figure {
                name: "null_syscall".into(),
                unit: "us".into(),
                median: v,
                samples: vec![v; 11],
            }],
        }
    }

    fn backends(kinds: &[Kind]) -> Vec<Backend> {
        kinds
            .iter()
            .map(|&kind| Backend {
                kind,
                ..Backend::native()
            })
            .collect()
    }

    #[test]
    fn ratios_are_taken_within_a_round() {
        let bs = backends(&[Kind::Native, Kind::Container]);
        // A noisy machine: round 1 is twice as slow for both; the ratio stays 1.1.
        let runs = vec![
            run(0, Kind::Native, 1.0),
            run(0, Kind::Container, 1.1),
            run(1, Kind::Native, 2.0),
            run(1, Kind::Container, 2.2),
            run(2, Kind::Native, 1.0),
            run(2, Kind::Container, 1.1),
        ];
        let rows = rows(&bs, &runs);
        assert_eq!(rows.len(), 1);
        assert!((rows[0].cells[1].ratio_to_native - 1.1).abs() < 1e-9);
        assert_eq!(rows[0].cells[0].median, 1.0);
        assert!(!rows[0].higher_is_better);
    }

    #[test]
    fn a_figure_only_one_backend_has_gets_a_row_without_ratio() {
        let bs = backends(&[Kind::Native, Kind::Microvm]);
        let mut vm = run(0, Kind::Microvm, 2.0);
        vm.figures.push(Figure {
            name: "vm_exit".into(),
            unit: "us".into(),
            median: 9.0,
            samples: vec![9.0],
        });
        let rows = rows(&bs, &[run(0, Kind::Native, 1.0), vm]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].test, "vm_exit");
        assert!(rows[1].cells[0].median.is_nan());
        assert_eq!(rows[1].cells[1].median, 9.0);
        assert!(rows[1].cells[1].ratio_to_native.is_nan());
        assert!((rows[0].cells[1].ratio_to_native - 2.0).abs() < 1e-9);
    }
}
