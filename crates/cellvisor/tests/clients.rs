//! Real clients driving cellvisor as their OCI runtime, as a user would: podman (through
//! conmon) and containerd's `ctr` (through the runc shim). Each test keeps its client's
//! storage and sockets in a temporary directory, so it touches nothing of the host's.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A tarball of the shared busybox rootfs, for `podman import`.
fn rootfs_tar(dir: &Path) -> std::path::PathBuf {
    let tar = dir.join("busybox.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(rootfs())
        .args(["-cf"])
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    tar
}

struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::tempdir().unwrap();
        // Root here lacks CAP_SYS_RESOURCE, so podman's default rlimits cannot be set.
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        Podman { dir }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--runtime")
            .arg(BIN)
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}{}", stdout(o), stderr(o));
    stdout(o)
}

#[test]
fn podman_runs_containers_with_cellvisor() {
    if !can_run() {
        return;
    }
    if !have("podman") {
        eprintln!("skipped: podman not installed (make test installs it)");
        return;
    }
    let p = Podman::new();
    let tar = rootfs_tar(p.dir.path());
    ok(&p.run(&["import", tar.to_str().unwrap(), "localhost/busybox:cv"]));
    let img = "localhost/busybox:cv";

    let out = ok(&p.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        img,
        "sh",
        "-c",
        "echo hello; ls /sys/class/net",
    ]));
    assert_eq!(out, "hello\nlo\n");

    // Limits reach the cgroup, a bind mount is shared both ways.
    let vol = tempfile::tempdir().unwrap();
    std::fs::write(vol.path().join("in"), "from host\n").unwrap();
    let v = format!("{}:/vol", vol.path().display());
    let out = ok(&p.run(&[
        "run", "--rm", "--network", "none", "--memory", "64m", "--pids-limit", "50", "--cpus", "0.5", "-v", &v, img, "sh", "-c",
        "cat /vol/in; echo out > /vol/out; cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.max",
    ]));
    assert!(out.starts_with("from host\n50\n"), "{out}");
    assert!(out.contains("50000") && out.contains("67108864"), "{out}");
    assert_eq!(
        std::fs::read_to_string(vol.path().join("out")).unwrap(),
        "out\n"
    );

    // The pids limit is enforced.
    let o = p.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--pids-limit",
        "5",
        img,
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done 2>&1; wait",
    ]);
    assert!(
        (stdout(&o) + &stderr(&o)).contains("fork"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );

    // A terminal (-t): podman hands conmon's console socket to cellvisor. `script` gives
    // podman a terminal of its own to attach to.
    let d = p.dir.path().display();
    let line = format!(
        "CONTAINERS_CONF={d}/containers.conf podman --root {d}/storage --runroot {d}/run --tmpdir {d}/tmp --runtime {BIN} run --rm -t --network none {img} sh -c 'tty; echo tty-ok'"
    );
    let o = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(
        out.contains("/dev/pts/0") && out.contains("tty-ok"),
        "{out}{}",
        stderr(&o)
    );

    // Detached: ps, exec, stop, rm.
    ok(&p.run(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "--network",
        "none",
        img,
        "sleep",
        "1000",
    ]));
    let ps = ok(&p.run(&["ps", "--format", "{{.Names}} {{.Status}}"]));
    assert!(ps.starts_with("sleeper Up"), "{ps}");
    let out = ok(&p.run(&[
        "exec",
        "sleeper",
        "sh",
        "-c",
        "echo in-exec; cat /proc/1/cmdline",
    ]));
    assert_eq!(out, "in-exec\nsleep\u{0}1000\u{0}");
    ok(&p.run(&["stop", "-t", "1", "sleeper"]));
    let ps = ok(&p.run(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]));
    assert!(ps.starts_with("sleeper Exited"), "{ps}");
    ok(&p.run(&["rm", "sleeper"]));
    assert_eq!(ok(&p.run(&["ps", "-aq"])), "");
    let _ = p.run(&["rmi", "-a", "-f"]);
    common::remove_empty_cgroups("libpod_parent");
}

