//! Helpers for end-to-end tests: a busybox rootfs built once, bundles with a config.json,
//! the cellvisor binary run as a user would, and checks that nothing was left behind.
#![allow(dead_code)]

pub mod seccomp_agent;
pub mod systemd_host;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_cellvisor");
pub const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The static in-domain agent, built (as `make agent` does) if it is not there yet.
pub fn agent() -> PathBuf {
    static A: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    A.get_or_init(|| {
        let p = Path::new(WORKSPACE).join("target/static/release/cellvisor-agent");
        if !p.exists() {
            let ok = Command::new(env!("CARGO"))
                .current_dir(WORKSPACE)
                .args([
                    "rustc",
                    "-q",
                    "-p",
                    "agent",
                    "--features",
                    "static",
                    "--bin",
                    "cellvisor-agent",
                    "--release",
                    "--target-dir",
                    "target/static",
                    "--",
                    "-C",
                    "target-feature=+crt-static",
                ])
                .status()
                .unwrap()
                .success();
            assert!(ok, "building the agent failed");
        }
        p
    })
    .clone()
}

/// Root and the busybox binary are needed; without them a test says why and passes.
pub fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: end-to-end tests need root");
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("skipped: /bin/busybox missing (apt-get install busybox-static)");
        return false;
    }
    true
}

/// A busybox rootfs shared (read-only) by every test of this process.
pub fn rootfs() -> &'static Path {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cellvisor-e2e-rootfs-{}", std::process::id()));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/mkrootfs.sh");
        let ok = Command::new("bash")
            .arg(script)
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mkrootfs.sh failed");
        dir
    })
}

/// A unique container id for this test and process.
pub fn id(name: &str) -> String {
    format!("e2e-{name}-{}", std::process::id())
}

pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub state_root: PathBuf,
    /// Its containers may run on any CPU: see [`CpusLock`].
    _cpus: Option<CpusLock>,
}

impl Bundle {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run `cellvisor --root <state> ARGS` and wait for it, with captured output.
    pub fn cv(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--root")
            .arg(&self.state_root)
            .args(args)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Like `cv`, but the container's stdio (inherited from the runtime) goes to files, so
    /// a long-running container does not hold our pipes open. Returns (status ok, stderr).
    pub fn cv_bg(&self, args: &[&str]) -> (bool, String) {
        let out = self.path().join(format!("out-{}", args[0]));
        let err = self.path().join(format!("err-{}", args[0]));
        let st = Command::new(BIN)
            .arg("--root")
            .arg(&self.state_root)
            .args(args)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        (
            st.success(),
            std::fs::read_to_string(&err).unwrap_or_default(),
        )
    }

    pub fn state(&self, id: &str) -> Option<Value> {
        let o = self.cv(&["state", id]);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).unwrap())
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)
            .map(|s| s["status"].as_str().unwrap().to_string())
            .unwrap_or_default()
    }

    /// Wait until the container is stopped.
    pub fn wait_stopped(&self, id: &str) {
        let end = Instant::now() + Duration::from_secs(20);
        while self.status(id) != "stopped" {
            assert!(Instant::now() < end, "container {id} did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn write_config(&self, cfg: &Value) {
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(cfg).unwrap(),
        )
        .unwrap();
    }
}

/// A bundle whose config.json is `cfg`.
pub fn bundle(cfg: &Value) -> Bundle {
    let dir = tempfile::tempdir().unwrap();
    let state_root = dir.path().join("state");
    let b = Bundle {
        dir,
        state_root,
        _cpus: cpus_shared(),
    };
    b.write_config(cfg);
    b
}

/// The default config (as `cellvisor spec` writes it) for the shared rootfs, without a
/// terminal, running `args`.
pub fn config(args: &[&str]) -> Value {
    let out = Command::new(BIN).arg("features").output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new(BIN)
        .args(["spec", "--bundle"])
        .arg(dir.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut c: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    c["root"]["path"] = json!(rootfs());
    c["process"]["terminal"] = json!(false);
    c["process"]["args"] = json!(args);
    c
}

/// Put `c` in a new user namespace: container ids 0..65536 are host uids from `uid`, gids from
/// `gid`; the cgroup mount goes (a user namespace may not mount the host's hierarchies).
pub fn in_user_namespace(c: &mut Value, uid: u32, gid: u32) {
    c["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    c["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 65536}]);
    c["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 65536}]);
    c["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["type"] != "cgroup");
}

/// One of the project's test guests (guests/NAME/NAME.S: "tiny" or "idle"), built into DIR.
pub fn test_guest(dir: &Path, name: &str) -> PathBuf {
    let elf = dir.join(format!("{name}.elf"));
    let ok = Command::new("bash")
        .arg(Path::new(WORKSPACE).join("scripts/mktiny.sh"))
        .arg(&elf)
        .arg(name)
        .status()
        .unwrap()
        .success();
    assert!(ok, "building the {name} test guest failed");
    elf
}

/// The newest stock guest kernel (/boot/vmlinuz-*-cloud-amd64), when it and QEMU (for the
/// emulated KVM test host) are installed; otherwise the test says why and is skipped.
pub fn stock_kernel() -> Option<PathBuf> {
    let kernel = std::fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("vmlinuz-") && name.ends_with("-cloud-amd64")
        })
        .max();
    if kernel.is_none() || !Path::new("/usr/bin/qemu-system-x86_64").exists() {
        eprintln!("skipped: no /boot/vmlinuz-*-cloud-amd64 or qemu-system-x86_64 (scripts/deps.sh installs them)");
        return None;
    }
    kernel
}

