//! The benchmarks run end to end and write their JSON (figures themselves come from full
//! runs, not from tests).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// The suite runs on this host one at a time: each checks that it leaves no work directory
/// or cgroup, which another one running would have.
static SUITE: Mutex<()> = Mutex::new(());
/// One emulated KVM test host at a time: two would share these two cores.
static TEST_HOST: Mutex<()> = Mutex::new(());

#[test]
fn bench_channel_smoke() {
    let _cpus = common::cpus_shared();
    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["bench", "channel", "-n", "1", "--quick", "--out"];
    let between_domains = common::can_run();
    let o = Command::new(common::BIN)
        .args({
            args.push(out.path().to_str().unwrap());
            args.push("--between");
            args.push(if between_domains {
                "processes,domains"
            } else {
                "processes"
            });
            &args
        })
        .arg("--agent")
        .arg(if between_domains {
            common::agent()
        } else {
            "/nonexistent".into()
        })
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("channel.json")).unwrap()).unwrap();
    let mut sets = vec!["processes"];
    if between_domains {
        sets.push("domains");
    }
    for set in sets {
        let rows = doc[set].as_array().unwrap();
        // 3 transports × 3 sizes × 1 or 2 placements, every figure positive.
        assert!(rows.len() == 9 || rows.len() == 18, "{set}: {}", rows.len());
        for r in rows {
            assert!(r["rtt_us"].as_f64().unwrap() > 0.0, "{set}: {r}");
        }
        assert!(rows
            .iter()
            .any(|r| r["bandwidth_mib_s"].as_f64().is_some_and(|b| b > 0.0)));
    }
}

/// A benchmark's I/O error says its cause (the errno), not only what it was doing, in one
/// line.
#[test]
fn a_benchmark_error_keeps_its_errno() {
    let o = Command::new(common::BIN)
        .args(["bench", "fg", "-n", "1", "--agent", "/bin/sh"])
        .env("TMPDIR", "/dev/null")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = common::stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("creating /dev/null/") && e.contains("Not a directory (os error 20)"),
        "{e}"
    );
}

#[test]
fn bench_fg_smoke() {
    let _cpus = common::cpus_shared();
    if !common::can_run() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let doc = bench_report(
        Command::new(common::BIN).args(["bench", "fg", "-n", "6"]),
        out.path(),
        "fg.json",
    );
    let modes = doc["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 2);
    for m in modes {
        assert_eq!(m["client_us"].as_array().unwrap().len(), 6);
        assert!(
            m["client_us_p99"].as_f64().unwrap() >= m["daemon_us_p50"].as_f64().unwrap(),
            "{m}"
        );
    }
}

/// Run `c` (a `cellvisor bench` writing `report` into `out`); it must succeed. The report.
fn bench_report(c: &mut Command, out: &Path, report: &str) -> serde_json::Value {
    let o = c
        .arg("--out")
        .arg(out)
        .arg("--agent")
        .arg(common::agent())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        common::stdout(&o),
        common::stderr(&o)
    );
    serde_json::from_slice(&std::fs::read(out.join(report)).unwrap()).unwrap()
}