/// podman's `--cpu-rt-runtime` reaches the container's cgroup through cellvisor (granted from
/// its parent down): a process in it may then take SCHED_FIFO (`chrt` from the host), which it
/// may not without; the budget is given back when the container goes.
#[test]
fn podman_cpu_rt_runtime_gives_the_container_a_real_time_budget() {
    if !can_run() {
        return;
    }
    if !have("podman") || !have("chrt") {
        eprintln!("skipped: podman or chrt not installed (make test installs them)");
        return;
    }
    let parent = Path::new("/sys/fs/cgroup/cpu/libpod_parent");
    if rt_runtime(Path::new("/sys/fs/cgroup/cpu")).is_none() {
        eprintln!("skipped: no cgroup v1 RT group scheduling");
        return;
    }
    let p = Podman::new();
    let tar = rootfs_tar(p.dir.path());
    ok(&p.run(&["import", tar.to_str().unwrap(), "localhost/busybox:cv"]));
    let img = "localhost/busybox:cv";
    let before = rt_runtime(parent).unwrap_or(0);
    let pid_of = |name: &str| {
        ok(&p.run(&["inspect", "--format", "{{.State.Pid}}", name]))
            .trim()
            .to_string()
    };
    let chrt = |pid: &str| {
        Command::new("chrt")
            .args(["-f", "-p", "10", pid])
            .output()
            .unwrap()
    };
    ok(&p.run(&[
        "run",
        "-d",
        "--name",
        "rt",
        "--network",
        "none",
        "--cpu-rt-runtime",
        "50000",
        "--cpu-rt-period",
        "1000000",
        img,
        "sleep",
        "1000",
    ]));
    let pid = pid_of("rt");
    let o = chrt(&pid);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(rt_runtime(parent).unwrap() >= before + 50000);
    // The same without a budget: refused.
    ok(&p.run(&[
        "run",
        "-d",
        "--name",
        "nort",
        "--network",
        "none",
        img,
        "sleep",
        "1000",
    ]));
    let o = chrt(&pid_of("nort"));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    ok(&p.run(&["rm", "-f", "-t", "0", "rt", "nort"]));
    assert_eq!(
        rt_runtime(parent).unwrap_or(0),
        before,
        "the budget was not given back"
    );
    let _ = p.run(&["rmi", "-a", "-f"]);
    common::remove_empty_cgroups("libpod_parent");
}

#[test]
fn containerd_ctr_runs_containers_with_cellvisor() {
    if !can_run() {
        return;
    }
    if !have("containerd") || !have("ctr") || !have("podman") {
        eprintln!("skipped: containerd, ctr or podman not installed (make test installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sock = d.join("containerd.sock");
    let child = Command::new("containerd")
        .arg("--root")
        .arg(d.join("root"))
        .arg("--state")
        .arg(d.join("state"))
        .arg("--address")
        .arg(&sock)
        .stdout(std::fs::File::create(d.join("containerd.log")).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Stopped, and its mounts (under our temporary root) gone, however the test ends.
    let _daemon = Containerd {
        child,
        root: d.join("root"),
    };
    let end = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < end, "containerd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ctr = |args: &[&str]| -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // The image: podman imports the rootfs and saves it as an OCI archive for ctr.
    let p = Podman::new();
    let tar = rootfs_tar(p.dir.path());
    ok(&p.run(&["import", tar.to_str().unwrap(), "localhost/busybox:cv"]));
    let oci = d.join("busybox-oci.tar");
    ok(&p.run(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        oci.to_str().unwrap(),
        "localhost/busybox:cv",
    ]));
    ok(&ctr(&[
        "image",
        "import",
        "--base-name",
        "localhost/busybox",
        oci.to_str().unwrap(),
    ]));
    let img = "localhost/busybox:cv";

    let out = ok(&ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        BIN,
        img,
        "c1",
        "sh",
        "-c",
        "echo hello-ctr; cat /proc/1/cmdline | tr '\\0' ' '",
    ]));
    assert_eq!(
        out,
        "hello-ctr\nsh -c echo hello-ctr; cat /proc/1/cmdline | tr '\\0' ' ' "
    );

    // A create cellvisor refuses: the user sees cellvisor's own line (containerd parses the
    // JSON log's last line, its time as RFC 3339), not containerd's parse error.
    let o = ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        BIN,
        "--annotation",
        "io.cellvisor.cpus.exclusive=bogus",
        img,
        "c3",
        "true",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("annotations.io.cellvisor.cpus.exclusive: \"bogus\" is not"),
        "{err}"
    );
    assert!(!err.contains("parsing time"), "{err}");
    let _ = ctr(&["container", "rm", "c3"]);

    ok(&ctr(&[
        "run",
        "-d",
        "--runc-binary",
        BIN,
        img,
        "c2",
        "sleep",
        "1000",
    ]));
    let tasks = ok(&ctr(&["task", "ls"]));
    assert!(tasks.contains("c2") && tasks.contains("RUNNING"), "{tasks}");
    let ps = ok(&ctr(&["task", "ps", "c2"]));
    assert_eq!(ps.lines().count(), 2, "{ps}");
    let out = ok(&ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "c2",
        "sh",
        "-c",
        "echo from-exec",
    ]));
    assert_eq!(out, "from-exec\n");
    ok(&ctr(&["task", "kill", "-s", "SIGKILL", "c2"]));
    let end = Instant::now() + Duration::from_secs(10);
    while !ok(&ctr(&["task", "ls"])).contains("STOPPED") {
        assert!(Instant::now() < end, "task did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&ctr(&["task", "rm", "c2"]));
    ok(&ctr(&["container", "rm", "c2"]));
    assert!(!ok(&ctr(&["task", "ls"])).contains("c2"));
    let _ = p.run(&["rmi", "-a", "-f"]);
}

/// A containerd of a test: killed, its mounts unmounted and the cgroup it made removed when
/// dropped (containerd's shims exit with their tasks; its mounts live under `root`).
struct Containerd {
    child: std::process::Child,
    root: std::path::PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount").arg("-R").arg(&self.root).status();
        common::remove_empty_cgroups("default");
    }
}