/// Run a command in the emulated KVM test host (`cmd` builds it) until `ok` accepts its
/// output, at most three times: the emulator itself sometimes stalls for good (its timer
/// interrupts stop while a nested guest runs), so every attempt has a deadline of its own.
/// Panics with the last attempt's output.
pub fn in_test_host(what: &str, cmd: impl Fn() -> Command, ok: impl Fn(&Output) -> bool) -> Output {
    let mut last = String::new();
    for attempt in 0..3 {
        let o = cmd().stdin(Stdio::null()).output().unwrap();
        if ok(&o) {
            return o;
        }
        last = format!("attempt {attempt}: {}{}", stdout(&o), stderr(&o));
    }
    panic!("{what}:\n{last}");
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Cgroup directories of a container id (default cgroupsPath) that still exist.
pub fn cgroup_leftovers(id: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let p = e.path().join("cellvisor").join(id);
        if p.exists() {
            left.push(p);
        }
    }
    let p = Path::new("/sys/fs/cgroup/cellvisor").join(id);
    if p.exists() {
        left.push(p);
    }
    left
}

/// Processes (other than this test) whose command line names `marker`.
pub fn processes_with(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| *p != me)
        .filter(|p| {
            let c = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&c).contains(marker)
        })
        .collect()
}

/// Nothing of container `id` remains: no state directory, cgroup, process or mount.
pub fn assert_nothing_left(b: &Bundle, id: &str) {
    assert!(
        !b.state_root.join(id).exists(),
        "state directory of {id} left behind"
    );
    assert_eq!(
        cgroup_leftovers(id),
        Vec::<PathBuf>::new(),
        "cgroups of {id} left behind"
    );
    // Give a killed process a moment to be reaped by its parent.
    let end = Instant::now() + Duration::from_secs(5);
    while !processes_with(id).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        processes_with(id),
        Vec::<i32>::new(),
        "processes of {id} left behind"
    );
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let bp = b.path().to_string_lossy().to_string();
    assert!(!mi.contains(&bp), "a mount under {bp} was left behind");
}

/// The real-time budget of a cpu cgroup (v1 `cpu.rt_runtime_us`), if it has one.
pub fn rt_runtime(dir: &Path) -> Option<i64> {
    std::fs::read_to_string(dir.join("cpu.rt_runtime_us"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The CPUs tests share. On cgroup v1 a core held exclusively (a realtime domain's) may be
/// no other cpuset's, anywhere: while one test holds one, no other test may run a container
/// that could be on it (a default one inherits every CPU). So a test that claims a core holds
/// this lock alone ([`cpus_lock`]), and every bundle and daemon holds it shared
/// ([`cpus_shared`]). A file lock: it holds across test binaries too.
pub struct CpusLock {
    _file: std::fs::File,
    exclusive: bool,
}

thread_local! {
    static HOLDS_CPUS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Drop for CpusLock {
    fn drop(&mut self) {
        if self.exclusive {
            HOLDS_CPUS.set(false);
        }
    }
}

fn cpus_flock(how: libc::c_int) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("cellvisor-tests-cpus.lock"))
        .unwrap();
    // SAFETY: flock on a descriptor we own; released when the file is closed.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), how) }, 0);
    f
}

/// The CPUs alone, for a test whose containers hold cores exclusively or use a cpuset outside
/// /cellvisor (which an exclusive /cellvisor would leave without a CPU).
pub fn cpus_lock() -> CpusLock {
    let _file = cpus_flock(libc::LOCK_EX);
    HOLDS_CPUS.set(true);
    CpusLock {
        _file,
        exclusive: true,
    }
}

/// The CPUs shared with the other tests (nothing when this thread holds them alone).
pub fn cpus_shared() -> Option<CpusLock> {
    (!HOLDS_CPUS.get()).then(|| CpusLock {
        _file: cpus_flock(libc::LOCK_SH),
        exclusive: false,
    })
}

/// Remove the cgroup `name` (below every hierarchy's root) and its descendants where they
/// are empty: what podman (`libpod_parent`) and containerd (`default`) leave behind after a
/// test. Such a cpuset beside /cellvisor sharing its CPUs keeps v1 from making /cellvisor
/// exclusive, so the tests that follow would not see an exclusive core. Best effort: a group
/// still in use stays.
pub fn remove_empty_cgroups(name: &str) {
    fn rm(dir: &Path) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    rm(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in rd.flatten() {
            let d = h.path().join(name);
            if d.is_dir() {
                rm(&d);
            }
        }
    }
}

/// The cpusets beside /cellvisor (v1) sharing CPUs with it: while there is one, v1 cannot
/// make /cellvisor exclusive.
pub fn cpusets_beside_cellvisor() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup/cpuset");
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.ends_with("cellvisor"))
        .filter(|p| {
            std::fs::read_to_string(p.join("cpuset.cpus")).is_ok_and(|c| !c.trim().is_empty())
        })
        .collect()
}

/// (scheduling policy, real-time priority) of process `pid` from /proc/PID/stat.
pub fn sched_of(stat: &str) -> (u32, u32) {
    let f: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // Fields 40 (rt_priority) and 41 (policy), counted from 1; `f` starts at field 3.
    (f[38].parse().unwrap(), f[37].parse().unwrap())
}