/// cellvisord under load, the short version (issue 17's 200 clients and 300 idle
/// connections, few requests each): every request answered, the platform consistent, and the
/// daemon back to its descriptors once the connections and channels are closed.
#[test]
fn bench_api_under_load() {
    let _cpus = common::cpus_shared();
    if !common::can_run() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let r = bench_report(
        Command::new(common::BIN)
            .args([
                "bench",
                "api",
                "--clients",
                "200",
                "--idle",
                "300",
                "-n",
                "3",
            ])
            .args(["--probes", "20"]),
        out.path(),
        "api.json",
    );
    assert_eq!(r["sent"], 600, "{r}");
    assert_eq!(r["answered"], 600, "{r}");
    assert_eq!(r["consistent"], true, "{r}");
    assert_eq!(r["daemon_fds_after"], r["daemon_fds_before"], "{r}");
    // Every kind of request in the mix was answered, refusals included.
    let by: Vec<&str> = r["by_status"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert!(by.contains(&"200") && by.contains(&"409"), "{r}");
    assert!(r["probe_loaded_count"].as_u64().unwrap() >= 1, "{r}");
}

/// The soak, short: containers through the OCI CLI, a daemon's platform and (with /dev/kvm)
/// microVMs with a tap, over and over; nothing may be left, the daemon's descriptors flat.
#[test]
fn bench_soak_short() {
    let _cpus = common::cpus_shared();
    if !common::can_run() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let mut c = Command::new(common::BIN);
    c.args(["bench", "soak", "--oci", "30", "--daemon", "10"]);
    let vms = Path::new("/dev/kvm").exists();
    if vms {
        let k = common::test_guest(out.path(), "tiny");
        c.args(["--vms", "10", "--vm-kernel"]).arg(k);
    }
    let r = bench_report(&mut c, out.path(), "soak.json");
    let phases = r["phases"].as_array().unwrap();
    assert_eq!(phases.len(), if vms { 3 } else { 2 }, "{r}");
    for p in phases {
        assert_eq!(p["leaked"], serde_json::json!([]), "{p}");
    }
    let d = &r["daemon"];
    assert!(d["fds_last"].as_u64() <= d["fds_first"].as_u64(), "{d}");
    assert!(d["fds_first"].as_u64().unwrap() > 0, "{d}");
}

/// Density, scaled down: 100 idle container domains with cellvisor (and crun, or its reason
/// for not running here), then 100 replicas through cellvisord: every tenth measured, all
/// up, nothing left.
#[test]
fn bench_density_a_hundred() {
    let _cpus = common::cpus_shared();
    if !common::can_run() {
        return;
    }
    // Its domains' parent cgroups are named like the suite's.
    let _one = SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().unwrap();
    let mut c = Command::new(common::BIN);
    let crun = Command::new("crun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let backends = if crun { "container,crun" } else { "container" };
    c.args([
        "bench",
        "density",
        "-n",
        "100",
        "--daemon",
        "--rounds",
        "1",
        "--backends",
        backends,
    ]);
    let r = bench_report(&mut c, out.path(), "density.json");
    let ours = &r["runtimes"][0];
    assert_eq!(ours["backend"], "container", "{r}");
    assert_eq!(ours["steps"].as_array().unwrap().len(), 10, "{r}");
    assert_eq!(ours["steps"][9]["n"], 100, "{r}");
    assert!(ours["starts_per_s"].as_f64().unwrap() > 0.0, "{r}");
    for rt in r["runtimes"].as_array().unwrap() {
        assert_eq!(rt["leaked"], serde_json::json!([]), "{rt}");
    }
    // crun runs, or says why not.
    let crun_ran = r["runtimes"].as_array().unwrap().len() == 2;
    let crun_said = r["failed"][0]["error"]
        .as_str()
        .is_some_and(|e| !e.is_empty());
    assert!(!crun || crun_ran || crun_said, "{r}");
    let d = &r["daemon"];
    assert_eq!(d["n"], 100, "{d}");
    assert_eq!(d["leaked"], serde_json::json!([]), "{d}");
    assert!(d["fds_up"].as_u64().unwrap() > 100, "{d}");
    for f in ["density-start.svg", "density-memory.svg", "table.txt"] {
        assert!(out.path().join(f).is_file(), "{f}");
    }
}

/// The suite, `--quick` as CI runs it: every backend present in results.json with a figure
/// for every micro- and macrobenchmark, the CSV one line per run and test, the SVG plot; a bad backend is one line
/// and leaves no work directory.
#[test]
fn bench_suite_quick() {
    if !common::can_run() {
        return;
    }
    let _one = SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().unwrap();
    let peers: Vec<&str> = ["runc", "crun"]
        .into_iter()
        .filter(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    let backends = ["native", "container"]
        .into_iter()
        .chain(peers.iter().copied())
        .collect::<Vec<_>>()
        .join(",");
    let o = Command::new(common::BIN)
        .args([
            "bench",
            "--quick",
            "-n",
            "1",
            "--backends",
            &backends,
            "--out",
        ])
        .arg(out.path())
        .arg("--agent")
        .arg(common::agent())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let table = common::stdout(&o);
    assert!(
        table.contains("null_syscall") && table.contains("container"),
        "{table}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    let tests: Vec<&str> = rows.iter().map(|r| r["test"].as_str().unwrap()).collect();
    for t in [
        "null_syscall",
        "null_read",
        "null_write",
        "fork_exit",
        "fork_exec",
        "fork_sh",
        "pipe_latency",
        "unix_latency",
        "ctx_2",
        "ctx_8",
        "ctx_16",
        "pipe_bandwidth",
        "host_switch_pinned",
        "host_switch_free",
        "app_start_cold",
        "app_start_warm",
        "codec_encode",
        "codec_decode",
        "save_20_files",
    ] {
        assert!(tests.contains(&t), "{t} missing: {tests:?}");
    }
    // A peer that cannot run here (crun without the hugetlb hierarchy on a hybrid machine)
    // is reported with its error and left out.
    let failed = doc["failed"].as_array().unwrap();
    for f in failed {
        assert!(!f["error"].as_str().unwrap().is_empty(), "{f}");
        assert!(peers.contains(&f["backend"].as_str().unwrap()), "{f}");
    }
    let nb = 2 + peers.len() - failed.len();
    for r in rows {
        let cells = r["cells"].as_array().unwrap();
        assert_eq!(cells.len(), nb, "{r}");
        assert_eq!(cells[0]["ratio_to_native"].as_f64(), Some(1.0), "{r}");
        for c in cells {
            assert!(c["median"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    // Every run keeps its 11 timings per test (the file saving is one timing of 20 files).
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), nb);
    for run in runs {
        for f in run["figures"].as_array().unwrap() {
            let n = if f["name"] == "save_20_files" { 1 } else { 11 };
            assert_eq!(f["samples"].as_array().unwrap().len(), n, "{f}");
        }
    }
    assert!(doc["host"]["kernel"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    let csv = std::fs::read_to_string(out.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + nb * tests.len());
    let svg = std::fs::read_to_string(out.path().join("micro.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("null_syscall"));
    let svg = std::fs::read_to_string(out.path().join("macro.svg")).unwrap();
    assert!(svg.contains("codec_encode") && !svg.contains("null_syscall"));

    // Scalability: n = 1, 2, 4 for every backend that ran, with figures that make sense.
    let points = doc["scale"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 3 * nb);
    for p in points {
        let n = p["n"].as_u64().unwrap() as usize;
        assert_eq!(p["start_ms"].as_array().unwrap().len(), n, "{p}");
        assert!(p["creation_per_s"].as_f64().unwrap() > 0.0, "{p}");
        assert!(p["pss_kib_per_domain"].as_f64().unwrap() > 0.0, "{p}");
        assert!(p["busy_iterations"].as_u64().unwrap() > 0, "{p}");
        assert!(p["shared_kib_per_domain"].as_f64().unwrap() > 0.0, "{p}");
        if p["backend"] != "native" {
            assert!(p["cgroup_kib_per_domain"].as_f64().unwrap() > 0.0, "{p}");
        }
    }
    assert_eq!(doc["scale"]["slopes"].as_array().unwrap().len(), nb);
    let csv = std::fs::read_to_string(out.path().join("scale.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * nb);
    for f in ["scale-cpu.svg", "scale-memory.svg", "scale-storage.svg"] {
        let svg = std::fs::read_to_string(out.path().join(f)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("native"), "{f}");
    }
    // Nothing left: no domain cgroup, no work directory.
    let cg: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .flat_map(|c| std::fs::read_dir(c.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("cvscale-") || n.starts_with("cvspin-") || n.starts_with("suite-")
        })
        .collect();
    assert!(cg.is_empty(), "cgroups left: {cg:?}");

    // Bad input: one line, no work directory left.
    let o = bench(["--backends", "native,nosuch"]);
    assert!(!o.status.success());
    let err = common::stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("unknown backend \"nosuch\""), "{err}");
}

/// The microvm backend's bad input: without a kernel, one line; with files that are no
/// kernel, the suite runs the rest and reports the microVM as unable to run (the VMM's own
/// error), leaving no work directory, cgroup, mount or VMM behind.
#[test]
fn bench_suite_microvm_bad_input() {
    if !common::can_run() || !std::path::Path::new("/dev/kvm").exists() {
        return;
    }
    let _one = SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let o = bench(["--backends", "native,microvm"]);
    assert!(!o.status.success());
    let err = common::stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("needs --kernel"), "{err}");
    let o = bench([
        "--backends",
        "native,microvm",
        "--kernel",
        "/nonexistent",
        "--initrd",
        "/nonexistent",
    ]);
    assert!(!o.status.success());
    let err = common::stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent: no such file"), "{err}");

    let t = tempfile::tempdir().unwrap();
    let junk = t.path().join("junk");
    std::fs::write(&junk, b"not a kernel").unwrap();
    let out = t.path().join("out");
    let o = bench([
        "--quick".as_ref(),
        "-n".as_ref(),
        "1".as_ref(),
        "--max-domains".as_ref(),
        "1".as_ref(),
        "--backends".as_ref(),
        "native,microvm".as_ref(),
        "--kernel".as_ref(),
        junk.as_os_str(),
        "--initrd".as_ref(),
        junk.as_os_str(),
        "--agent".as_ref(),
        common::agent().as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let table = common::stdout(&o);
    assert!(
        table.contains("could not run microvm: the VM ended before its guest's userspace"),
        "{table}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(doc["failed"][0]["backend"], "microvm", "{}", doc["failed"]);
    assert_eq!(doc["backends"].as_array().unwrap().len(), 1);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("cellvisor-bench-"), "{mounts}");
    assert_eq!(
        common::processes_with("cellvisor-vm/cellvisor\0vm\0run"),
        Vec::<i32>::new(),
        "a VMM is left"
    );
}

/// The microvm column where a stock kernel boots: the suite over native, container and
/// microvm inside the emulated KVM test host (scripts/bench-suite-vm.sh --quick -n 1
/// --max-domains 2): every figure for every backend, the microVM's exit round trip, its
/// scalability points (start to the guest's DOMAIN-UP, PSS, cgroup memory, busy iterations,
/// copy-on-write storage) and the report's files. Slow (about 90 s); the emulated host
/// sometimes stalls for good, so each attempt has a deadline and there are three.
#[test]
fn bench_suite_microvm_in_the_test_host() {
    if !common::can_run() {
        return;
    }
    if common::stock_kernel().is_none() {
        return;
    }
    let _one = TEST_HOST.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().unwrap();
    script_in_test_host(
        "scripts/bench-suite-vm.sh",
        &["--quick", "-n", "1", "--max-domains", "2"],
        out.path(),
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(
        doc["failed"].as_array().unwrap().len(),
        0,
        "{}",
        doc["failed"]
    );
    let names: Vec<&str> = doc["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["native", "container", "microvm"]);
    for r in doc["rows"].as_array().unwrap() {
        let cells = r["cells"].as_array().unwrap();
        assert_eq!(cells.len(), 3, "{r}");
        assert!(cells[2]["median"].as_f64().unwrap() > 0.0, "{r}");
        if r["test"] == "vm_exit" {
            // The microVM's own: no native figure, no ratio.
            assert!(cells[0]["median"].is_null(), "{r}");
            assert!(cells[2]["ratio_to_native"].is_null(), "{r}");
        } else {
            assert!(cells[2]["ratio_to_native"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    let tests: Vec<&str> = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["test"].as_str().unwrap())
        .collect();
    for t in [
        "null_syscall",
        "fork_exec",
        "host_switch_pinned",
        "codec_decode",
        "vm_exit",
    ] {
        assert!(tests.contains(&t), "{t} missing: {tests:?}");
    }
    let points = doc["scale"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 2 * 3);
    for p in points.iter().filter(|p| p["backend"] == "microvm") {
        let n = p["n"].as_u64().unwrap() as usize;
        assert_eq!(p["start_ms"].as_array().unwrap().len(), n, "{p}");
        for k in [
            "start_p50_ms",
            "pss_kib_per_domain",
            "cgroup_kib_per_domain",
            "private_kib_per_domain",
            "shared_kib_per_domain",
        ] {
            assert!(p[k].as_f64().unwrap() > 0.0, "{k}: {p}");
        }
        assert!(p["busy_iterations"].as_u64().unwrap() > 0, "{p}");
    }
    let table = std::fs::read_to_string(out.path().join("table.txt")).unwrap();
    assert!(
        table.contains("microvm") && table.contains("vm_exit"),
        "{table}"
    );
    for f in [
        "micro.svg",
        "macro.svg",
        "scale-memory.svg",
        "results.csv",
        "scale.csv",
    ] {
        assert!(out.path().join(f).is_file(), "{f} missing");
    }
}

/// A backend that runs the suite but cannot start detached domains (a fake `crun` on PATH:
/// cellvisor underneath, but `run -d` fails) is reported by the scalability runs and left out
/// of them; the run still writes its report and leaves nothing.
#[test]
fn a_backend_that_cannot_scale_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    if !common::can_run() {
        return;
    }
    let _one = SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir().unwrap();
    let fake = t.path().join("crun");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo 'crun version fake'; exit 0; }}\n\
             case \" $* \" in *' run -d '*) echo 'fake crun: no detached domains' >&2; exit 1;; esac\n\
             exec {} \"$@\"\n",
            common::BIN
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", t.path().display(), std::env::var("PATH").unwrap());
    let out = t.path().join("out");
    let child = Command::new(common::BIN)
        .args(["bench", "--quick", "-n", "1", "--max-domains", "2"])
        .args(["--backends", "native,crun", "--agent"])
        .arg(common::agent())
        .arg("--out")
        .arg(&out)
        .env("PATH", path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let work = std::env::temp_dir().join(format!("cellvisor-bench-{}", child.id()));
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(!work.exists(), "{} left behind", work.display());
    let table = common::stdout(&o);
    assert!(
        table.contains(
            "could not run crun with 1 domains: crun: run -d: fake crun: no detached domains"
        ),
        "{table}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    // The suite ran it; the scalability has native's points only.
    assert!(doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["backend"] == "crun"));
    let points = doc["scale"]["points"].as_array().unwrap();
    assert!(
        points.iter().all(|p| p["backend"] == "native"),
        "{points:?}"
    );
    assert_eq!(points.len(), 2);
    assert_eq!(doc["scale"]["failed"][0]["n"], 1);
}

/// Stopped by a signal while its scalability runs have domains up, the suite removes what it
/// made: its work directory, the domains (their cgroups, which a live process would keep) and
/// its parent cgroups; it exits 128 + the signal.
#[test]
fn bench_suite_stopped_by_a_signal_leaves_nothing() {
    use std::io::BufRead;
    if !common::can_run() {
        return;
    }
    let _one = SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = Command::new(common::BIN)
        .args([
            "bench",
            "--quick",
            "-n",
            "1",
            "--backends",
            "native,container",
            "--agent",
        ])
        .arg(common::agent())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The suite's table ends with the file saving; the scalability runs come next.
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        if line.unwrap().starts_with("save_20_files") {
            break;
        }
    }
    let parents = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|c| c.path().join(format!("cvscale-{pid}")))
            .chain([std::path::PathBuf::from(format!(
                "/sys/fs/cgroup/cvscale-{pid}"
            ))])
            .filter(|p| p.exists())
            .collect()
    };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while parents().is_empty() && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!parents().is_empty(), "no domain came up");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let st = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::into_raw(st) >> 8,
        128 + 15
    );
    let work = std::env::temp_dir().join(format!("cellvisor-bench-{pid}"));
    assert!(!work.exists(), "{} left behind", work.display());
    assert_eq!(
        parents(),
        Vec::<std::path::PathBuf>::new(),
        "cgroups left behind"
    );
}

/// `cellvisor bench ARGS` as a user runs it; its work directory (named after its pid) must be
/// gone when it ends, however it ended.
fn bench<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> std::process::Output {
    let child = Command::new(common::BIN)
        .arg("bench")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let work = std::env::temp_dir().join(format!("cellvisor-bench-{}", child.id()));
    let o = child.wait_with_output().unwrap();
    assert!(!work.exists(), "{} left behind", work.display());
    o
}

/// `bench rt --quick`: every variant measured (the realtime domain unloaded and loaded, the
/// control, native, cyclictest when installed), the load never on the realtime core, the
/// report and its plot written, nothing left behind.
#[test]
fn bench_rt_quick() {
    if !common::can_run() {
        return;
    }
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if common::rt_runtime(std::path::Path::new("/sys/fs/cgroup/cpu")).is_none()
        || online.trim() == "0"
    {
        eprintln!("skipped: needs cgroup v1 RT group scheduling and two CPUs");
        return;
    }
    // Its work directory is one the suite's tests look for: one at a time.
    let _cpus = common::cpus_lock();
    let _one = SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(common::BIN)
        .args(["bench", "rt", "--quick", "--samples", "500", "--agent"])
        .arg(common::agent())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("rt.json")).unwrap()).unwrap();
    let names: Vec<&str> = doc["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for want in ["unloaded", "loaded", "control", "native"] {
        assert!(names.contains(&want), "{want} missing: {doc}");
    }
    if std::path::Path::new("/usr/bin/cyclictest").exists() {
        assert!(names.contains(&"cyclictest"), "{doc}");
    }
    for v in doc["variants"].as_array().unwrap() {
        assert_eq!(v["samples"], 500, "{v}");
        let n: u64 = v["hist"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[1].as_u64().unwrap())
            .sum();
        assert_eq!(n, 500, "{v}");
        assert!(v["max_us"].as_f64().unwrap() > 0.0, "{v}");
        if v["name"] != "control" {
            assert!(
                v["policy"].as_str().unwrap().starts_with("SCHED_FIFO"),
                "{v}"
            );
        }
    }
    let loaded = &doc["variants"][1];
    assert_eq!(loaded["name"], "loaded");
    assert_eq!(loaded["load_ms_on_rt_core"].as_f64(), Some(0.0), "{loaded}");
    assert!(doc["loaded_over_control_p99"].as_f64().is_some());
    let svg = std::fs::read_to_string(out.path().join("rt-latency.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("loaded"));
    // Nothing left: no cgroup of its domains.
    let left = cgroups_left("cvrt");
    assert!(left.is_empty(), "cgroups left: {left:?}");
}

/// The cgroups below any hierarchy's /cellvisor whose names start with `prefix`.
fn cgroups_left(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .flat_map(|c| {
            std::fs::read_dir(c.path().join("cellvisor"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// `bench sched --quick`: balance moved the two crowded domains apart and they got more done
/// than under fixed, power packed the light load onto one core and spread it again when it
/// rose, nothing moved onto the realtime domain's core nor ran there, the scheduler's cost
/// was counted, the simulator's rows and plots were written, and nothing is left behind.
/// (The figures' goals are the report's to judge: here only what cannot be noise.)
#[test]
fn bench_sched_quick() {
    if !common::can_run() {
        return;
    }
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if online.trim() == "0" {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    // The CPUs alone: balance rightly moves nothing while another test's load (the test
    // host's emulator above all) keeps the second core busy too.
    let _cpus = common::cpus_lock();
    let _one = SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let _emulator = TEST_HOST.lock().unwrap_or_else(|e| e.into_inner());
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(common::BIN)
        .args(["bench", "sched", "--quick", "--agent"])
        .arg(common::agent())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let text = common::stdout(&o);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("sched.json")).unwrap()).unwrap();
    let b = &doc["balance"];
    assert!(b["rounds"][0]["apart_ms"].as_f64().is_some(), "{b}");
    assert!(
        b["ratio"].as_f64().unwrap() > 1.2,
        "two cores did not do more than one: {text}"
    );
    let p = &doc["power"];
    let on = p["packed_on"].as_str().unwrap();
    assert!(on.parse::<u32>().is_ok(), "packed on {on:?}: {text}");
    assert!(
        p["spread_ms"].as_f64().is_some(),
        "never spread again: {text}"
    );
    let rt = &doc["realtime"];
    if rt["skipped"].is_null() {
        assert_eq!(rt["onto_rt"], 0, "{rt}");
        assert!(
            rt["common_ns_on_rt"].is_null() || rt["common_ns_on_rt"] == 0,
            "{rt}"
        );
    }
    for c in doc["cost"].as_array().unwrap() {
        assert!(c["ticks"].as_u64().unwrap() > 0, "{c}");
        assert!(c["cpu_us_per_tick"].as_f64().unwrap() > 0.0, "{c}");
    }
    let sim = doc["sim"].as_array().unwrap();
    assert_eq!(sim.len(), 12, "{text}");
    for cores in [8, 16] {
        for (what, shows) in [("spread", "balance"), ("cores", "power")] {
            let svg =
                std::fs::read_to_string(out.path().join(format!("sched-sim-{cores}-{what}.svg")))
                    .unwrap();
            assert!(svg.contains("<svg") && svg.contains(shows), "{what}");
        }
    }
    assert!(
        text.contains("balance/fixed work") && text.contains("power/balance work"),
        "{text}"
    );
    let left = cgroups_left("benchsched");
    assert!(left.is_empty(), "cgroups left: {left:?}");
}

/// `bench rt` with its microVM variants where a stock kernel boots (scripts/bench-rt-vm.sh
/// --quick, in the KVM test host with two CPUs and cgroup v2): every variant's figures, the
/// realtime microVM's vCPU thread SCHED_FIFO 80 on the realtime core and the VMM's other
/// threads off it (from /proc, while the probe ran), the control's vCPU without a policy, and
/// the report's files. About 90 s; three attempts, as the emulator sometimes stalls.
#[test]
fn bench_rt_microvm_in_the_test_host() {
    if !common::can_run() || common::stock_kernel().is_none() {
        return;
    }
    let _one = TEST_HOST.lock().unwrap_or_else(|e| e.into_inner());
    // Not beside a test that holds the CPUs alone (bench sched, bench rt): its load and the
    // emulator's starved each other (the test host's kernel once panicked in all three tries).
    let _cpus = common::cpus_shared();
    let out = tempfile::tempdir().unwrap();
    script_in_test_host("scripts/bench-rt-vm.sh", &["--quick"], out.path());
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("rt.json")).unwrap()).unwrap();
    let variant = |n: &str| {
        doc["variants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == n)
            .unwrap_or_else(|| panic!("no {n}: {doc}"))
            .clone()
    };
    for n in [
        "unloaded",
        "loaded",
        "control",
        "vm-unloaded",
        "vm-loaded",
        "vm-control",
    ] {
        let v = variant(n);
        assert_eq!(v["samples"], 3000, "{n}");
        assert!(v["p99_us"].as_u64().unwrap() > 0, "{n}");
    }
    let threads = |n: &str| -> Vec<String> {
        variant(n)["vmm_threads"]
            .as_array()
            .unwrap_or_else(|| panic!("{n}: no VMM threads"))
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    let rt = threads("vm-loaded");
    assert!(
        rt.contains(&"vcpu0 SCHED_FIFO 80 cpus 1".to_string()),
        "{rt:?}"
    );
    for t in rt.iter().filter(|t| !t.starts_with("vcpu0 ")) {
        assert!(
            t.ends_with(" cpus 0") && t.contains("SCHED_OTHER"),
            "{rt:?}"
        );
    }
    let control = threads("vm-control");
    assert!(
        control
            .iter()
            .any(|t| t.starts_with("vcpu0 SCHED_OTHER cpus 0-1")),
        "{control:?}"
    );
    assert!(doc["vm_loaded_over_control_p99"].as_f64().unwrap() > 0.0);
    for f in ["rt-latency.svg", "table.txt"] {
        assert!(out.path().join(f).is_file(), "{f} missing");
    }
}

/// Run a benchmark's test-host script (`script ARGS OUT`, this build's binaries and agent)
/// until it succeeds, three attempts at most.
fn script_in_test_host(script: &str, args: &[&str], out: &std::path::Path) {
    let bin = std::path::Path::new(common::BIN).parent().unwrap();
    common::in_test_host(
        &format!("{script} did not run in the test host"),
        || {
            let mut c = Command::new("bash");
            c.arg(std::path::Path::new(common::WORKSPACE).join(script))
                .args(args)
                .arg(out)
                .env("CELLVISOR_BIN", bin)
                .env("CELLVISOR_AGENT", common::agent())
                .env("KVM_TEST_HOST_TIMEOUT", "400");
            c
        },
        |o| o.status.success(),
    );
}