/// The systemd cgroup driver against a real systemd (PID 1 of a container domain, see
/// `common::systemd_host`): `--systemd-cgroup` with `cgroupsPath` `slice:prefix:name` makes a
/// transient scope with Delegate=yes and the container's process in it, the resources as the
/// unit's properties and in the cgroup files, an `org.systemd.property.*` annotation honoured;
/// `update` changes both; `delete` stops the unit and leaves no cgroup. Then podman, with its
/// default `cgroup_manager = "systemd"`, drives cellvisor there.
#[test]
fn systemd_cgroup_driver_under_a_real_systemd() {
    if !can_run() || !systemd_host::available() {
        return;
    }
    let h = systemd_host::SystemdHost::boot(&id("systemd-host"));
    let w = h.work.path().to_path_buf();
    // A container of cellvisor's, from inside.
    let inner = w.join("inner");
    std::fs::create_dir(&inner).unwrap();
    let mut c = config(&["sleep", "1000"]);
    c["linux"]["cgroupsPath"] = serde_json::json!("system.slice:cellvisor:inner");
    c["linux"]["resources"] = serde_json::json!({
        "memory": {"limit": 67108864}, "pids": {"limit": 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000}
    });
    c["annotations"] =
        serde_json::json!({"org.systemd.property.TimeoutStopUSec": "uint64 7000000"});
    std::fs::write(inner.join("config.json"), c.to_string()).unwrap();
    let cv = format!("{BIN} --systemd-cgroup --root /run/cvi");
    let unit = "cellvisor-inner.scope";
    let show = format!("systemctl show {unit} -p ActiveState,Delegate,Slice,MemoryLimit,TasksMax,CPUShares,CPUQuotaPerSecUSec,TimeoutStopUSec | sort");
    let o = h.sh(&format!(
        "cd {} && {cv} run -d inner > out 2>&1; echo rc=$?; cat out; {show}",
        inner.display()
    ));
    assert_eq!(
        stdout(&o),
        "rc=0\nActiveState=active\nCPUQuotaPerSecUSec=500ms\nCPUShares=512\nDelegate=yes\nMemoryLimit=67108864\nSlice=system.slice\nTasksMax=20\nTimeoutStopUSec=7s\n",
        "{}",
        stderr(&o)
    );
    let o = h.sh(&format!(
        "pid=$({cv} state inner | sed -n 's/.*\"pid\": \\([0-9]*\\).*/\\1/p'); \
         grep -qx $pid /sys/fs/cgroup/systemd/system.slice/{unit}/cgroup.procs && echo in-scope; \
         cat /sys/fs/cgroup/memory/system.slice/{unit}/memory.limit_in_bytes \
             /sys/fs/cgroup/pids/system.slice/{unit}/pids.max"
    ));
    assert_eq!(stdout(&o), "in-scope\n67108864\n20\n", "{}", stderr(&o));
    // update: the unit's properties and the files.
    let o = h.sh(&format!(
        "{cv} update --memory 32M --pids-limit 30 inner && \
         systemctl show {unit} -p MemoryLimit,TasksMax | sort && \
         cat /sys/fs/cgroup/memory/system.slice/{unit}/memory.limit_in_bytes"
    ));
    assert_eq!(
        stdout(&o),
        "MemoryLimit=33554432\nTasksMax=30\n33554432\n",
        "{}",
        stderr(&o)
    );
    // delete: the unit gone, and every directory of it.
    let o = h.sh(&format!(
        "{cv} delete -f inner && systemctl show {unit} -p LoadState; \
         ls -d /sys/fs/cgroup/*/system.slice/{unit} 2>/dev/null | wc -l"
    ));
    assert_eq!(stdout(&o), "LoadState=not-found\n0\n", "{}", stderr(&o));
    // A failure after systemd made the unit (no such program): the unit goes too.
    c["process"]["args"] = serde_json::json!(["/no/such/program"]);
    std::fs::write(inner.join("config.json"), c.to_string()).unwrap();
    let o = h.sh(&format!(
        "cd {} && {cv} run inner; echo rc=$?; systemctl list-units --all --no-legend 'cellvisor-*' | wc -l; \
         ls -d /sys/fs/cgroup/*/system.slice/{unit} 2>/dev/null | wc -l; {cv} list -q | wc -l",
        inner.display()
    ));
    assert!(
        stdout(&o).ends_with("rc=1\n0\n0\n0\n"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stderr(&o).contains("/no/such/program"), "{}", stderr(&o));
    // A plain path with the systemd driver: one line, no unit, no cgroup.
    c["linux"]["cgroupsPath"] = serde_json::json!("/cellvisor/plain");
    std::fs::write(inner.join("config.json"), c.to_string()).unwrap();
    let o = h.sh(&format!(
        "cd {} && {cv} create plain; echo rc=$?; systemctl list-units --all --no-legend 'cellvisor-*' | wc -l; \
         ls -d /sys/fs/cgroup/*/cellvisor/plain 2>/dev/null | wc -l; {cv} list -q | wc -l",
        inner.display()
    ));
    let out = stdout(&o);
    assert!(
        out.ends_with("rc=1\n0\n0\n0\n") && stderr(&o).contains("is not slice:prefix:name"),
        "{out}{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    // podman, with systemd as its cgroup manager, driving cellvisor.
    if have("podman") {
        std::fs::copy(rootfs_tar(&w), w.join("img.tar")).unwrap();
        std::fs::write(
            w.join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n[engine]\ncgroup_manager = \"systemd\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        let p = format!(
            "CONTAINERS_CONF={0}/containers.conf podman --root {0}/storage --runroot /run/podman --storage-driver vfs",
            w.display()
        );
        let o = h.sh(&format!(
            "{p} import {0}/img.tar img >/dev/null && \
             {p} --runtime {BIN} run --rm --network none --memory 64m img \
                 sh -c 'grep memory: /proc/self/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes'; \
             echo rc=$?; systemctl list-units --all --no-legend 'libpod-*' | wc -l",
            w.display()
        ));
        let out = stdout(&o);
        assert!(
            out.contains(":memory:/machine.slice/libpod-") && out.ends_with("67108864\nrc=0\n0\n"),
            "{out}{}",
            stderr(&o)
        );
    }
    let b_id = h.id.clone();
    drop(h);
    assert_eq!(cgroup_leftovers(&b_id), Vec::<std::path::PathBuf>::new());
}
