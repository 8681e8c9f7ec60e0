//! The device platform end to end (root): cellvisord on the phone profile, driven through its
//! API and `cellvisor`'s verbs as a user would, killed and restarted, and checked for leftovers.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

macro_rules! need_root {
    () => {
        if !common::can_run() {
            return;
        }
    };
}

use common::{agent, WORKSPACE};

fn daemon_bin() -> PathBuf {
    Path::new(common::BIN).with_file_name("cellvisord")
}

/// One daemon on its own state directory, socket and cgroup prefix.
struct Daemon {
    dir: tempfile::TempDir,
    prefix: String,
    child: Option<Child>,
    extra: Vec<String>,
    /// Run the daemon in a mount namespace whose /sys/fs/cgroup is a cgroup2 mount.
    v2: bool,
    /// A profile with a realtime domain holds its core exclusively: see common::CpusLock.
    _cpus: Option<common::CpusLock>,
    /// The crash point (CELLVISOR_CRASH_AT) of the next start only.
    crash_at: Option<&'static str>,
}

impl Daemon {
    fn with_profile(tag: &str, profile: &str, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let text = profile.replace(
            "base = \"rootfs\"",
            &format!("base = {:?}", common::rootfs().display().to_string()),
        );
        let cpus = if text.contains("realtime =") {
            Some(common::cpus_lock())
        } else {
            common::cpus_shared()
        };
        std::fs::write(dir.path().join("profile.toml"), text).unwrap();
        let mut d = Daemon {
            dir,
            prefix: format!("e2e{tag}{}", std::process::id()),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            v2: false,
            _cpus: cpus,
            crash_at: None,
        };
        d.start();
        d
    }

    fn new(tag: &str) -> Daemon {
        Daemon::with_profile(tag, domain::DEFAULT_PROFILE, &[])
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    fn command(&self) -> Command {
        let mut c = if self.v2 {
            let mut c = Command::new("unshare");
            c.args(["-m", "--propagation", "private", "sh", "-c"])
                .arg("mount -t cgroup2 none /sys/fs/cgroup && exec \"$0\" \"$@\"")
                .arg(daemon_bin());
            c
        } else {
            Command::new(daemon_bin())
        };
        c.arg("--profile")
            .arg(self.dir.path().join("profile.toml"))
            .arg("--state")
            .arg(self.state())
            .arg("--socket")
            .arg(self.sock())
            .arg("--agent")
            .arg(agent())
            .arg("--prefix")
            .arg(&self.prefix)
            .args(&self.extra)
            .env_remove("CELLVISOR_CRASH_AT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("daemon.log"))
                    .unwrap(),
            );
        c
    }

    /// Start the daemon and wait until it listens on a socket of its own (its log says so):
    /// after a SIGKILL, the starting process of a domain the killed daemon was bringing up
    /// may still hold the old listener for a moment, which accepts connections that nobody
    /// answers (they are reset when it goes), and the new daemon refuses to start while the
    /// socket answers ("in use by another server"): it is started again once that is over.
    fn start(&mut self) {
        let point = self.crash_at.take();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let _ = std::fs::remove_file(self.dir.path().join("daemon.log"));
            let mut c = self.command();
            if let Some(point) = point {
                c.env("CELLVISOR_CRASH_AT", point);
            }
            let mut child = c.spawn().unwrap();
            loop {
                if self.log().contains("cellvisord: listening on") {
                    self.child = Some(child);
                    return;
                }
                if let Some(st) = child.try_wait().unwrap() {
                    let log = self.log();
                    assert!(
                        log.contains("in use by another server") && Instant::now() < end,
                        "cellvisord exited ({st}): {log}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
                assert!(Instant::now() < end, "cellvisord did not listen");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn signal(&mut self, sig: i32) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill of our own child.
            unsafe { libc::kill(c.id() as i32, sig) };
            c.wait().unwrap();
        }
    }

    /// Send a request the daemon dies on (at its crash point): it must have been killed.
    fn dies_on(&mut self, method: &str, path: &str, body: Option<Value>) {
        let mut s = UnixStream::connect(self.sock()).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut sink = Vec::new();
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        let _ = s.read_to_end(&mut sink);
        // Bounded: a daemon that does not reach its point must not hang the test.
        let mut child = self.child.take().unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{method} {path}: the daemon did not reach its crash point in 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "{method} {path} did not reach its crash point ({st}): {}",
            String::from_utf8_lossy(&sink)
        );
    }

    fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut s = UnixStream::connect(self.sock()).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let v = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
        };
        (status, v)
    }

    fn cv(&self, args: &[&str]) -> Output {
        Command::new(common::BIN)
            .args(args)
            .env("CELLVISOR_SOCKET", self.sock())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Run `script` in domain `dom` (`cellvisor exec`, in the daemon's mount namespace).
    fn exec(&self, dom: &str, script: &str) -> Output {
        let mut c = if self.v2 {
            let mut c = Command::new("nsenter");
            c.args([
                "-t",
                &self.child.as_ref().unwrap().id().to_string(),
                "-m",
                common::BIN,
            ]);
            c
        } else {
            Command::new(common::BIN)
        };
        c.arg("--root")
            .arg(self.state().join("oci"))
            .args([
                "exec",
                &format!("{}-{dom}", self.prefix),
                "/bin/sh",
                "-c",
                script,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cv(args);
        assert!(
            o.status.success(),
            "cellvisor {args:?}: {}{}",
            common::stdout(&o),
            common::stderr(&o)
        );
        common::stdout(&o)
    }

    fn domains(&self) -> Vec<Value> {
        let (s, v) = self.api("GET", "/v1/domains", None);
        assert_eq!(s, 200);
        v.as_array().unwrap().clone()
    }

    fn domain(&self, name: &str) -> Value {
        self.domains()
            .into_iter()
            .find(|d| d["name"] == name)
            .unwrap()
    }

    fn pid(&self, name: &str) -> i32 {
        self.domain(name)["pid"].as_i64().unwrap() as i32
    }

    fn wait_log(&self, name: &str, text: &str) -> String {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, v) = self.api("GET", &format!("/v1/domains/{name}/logs"), None);
            let log = v["text"].as_str().unwrap_or("").to_string();
            if log.contains(text) {
                return log;
            }
            assert!(Instant::now() < end, "{name}'s log lacks {text:?}: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything down and purged, the daemon stopped: then nothing may remain.
    fn teardown_and_check(mut self, pids: &[i32]) {
        let (s, _) = self.api("POST", "/v1/down?purge=true", None);
        assert_eq!(s, 200);
        self.signal(libc::SIGTERM);
        assert!(
            !self.state().exists(),
            "the state directory was left behind"
        );
        assert!(!self.sock().exists(), "the API socket was left behind");
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.dir.path().to_string_lossy().to_string();
        assert!(!mi.contains(&dir), "a mount under {dir} was left behind");
        let mut cg = Vec::new();
        for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            for sub in [e.path().join("cellvisor"), e.path()] {
                for c in std::fs::read_dir(sub).into_iter().flatten().flatten() {
                    if c.file_name().to_string_lossy().starts_with(&self.prefix) {
                        cg.push(c.path());
                    }
                }
            }
        }
        assert!(cg.is_empty(), "cgroups left behind: {cg:?}");
        // Nor the channels' keeper (`cellvisord --keeper DIR`).
        let state = self.state().to_string_lossy().into_owned();
        let keepers: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("--keeper") && c.contains(&state))
            .collect();
        assert!(keepers.is_empty(), "processes left behind: {keepers:?}");
        let end = Instant::now() + Duration::from_secs(5);
        let alive = || {
            pids.iter()
                .copied()
                .filter(|p| Path::new(&format!("/proc/{p}")).exists())
                .collect::<Vec<_>>()
        };
        while !alive().is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            alive().is_empty(),
            "domain processes left behind: {:?}",
            alive()
        );
    }

    /// Which of the foreground stand-in nodes a domain sees in its /dev.
    fn devs(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{}/root/dev", self.pid(name)))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| ["vcs1", "tty1", "vcsa1"].contains(&n.as_str()))
            .collect();
        v.sort();
        v
    }

    fn shares(&self, name: &str) -> Option<u64> {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/cpu/cellvisor/{}-{name}/cpu.shares",
            self.prefix
        ))
        .ok()
        .and_then(|s| s.trim().parse().ok())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // After a failed test: stop the domains, whatever state they are in.
        if self.child.is_some() {
            let _ = self.api("POST", "/v1/down?purge=true", None);
            self.signal(libc::SIGTERM);
        }
        if self.state().join("oci").exists() {
            self.start();
            let _ = self.api("POST", "/v1/down?purge=true", None);
            self.signal(libc::SIGTERM);
        }
    }
}

fn has_vt() -> bool {
    ["/dev/vcs1", "/dev/tty1", "/dev/vcsa1"]
        .iter()
        .all(|p| Path::new(p).exists())
}

/// The README's demo as a test: up, a message over an allowed channel, a forbidden one
/// refused, the foreground moved twice (devices, weights), teardown with nothing left.
#[test]
fn the_phone_profile_under_the_daemon() {
    need_root!();
    let d = Daemon::new("ph");
    let out = d.ok(&["up"]);
    assert!(out.contains("trusted"), "{out}");
    for dom in d.domains() {
        assert_eq!(dom["status"], "running", "{dom}");
    }
    assert_eq!(d.domain("trusted")["foreground"], true);
    let pids: Vec<i32> = ["trusted", "common", "modem"].map(|n| d.pid(n)).to_vec();

    // The allowed channel: common's agent sends, trusted's agent answers.
    let out = d.ok(&["channel", "open", "common", "trusted", "messages"]);
    assert!(out.contains("65536 bytes"), "{out}");
    d.wait_log("common", "reply: trusted got: hello from common");
    d.wait_log("trusted", "got: hello from common");

    // The forbidden one: refused in one line, nothing opened.
    let o = d.cv(&["channel", "open", "common", "modem", "telephony"]);
    assert!(!o.status.success());
    assert_eq!(
        common::stderr(&o).trim(),
        "cellvisor: policy: common may not open channel \"telephony\" to modem"
    );
    let (_, chans) = d.api("GET", "/v1/channels", None);
    assert_eq!(chans.as_array().unwrap().len(), 1);

    // Foreground: trusted holds display and input; common is throttled.
    if has_vt() {
        assert_eq!(d.devs("trusted"), ["tty1", "vcs1"]);
        assert!(d.devs("common").is_empty());
    }
    let bg = container::cgroups::plan::weight_to_shares(10);
    if let Some(s) = d.shares("common") {
        assert_eq!(s, bg);
    }
    let out = d.ok(&["fg", "common"]);
    assert!(out.contains("foreground: common (was trusted)"), "{out}");
    if has_vt() {
        assert!(d.devs("trusted").is_empty(), "{:?}", d.devs("trusted"));
        assert_eq!(d.devs("common"), ["tty1", "vcs1", "vcsa1"]);
    }
    if let Some(s) = d.shares("trusted") {
        assert_eq!(s, bg);
        assert_eq!(
            d.shares("common").unwrap(),
            container::cgroups::plan::weight_to_shares(100)
        );
        // The realtime domain keeps its weight.
        assert_eq!(
            d.shares("modem").unwrap(),
            container::cgroups::plan::weight_to_shares(1000)
        );
    }
    assert_eq!(
        d.domain("common")["devices"],
        json!(["display", "input", "camera"])
    );
    assert_eq!(d.domain("trusted")["cpu_weight"], 10);
    d.ok(&["fg", "trusted"]);
    if has_vt() {
        assert_eq!(d.devs("trusted"), ["tty1", "vcs1"]);
        assert!(d.devs("common").is_empty());
    }
    // A realtime domain is never the foreground.
    let o = d.cv(&["fg", "modem"]);
    assert!(
        common::stderr(&o).contains("realtime"),
        "{}",
        common::stderr(&o)
    );

    // top and logs answer.
    let out = d.ok(&["top", "-n", "1", "--interval", "0.1"]);
    assert!(out.contains("modem") && out.contains("M "), "{out}");
    let out = d.ok(&["logs", "modem"]);
    assert!(out.contains("modem domain up"), "{out}");
    d.teardown_and_check(&pids);
}

/// A descriptor opened in the foreground does not outlive the switch: trusted holds the
/// input terminal (tty1) open and writes to it; once common is in the foreground, trusted's
/// descriptor is hung up (its writes fail), and common opens and writes the terminal.
#[test]
fn a_switch_revokes_the_terminal_the_old_foreground_held_open() {
    need_root!();
    if !has_vt() {
        eprintln!("skipped: no /dev/tty1");
        return;
    }
    let d = Daemon::new("rv");
    d.ok(&["up"]);
    let pids: Vec<i32> = ["trusted", "common", "modem"].map(|n| d.pid(n)).to_vec();
    let state = format!("/proc/{}/root/tmp/tty-state", d.pid("trusted"));
    // Opened once, written until a write fails.
    let o = d.exec(
        "trusted",
        "(exec 3<>/dev/tty1; printf . >&3 && echo open > /tmp/tty-state; \
          while printf . >&3 2>/dev/null; do sleep 0.05; done; echo revoked > /tmp/tty-state) \
          </dev/null >/dev/null 2>&1 &",
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let wait_for = |want: &str| {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let now = std::fs::read_to_string(&state).unwrap_or_default();
            if now.trim() == want {
                return;
            }
            assert!(Instant::now() < end, "tty state {now:?}, not {want:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("open");
    d.ok(&["fg", "common"]);
    wait_for("revoked");
    // The new foreground's own open works.
    let o = d.exec("common", "printf . > /dev/tty1 && echo wrote");
    assert_eq!(common::stdout(&o).trim(), "wrote", "{}", common::stderr(&o));
    // The same device from the port, opened by the daemon, as a program's descriptor 3; the
    // background domain is refused it in one line.
    let o = d.exec(
        "common",
        "/run/cellvisor/agent device input -- sh -c '[ -c /proc/self/fd/3 ] && printf \"x\" >&3 && echo $CELLVISOR_DEVICE_FD $CELLVISOR_DEVICE_NODE'",
    );
    assert_eq!(
        common::stdout(&o).trim(),
        "3 /dev/tty1",
        "{}",
        common::stderr(&o)
    );
    let o = d.exec("trusted", "/run/cellvisor/agent device input -- true");
    assert!(!o.status.success());
    assert_eq!(
        common::stderr(&o).trim(),
        "cellvisor-agent: domain trusted is not in front: input is the foreground's"
    );
    d.teardown_and_check(&pids);
}

/// Real devices of every exclusive kind, taken back from the old foreground's open
/// descriptors (scripts/revoke-test-host.sh, in the KVM test host booted with Debian's generic
/// kernel: a uinput keyboard, the bochs DRM card, a vivid camera; the card taken from the
/// port, the others opened from /dev): after `fg common` trusted's input descriptor fails with
/// ENODEV, its DRM file is no longer master and cannot take it back, its camera holder is
/// killed, and common opens all three (master, the keyboard's events, the camera); back to
/// trusted, its DRM file is master again; then nothing left. About 35 s a try.
#[test]
fn a_switch_revokes_real_input_drm_and_camera_devices_in_the_test_host() {
    need_root!();
    // The emulator keeps a core busy: not while a test measures the CPUs alone.
    let _cpus = common::cpus_shared();
    let generic = std::fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("vmlinuz-")
                && n.ends_with("-amd64")
                && !n.contains("-cloud-")
                && !n.contains("-rt-")
        });
    if !generic || !Path::new("/usr/bin/qemu-system-x86_64").exists() {
        eprintln!(
            "skipped: no generic kernel (linux-image-amd64) or QEMU: scripts/deps.sh installs them"
        );
        return;
    }
    let bin = Path::new(common::BIN).parent().unwrap();
    let o = common::in_test_host(
        "devices were not revoked in the test host",
        || {
            let mut c = Command::new("bash");
            c.arg(Path::new(WORKSPACE).join("scripts/revoke-test-host.sh"))
                .env("CELLVISOR_BIN", bin)
                .env("CELLVISOR_AGENT", agent())
                .env("KVM_TEST_HOST_TIMEOUT", "300");
            c
        },
        |o| o.status.success() && common::stdout(o).contains("REVOKE-OK"),
    );
    let out = common::stdout(&o);
    for want in [
        "trusted holds: held: input open | held: drm master | held: camera vivid",
        "common in the background opens: cellvisor-agent: /dev/input/event",
        ": No such file or directory (os error 2) cellvisor-agent: domain common is not in front: display is the foreground's",
        "after fg common, trusted's: lost: input: No such device (os error 19) | lost: drm: not master (SET_MASTER: Permission denied (os error 13)) | camera holder killed",
        "common opens: input open events: 4 (2 keys) drm master camera vivid",
        "taken from trusted: revoked (EVIOCREVOKE): 1 descriptor(s)",
        "taken from trusted: DRM master dropped: 1 descriptor(s)",
        "/dev/video0 taken from trusted: holders killed: pid [",
        "back to trusted: its held display back: drm master; it opens: input open events: 2",
        "a second round: 2 losses and 2 returns of trusted's display master",
        "REVOKE-OK: nothing left behind",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
}

/// A profile of many domains (a port each): the daemon raises its soft descriptor limit as
/// far as they need, and refuses in one line, leaving nothing, when the hard limit is too low.
#[test]
fn many_domains_get_the_descriptors_they_need() {
    need_root!();
    let t = tempfile::tempdir().unwrap();
    let profile = t.path().join("many.toml");
    std::fs::write(
        &profile,
        "name = \"many\"\nbase = \"rootfs\"\n[[domain]]\nname = \"app\"\nrole = \"common\"\n\
         command = [\"/bin/sleep\", \"9\"]\nreplicas = 1100\n",
    )
    .unwrap();
    let state = t.path().join("state");
    let sock = t.path().join("api.sock");
    let run = |limits: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{limits}; exec \"$0\" --profile \"$1\" --state \"$2\" --socket \"$3\" --prefix mfd"
            ))
            .arg(daemon_bin())
            .arg(&profile)
            .arg(&state)
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Soft 1024: raised to what 1100 ports need.
    let mut d = run("ulimit -Sn 1024");
    let end = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < end, "cellvisord did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Answering: past its start (and its signal handlers') before it is stopped.
    let answered = Command::new(common::BIN)
        .args(["ps", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(answered.status.success(), "{}", common::stderr(&answered));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.id())).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap();
    assert!(soft >= 1100 + 256, "{limits}");
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
    d.wait().unwrap();
    // Hard 512: one line, nothing made.
    let o = run("ulimit -n 512").wait_with_output().unwrap();
    assert!(!o.status.success());
    assert_eq!(
        common::stderr(&o).trim(),
        "cellvisord: the profile's 1100 domains and 0 channel rules need about 1356 descriptors; this process may open 512 (ulimit -Hn)"
    );
    assert!(!state.exists() && !sock.exists());
}

/// The profile's `[memory]`: with the device short (a pressure of 0% is always reached),
/// the background domain gets a soft memory limit of half what it uses, the foreground none;
/// a switch moves the cap with the background, and down forgets it.
#[test]
fn a_short_device_caps_the_backgrounds_memory() {
    need_root!();
    let soft = |d: &Daemon, name: &str| -> Option<u64> {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/memory/cellvisor/{}-{name}/memory.soft_limit_in_bytes",
            d.prefix
        ))
        .ok()
        .and_then(|s| s.trim().parse().ok())
    };
    if !Path::new("/sys/fs/cgroup/memory").exists()
        || std::fs::read_to_string("/proc/pressure/memory").is_err()
    {
        eprintln!("skipped: no cgroup v1 memory hierarchy, or no PSI");
        return;
    }
    let profile = format!(
        "{}\n[memory]\npressure = 0\nbackground_share = 0.5\n",
        domain::DEFAULT_PROFILE
    );
    let d = Daemon::with_profile("mem", &profile, &[]);
    d.ok(&["up"]);
    let pids: Vec<i32> = ["trusted", "common", "modem"].map(|n| d.pid(n)).to_vec();
    let unlimited = |v: Option<u64>| v.is_some_and(|v| v > 1 << 60);
    let wait_until = |what: &str, ok: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(Instant::now() < end, "{what}: {}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_until("common capped", &|| {
        soft(&d, "common").is_some_and(|v| v < 1 << 40)
    });
    let cap = soft(&d, "common").unwrap();
    assert!(cap >= 1 << 20 && cap % 4096 == 0, "{cap}");
    assert!(unlimited(soft(&d, "trusted")), "{:?}", soft(&d, "trusted"));
    // The realtime domain is never capped.
    assert!(unlimited(soft(&d, "modem")), "{:?}", soft(&d, "modem"));
    assert!(
        d.log()
            .contains("cellvisord: memory: pressure 0.0% (at least 0%): background capped: common"),
        "{}",
        d.log()
    );
    d.ok(&["fg", "common"]);
    assert!(unlimited(soft(&d, "common")), "{:?}", soft(&d, "common"));
    assert!(soft(&d, "trusted").is_some_and(|v| v < 1 << 40));
    d.teardown_and_check(&pids);
}

/// The `[memory]` policy and a microvm domain with a balloon: in the background while the
/// device is short its guest is asked to give back all but its cap (the balloon's target
/// set); in front, the balloon is emptied. (The idle test guest has no balloon driver: the
/// target is what shows; tests/vm.rs has Debian's driver follow one.)
#[test]
fn a_short_device_shrinks_a_background_microvm_through_its_balloon() {
    need_root!();
    if !Path::new("/dev/kvm").exists() || std::fs::read_to_string("/proc/pressure/memory").is_err()
    {
        eprintln!("skipped: no /dev/kvm or no PSI");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let idle = common::test_guest(t.path(), "idle");
    let profile = format!(
        r#"name = "vmmem"
base = "rootfs"

[foreground]
initial = "apps"

[memory]
pressure = 0
background_share = 0.5

[[domain]]
name = "apps"
role = "trusted"
command = ["/bin/sleep", "600"]

[[domain]]
name = "guest"
role = "common"
backend = "microvm"
kernel = {:?}
memory = "64M"
balloon = true
"#,
        idle.display().to_string()
    );
    let d = Daemon::with_profile("vmm", &profile, &[]);
    d.ok(&["up"]);
    let pids = vec![d.pid("apps"), d.pid("guest")];
    let target = |d: &Daemon| -> u64 {
        let (st, v) = d.api("GET", "/v1/domains/guest/balloon", None);
        assert_eq!(st, 200, "{v}");
        v["target_mib"].as_u64().unwrap()
    };
    let end = Instant::now() + Duration::from_secs(20);
    while target(&d) == 0 {
        assert!(Instant::now() < end, "never shrunk: {}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = target(&d);
    assert!(t > 0 && t < 64, "{t}");
    assert!(d.log().contains("background capped: guest"), "{}", d.log());
    d.ok(&["fg", "guest"]);
    assert_eq!(target(&d), 0, "in front, the balloon is emptied");
    d.teardown_and_check(&pids);
}

/// Background domains can be frozen instead: no CPU, memory kept, thawed when they come back.
#[test]
fn background_domains_can_be_frozen() {
    need_root!();
    let profile =
        domain::DEFAULT_PROFILE.replace("background = \"throttle\"", "background = \"freeze\"");
    let d = Daemon::with_profile("fz", &profile, &[]);
    d.ok(&["up"]);
    assert_eq!(d.domain("common")["status"], "frozen");
    assert_eq!(d.domain("modem")["status"], "running");
    d.ok(&["fg", "common"]);
    assert_eq!(d.domain("common")["status"], "running");
    assert_eq!(d.domain("trusted")["status"], "frozen");
    if has_vt() {
        assert_eq!(d.devs("common"), ["tty1", "vcs1", "vcsa1"]);
    }
    let pids: Vec<i32> = ["trusted", "common", "modem"].map(|n| d.pid(n)).to_vec();
    d.teardown_and_check(&pids);
}

/// SIGKILL in the middle of foreground switches and of bringing domains up: the next daemon
/// adopts every running domain, finishes the switch, and nothing leaks.
#[test]
fn killing_the_daemon_loses_no_domain_and_leaks_nothing() {
    need_root!();
    let mut d = Daemon::new("kl");
    d.ok(&["up"]);
    d.ok(&["channel", "open", "common", "trusted", "messages"]);
    d.wait_log("common", "reply:");
    let pids: Vec<i32> = ["trusted", "common", "modem"].map(|n| d.pid(n)).to_vec();
    for round in 0..6u64 {
        // Switch back and forth from another thread, and kill the daemon meanwhile.
        let sock = d.sock();
        let t = std::thread::spawn(move || {
            for i in 0..50 {
                let name = if i % 2 == 0 { "common" } else { "trusted" };
                let Ok(mut s) = UnixStream::connect(&sock) else {
                    return;
                };
                let body = json!({"name": name}).to_string();
                if write!(s, "PUT /v1/foreground HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).is_err() {
                    return;
                }
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        });
        std::thread::sleep(Duration::from_millis(5 + round * 7));
        d.signal(libc::SIGKILL);
        t.join().unwrap();
        d.start();
        let doms = d.domains();
        for (dom, pid) in doms.iter().zip(&pids) {
            assert_eq!(dom["status"], "running", "round {round}: {dom}");
            assert_eq!(dom["pid"], *pid, "round {round}: a domain was restarted");
        }
        let fg: Vec<&Value> = doms.iter().filter(|x| x["foreground"] == true).collect();
        assert_eq!(fg.len(), 1, "round {round}: {doms:?}");
        // The adopted state is consistent: the foreground holds the devices, the other not.
        if has_vt() {
            let (f, b) = if fg[0]["name"] == "common" {
                ("common", "trusted")
            } else {
                ("trusted", "common")
            };
            assert!(!d.devs(f).is_empty(), "round {round}");
            assert!(
                d.devs(b).is_empty(),
                "round {round}: {b} kept {:?}",
                d.devs(b)
            );
        }
        // The channel is the same: its keeper held it, the new daemon hands it out again.
        let (_, chans) = d.api("GET", "/v1/channels", None);
        assert_eq!(chans[0]["adopted"], false, "{chans}");
    }
    let o = d.exec(
        "common",
        "/run/cellvisor/agent send messages again --reply --wait 5",
    );
    assert!(
        common::stdout(&o).contains("reply: trusted got: again"),
        "{}{}",
        common::stdout(&o),
        common::stderr(&o)
    );
    // Killed while bringing a domain up: the half-made domain is removed or finished.
    d.ok(&["down", "common"]);
    let sock = d.sock();
    let t = std::thread::spawn(move || {
        if let Ok(mut s) = UnixStream::connect(&sock) {
            let _ = write!(s, "POST /v1/domains/common/up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    });
    std::thread::sleep(Duration::from_millis(8));
    d.signal(libc::SIGKILL);
    t.join().unwrap();
    d.start();
    let st = d.domain("common")["status"].clone();
    assert!(st == "running" || st == "stopped", "{st}");
    let mut all = pids.clone();
    if let Some(p) = d.domain("common")["pid"].as_i64() {
        all.push(p as i32);
    }
    d.teardown_and_check(&all);
}

/// The phone profile with a trusted domain that answers channel after channel (its agent
/// comes back when one closes) and a common domain that takes no channel by itself.
fn echoing_profile() -> String {
    let p = domain::DEFAULT_PROFILE
        .replace(
            "exec /run/cellvisor/agent echo messages --wait 600 --prefix 'trusted got: '",
            "while :; do /run/cellvisor/agent echo messages --wait 600 --prefix 'trusted got: '; sleep 0.05; done",
        )
        .replace(
            "/run/cellvisor/agent send messages 'hello from common' --reply --wait 600; ",
            "",
        );
    assert!(p.contains("while :") && !p.contains("hello from common"));
    p
}

/// What a daemon that came back must show, whatever step the last one died at: every domain
/// running or stopped (nothing half-made: a stopped domain has no container left), one
/// foreground at most and only a running one, devices only there, every channel between
/// running domains and still handed out. Returns the running domains' pids.
fn consistent(d: &Daemon, at: &str) -> Vec<i32> {
    let doms = d.domains();
    let oci: Vec<String> = std::fs::read_dir(d.state().join("oci"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut pids = Vec::new();
    let mut fg = Vec::new();
    for dom in &doms {
        let name = dom["name"].as_str().unwrap();
        let st = dom["status"].as_str().unwrap();
        let id = format!("{}-{name}", d.prefix);
        match st {
            "running" => {
                pids.push(dom["pid"].as_i64().unwrap() as i32);
                assert!(oci.contains(&id), "{at}: {name} runs without its container");
            }
            "stopped" => assert!(
                !oci.contains(&id),
                "{at}: stopped {name} left its container"
            ),
            _ => panic!("{at}: {dom}"),
        }
        if dom["foreground"] == true {
            assert_eq!(st, "running", "{at}: {dom}");
            fg.push(name);
        }
        if has_vt() && st == "running" && dom["role"] != "realtime" {
            let held = !d.devs(name).is_empty();
            assert_eq!(
                held,
                dom["foreground"] == true,
                "{at}: {name} {:?}",
                d.devs(name)
            );
        }
    }
    assert!(fg.len() <= 1, "{at}: {doms:?}");
    let (_, chans) = d.api("GET", "/v1/channels", None);
    for c in chans.as_array().unwrap() {
        assert_eq!(c["adopted"], false, "{at}: {c}");
        for side in ["from", "to"] {
            let dom = doms.iter().find(|x| x["name"] == c[side]).unwrap();
            assert_eq!(dom["status"], "running", "{at}: {c}");
        }
    }
    pids
}

/// common's agent sends over `messages` and trusted's answers.
fn messages_flow(d: &Daemon, at: &str) {
    let o = d.exec(
        "common",
        &format!("/run/cellvisor/agent send messages {at} --reply --wait 10"),
    );
    assert!(
        common::stdout(&o).contains(&format!("reply: trusted got: {at}")),
        "{at}: {}{}",
        common::stdout(&o),
        common::stderr(&o)
    );
}

/// SIGKILL injected at each step of up, down, a foreground switch, opening and closing a
/// channel (CELLVISOR_CRASH_AT, exactly there): each time the next daemon comes back
/// consistent, can finish the job, and at the end nothing is left.
#[test]
fn a_daemon_killed_at_any_step_comes_back_consistent() {
    need_root!();
    let mut d = Daemon::with_profile("ck", &echoing_profile(), &[]);
    d.ok(&["up"]);
    let mut all = consistent(&d, "up");
    let open = json!({"from": "common", "to": "trusted", "channel": "messages"});
    // (crash point, the request that reaches it, what to do first)
    type Prep = fn(&Daemon);
    let nothing: Prep = |_| {};
    let fg_trusted: Prep = |d| {
        d.ok(&["fg", "trusted"]);
    };
    let fg_common: Prep = |d| {
        d.ok(&["fg", "common"]);
    };
    let no_channel: Prep = |d| {
        let (_, chans) = d.api("GET", "/v1/channels", None);
        for c in chans.as_array().unwrap() {
            d.ok(&["channel", "close", &c["id"].to_string()]);
        }
    };
    let a_channel: Prep = |d| {
        let (_, chans) = d.api("GET", "/v1/channels", None);
        if chans.as_array().unwrap().is_empty() {
            d.ok(&["channel", "open", "common", "trusted", "messages"]);
        }
        messages_flow(d, "before");
    };
    let common_down: Prep = |d| {
        if d.domain("common")["status"] == "running" {
            d.ok(&["down", "common"]);
        }
    };
    let trusted_down: Prep = |d| {
        if d.domain("trusted")["status"] == "running" {
            d.ok(&["down", "trusted"]);
        }
    };
    let steps: [(&str, &str, String, Option<Value>, Prep); 12] = [
        (
            "fg:saved",
            "PUT",
            "/v1/foreground".into(),
            Some(json!({"name": "common"})),
            fg_trusted,
        ),
        (
            "fg:old-placed",
            "PUT",
            "/v1/foreground".into(),
            Some(json!({"name": "trusted"})),
            fg_common,
        ),
        (
            "channel-open:kept",
            "POST",
            "/v1/channels".into(),
            Some(open.clone()),
            no_channel,
        ),
        (
            "channel-open:saved",
            "POST",
            "/v1/channels".into(),
            Some(open.clone()),
            no_channel,
        ),
        (
            "channel-close:saved",
            "DELETE",
            String::new(),
            None,
            a_channel,
        ),
        (
            "down:channels",
            "POST",
            "/v1/domains/common/down".into(),
            None,
            a_channel,
        ),
        (
            "down:saved",
            "POST",
            "/v1/domains/common/down".into(),
            None,
            fg_common,
        ),
        (
            "down:stopped",
            "POST",
            "/v1/domains/common/down".into(),
            None,
            nothing,
        ),
        (
            "up:dir",
            "POST",
            "/v1/domains/common/up".into(),
            None,
            common_down,
        ),
        (
            "up:forked",
            "POST",
            "/v1/domains/common/up".into(),
            None,
            common_down,
        ),
        (
            "up:started",
            "POST",
            "/v1/domains/common/up".into(),
            None,
            common_down,
        ),
        // The profile's initial foreground, brought up with no foreground: it takes it.
        (
            "up:saved",
            "POST",
            "/v1/domains/trusted/up".into(),
            None,
            trusted_down,
        ),
    ];
    for (point, method, path, body, prep) in steps {
        for name in ["common", "trusted"] {
            if d.domain(name)["status"] != "running" {
                d.ok(&["up", name]);
            }
        }
        prep(&d);
        let path = if path.is_empty() {
            let (_, chans) = d.api("GET", "/v1/channels", None);
            format!("/v1/channels/{}", chans[0]["id"])
        } else {
            path
        };
        let target = body
            .as_ref()
            .and_then(|b| b["name"].as_str())
            .map(str::to_string);
        // Restarted armed, then killed at the point.
        d.signal(libc::SIGTERM);
        d.crash_at = Some(point);
        d.start();
        d.dies_on(method, &path, body);
        d.start();
        all.extend(consistent(&d, point));
        // The job can be finished from where it stopped.
        let (verb, _) = point.split_once(':').unwrap();
        let (_, chans) = d.api("GET", "/v1/channels", None);
        let chans = chans.as_array().unwrap().clone();
        match verb {
            "fg" => {
                let name = target.unwrap();
                d.ok(&["fg", &name]);
                assert_eq!(d.domain(&name)["foreground"], true, "{point}");
            }
            "channel-open" => {
                if chans.is_empty() {
                    d.ok(&["channel", "open", "common", "trusted", "messages"]);
                }
                messages_flow(&d, point);
            }
            "channel-close" => {
                // Saved as closed: closed for good, the keeper's copy let go.
                assert!(chans.is_empty(), "{point}: {chans:?}");
                let o = d.exec("common", "/run/cellvisor/agent send messages x --wait 0");
                assert!(!o.status.success(), "{point}: {}", common::stdout(&o));
            }
            "down" => {
                if d.domain("common")["status"] == "running" {
                    d.ok(&["down", "common"]);
                }
                assert_eq!(d.domain("common")["status"], "stopped", "{point}");
                assert!(chans.is_empty(), "{point}: {chans:?}");
            }
            _ => {
                let name = if point == "up:saved" {
                    "trusted"
                } else {
                    "common"
                };
                if d.domain(name)["status"] != "running" {
                    d.ok(&["up", name]);
                }
                if point == "up:saved" {
                    assert_eq!(d.domain(name)["foreground"], true, "{point}");
                }
                all.extend(consistent(&d, point));
            }
        }
    }
    d.teardown_and_check(&all);
}

/// A minimal JSON-schema check (the subset docs/api/openapi.json uses).
fn check(v: &Value, schema: &Value, spec: &Value, at: &str) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        return check(v, &spec["components"]["schemas"][name], spec, at);
    }
    if v.is_null() && schema["nullable"] == true {
        return;
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        assert!(
            alts.iter()
                .any(|a| std::panic::catch_unwind(|| check(v, a, spec, at)).is_ok()),
            "{at}: {v} matches no alternative"
        );
        return;
    }
    let ok = match schema["type"].as_str() {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    assert!(ok, "{at}: {v} is not a {}", schema["type"]);
    if let Some(e) = schema["enum"].as_array() {
        assert!(e.contains(v), "{at}: {v} not in {e:?}");
    }
    for r in schema["required"].as_array().into_iter().flatten() {
        assert!(
            v.get(r.as_str().unwrap()).is_some(),
            "{at}: {r} missing in {v}"
        );
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, s) in props {
            if let Some(x) = v.get(k) {
                check(x, s, spec, &format!("{at}.{k}"));
            }
        }
        for k in v.as_object().unwrap().keys() {
            assert!(props.contains_key(k), "{at}: {k} is not documented");
        }
    }
    if let Some(items) = schema.get("items") {
        for (i, x) in v.as_array().unwrap().iter().enumerate() {
            check(x, items, spec, &format!("{at}[{i}]"));
        }
    }
}

/// Every route the server has is in docs/api/openapi.json and the other way round, and what
/// the running server answers (successes and errors) has the documented status and shape.
#[test]
fn the_api_is_what_openapi_json_says() {
    need_root!();
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(WORKSPACE).join("docs/api/openapi.json")).unwrap(),
    )
    .unwrap();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            documented.push((m.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> = daemon::server::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    served.sort();
    assert_eq!(documented, served);

    let d = Daemon::new("oa");
    let mut seen = std::collections::BTreeSet::new();
    let mut call = |method: &str, tmpl: &str, path: &str, body: Option<Value>, want: u16| {
        let (status, v) = d.api(&method.to_uppercase(), path, body);
        assert_eq!(status, want, "{method} {path}: {v}");
        let op = &spec["paths"][tmpl][method];
        let r = &op["responses"][status.to_string()];
        assert!(
            r.is_object(),
            "{method} {tmpl}: status {status} is not documented"
        );
        if let Some(schema) = r["content"]["application/json"].get("schema") {
            check(&v, schema, &spec, &format!("{method} {path}"));
        } else {
            assert!(v.is_null(), "{method} {path}: undocumented body {v}");
        }
        seen.insert((method.to_string(), tmpl.to_string(), status));
    };
    call("get", "/v1/version", "/v1/version", None, 200);
    call("get", "/v1/domains", "/v1/domains", None, 200);
    call("get", "/v1/domains/{name}", "/v1/domains/modem", None, 200);
    call("get", "/v1/domains/{name}", "/v1/domains/ghost", None, 404);
    call(
        "post",
        "/v1/domains/{name}/up",
        "/v1/domains/modem/up",
        None,
        200,
    );
    call(
        "post",
        "/v1/domains/{name}/up",
        "/v1/domains/modem/up",
        None,
        409,
    );
    call(
        "post",
        "/v1/domains/{name}/up",
        "/v1/domains/ghost/up",
        None,
        404,
    );
    call("post", "/v1/up", "/v1/up", None, 200);
    call("get", "/v1/scheduler", "/v1/scheduler", None, 200);
    for (body, want) in [
        (json!({"policy": "balance"}), 200),
        (json!({"policy": "turbo"}), 400),
        (json!({"policy": "fixed"}), 200),
    ] {
        call("put", "/v1/scheduler", "/v1/scheduler", Some(body), want);
    }
    let place = "/v1/domains/{name}/cpus";
    call(
        "put",
        place,
        "/v1/domains/common/cpus",
        Some(json!({"cpus": "0"})),
        200,
    );
    call(
        "put",
        place,
        "/v1/domains/common/cpus",
        Some(json!({"cpus": "1"})),
        409,
    );
    call(
        "put",
        place,
        "/v1/domains/common/cpus",
        Some(json!({"cpus": "x"})),
        400,
    );
    // A range no kernel has: refused, not taken for 16 GiB of CPU numbers.
    call(
        "put",
        place,
        "/v1/domains/common/cpus",
        Some(json!({"cpus": "0-4294967295"})),
        400,
    );
    call(
        "put",
        place,
        "/v1/domains/modem/cpus",
        Some(json!({"cpus": "1"})),
        409,
    );
    call(
        "put",
        place,
        "/v1/domains/ghost/cpus",
        Some(json!({"cpus": "0"})),
        404,
    );
    call("get", "/v1/foreground", "/v1/foreground", None, 200);
    call(
        "put",
        "/v1/foreground",
        "/v1/foreground",
        Some(json!({"name": "common"})),
        200,
    );
    call(
        "put",
        "/v1/foreground",
        "/v1/foreground",
        Some(json!({"name": "modem"})),
        409,
    );
    call(
        "put",
        "/v1/foreground",
        "/v1/foreground",
        Some(json!({"nom": "x"})),
        400,
    );
    call(
        "put",
        "/v1/foreground",
        "/v1/foreground",
        Some(json!({"name": "ghost"})),
        404,
    );
    let ch = json!({"from": "common", "to": "trusted", "channel": "messages", "buffer": "16K"});
    call(
        "post",
        "/v1/channels",
        "/v1/channels",
        Some(ch.clone()),
        201,
    );
    call("post", "/v1/channels", "/v1/channels", Some(ch), 409);
    call(
        "post",
        "/v1/channels",
        "/v1/channels",
        Some(json!({"from": "common", "to": "modem", "channel": "telephony"})),
        403,
    );
    call(
        "post",
        "/v1/channels",
        "/v1/channels",
        Some(json!({"from": "common", "to": "trusted", "channel": "messages", "buffer": "1G"})),
        403,
    );
    call(
        "post",
        "/v1/channels",
        "/v1/channels",
        Some(json!({"from": "common", "to": "trusted", "channel": "messages", "buffer": "lots"})),
        400,
    );
    call(
        "post",
        "/v1/channels",
        "/v1/channels",
        Some(json!({"from": "ghost", "to": "trusted", "channel": "messages"})),
        404,
    );
    call("get", "/v1/channels", "/v1/channels", None, 200);
    call("get", "/v1/stats", "/v1/stats", None, 200);
    call(
        "get",
        "/v1/domains/{name}/logs",
        "/v1/domains/modem/logs?offset=3",
        None,
        200,
    );
    call(
        "get",
        "/v1/domains/{name}/logs",
        "/v1/domains/ghost/logs",
        None,
        404,
    );
    // A query that does not parse is refused as a body is: JSON, one line (schemathesis found
    // axum's plain text here).
    call(
        "get",
        "/v1/domains/{name}/logs",
        "/v1/domains/modem/logs?offset=-1",
        None,
        400,
    );
    call("post", "/v1/down", "/v1/down?purge=maybe", None, 400);
    call("delete", "/v1/channels/{id}", "/v1/channels/1", None, 204);
    call("delete", "/v1/channels/{id}", "/v1/channels/1", None, 404);
    call("delete", "/v1/channels/{id}", "/v1/channels/x", None, 400);
    call(
        "post",
        "/v1/domains/{name}/down",
        "/v1/domains/common/down",
        None,
        200,
    );
    // A balloon is a microvm domain's (its 200s: a_microvm_domain_runs_beside_a_container_domain).
    let balloon = "/v1/domains/{name}/balloon";
    call("get", balloon, "/v1/domains/common/balloon", None, 409);
    call("get", balloon, "/v1/domains/ghost/balloon", None, 404);
    for (body, want) in [
        (json!({"size_mib": 1}), 409),
        (json!({"size": 1}), 400),
        (json!({"size_mib": "1M"}), 400),
    ] {
        call(
            "put",
            balloon,
            "/v1/domains/common/balloon",
            Some(body),
            want,
        );
    }
    call(
        "post",
        "/v1/domains/{name}/down",
        "/v1/domains/common/down",
        None,
        409,
    );
    call(
        "post",
        "/v1/domains/{name}/down",
        "/v1/domains/ghost/down",
        None,
        404,
    );
    call(
        "put",
        place,
        "/v1/domains/common/cpus",
        Some(json!({"cpus": "0"})),
        409,
    );
    call("post", "/v1/down", "/v1/down?purge=true", None, 200);
    // Every documented operation was exercised.
    for (m, p) in &documented {
        assert!(
            seen.iter().any(|(sm, sp, _)| sm == m && sp == p),
            "{m} {p} untested"
        );
    }
    // Anything else is a documented-shape 404.
    let (s, v) = d.api("GET", "/v2/nothing", None);
    assert_eq!(s, 404);
    assert!(v["error"].is_string());
    d.teardown_and_check(&[]);
}

/// The API socket is root's only, or root's and one group's.
#[test]
fn only_root_or_the_group_may_use_the_socket() {
    need_root!();
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: setpriv missing");
        return;
    }
    let as_user = |d: &Daemon, groups: &str| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                &format!("--groups={groups}"),
                "--inh-caps=-all",
            ])
            .arg(common::BIN)
            .arg("ps")
            .env("CELLVISOR_SOCKET", d.sock())
            .output()
            .unwrap()
    };
    let d = Daemon::new("pm");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.sock()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The state directory (and the domains' ports in it) is root's alone too.
    let mode = std::fs::metadata(d.state()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // The socket's directory must be reachable for the other users.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = as_user(&d, "65534");
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("Permission denied"),
        "{}",
        common::stderr(&o)
    );
    assert!(d.ok(&["ps"]).contains("modem"));
    d.teardown_and_check(&[]);

    let d = Daemon::with_profile("pg", domain::DEFAULT_PROFILE, &["--group", "4242"]);
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = as_user(&d, "4242");
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(common::stdout(&o).contains("modem"));
    let o = as_user(&d, "65534");
    assert!(!o.status.success());
    d.teardown_and_check(&[]);
}

/// Bad input gets one line and leaves nothing: an unknown domain, a malformed profile, a
/// second daemon on the same state, a domain that cannot start.
#[test]
fn bad_input_gets_one_line_and_leaves_nothing() {
    need_root!();
    let d = Daemon::new("bd");
    for (args, want) in [
        (vec!["up", "ghost"], "no domain \"ghost\""),
        (vec!["fg", "ghost"], "no domain \"ghost\""),
        (vec!["fg", "common"], "domain common is not up"),
        (vec!["channel", "close", "7"], "no channel 7"),
        (
            vec![
                "channel", "open", "common", "trusted", "messages", "--buffer", "3K",
            ],
            "power of two",
        ),
        (vec!["logs", "ghost"], "no domain"),
    ] {
        let o = d.cv(&args);
        assert!(!o.status.success(), "{args:?}");
        let e = common::stderr(&o);
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        assert!(e.contains(want), "{args:?}: {e}");
    }
    // A second daemon on the same state directory.
    let st = d.command().status().unwrap();
    assert!(!st.success());
    assert!(d.log().contains("another cellvisord"), "{}", d.log());
    assert!(
        d.sock().exists(),
        "the second daemon removed the first one's socket"
    );
    // Another daemon (other state) on the same socket: refused, and it leaves nothing.
    let other = d.dir.path().join("other-state");
    let o = Command::new(daemon_bin())
        .arg("--profile")
        .arg(d.dir.path().join("profile.toml"))
        .arg("--state")
        .arg(&other)
        .arg("--socket")
        .arg(d.sock())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("in use by another server"),
        "{}",
        common::stderr(&o)
    );
    assert!(!other.exists(), "the refused daemon left its state behind");
    assert!(d.ok(&["ps"]).contains("modem"));
    d.teardown_and_check(&[]);

    // A malformed profile: every problem on its own line, no state, no socket.
    let t = tempfile::tempdir().unwrap();
    let bad = t.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\n[[domain]]\nname = \"a\"\nrole = \"boss\"\n",
    )
    .unwrap();
    let o = Command::new(daemon_bin())
        .arg("--profile")
        .arg(&bad)
        .arg("--state")
        .arg(t.path().join("state"))
        .arg("--socket")
        .arg(t.path().join("s.sock"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("bad.toml:4:"),
        "{}",
        common::stderr(&o)
    );
    assert!(!t.path().join("state").exists() && !t.path().join("s.sock").exists());

    // A domain whose program is missing: up fails in one line, and nothing of it remains.
    let profile = domain::DEFAULT_PROFILE.replace(
        "command = [\"/bin/sh\", \"-c\", \"echo modem domain up; exec sleep 1000000\"]",
        "command = [\"/no/such/program\"]",
    );
    let d = Daemon::with_profile("bm", &profile, &[]);
    let o = d.cv(&["up", "modem"]);
    assert!(!o.status.success());
    let e = common::stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("modem") && e.contains("/no/such/program"), "{e}");
    assert_eq!(d.domain("modem")["status"], "stopped");
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(&*d.state().to_string_lossy()),
        "the failed domain's layer is mounted"
    );
    d.teardown_and_check(&[]);
}

/// Inside a domain: only its own port, its own channels, its own processes.
#[test]
fn a_domain_reaches_only_its_own_channels_and_processes() {
    need_root!();
    let d = Daemon::new("is");
    d.ok(&["up"]);
    d.ok(&["channel", "open", "trusted", "modem", "telephony"]);
    let exec = |dom: &str, script: &str| d.exec(dom, script);
    // common is not an end of "telephony": the port refuses it, whatever peer it names.
    for args in ["", "--peer modem", "--peer trusted"] {
        let o = exec(
            "common",
            &format!("/run/cellvisor/agent send telephony x --wait 0 {args}"),
        );
        assert!(!o.status.success());
        assert!(
            common::stderr(&o).contains("no open channel \"telephony\" for domain common"),
            "{}",
            common::stderr(&o)
        );
    }
    // Its port lists only its own channels; modem's lists telephony.
    let o = exec("common", "/run/cellvisor/agent ls");
    assert!(
        common::stdout(&o).contains("\"channels\":[]"),
        "{}",
        common::stdout(&o)
    );
    let o = exec("modem", "/run/cellvisor/agent ls");
    assert!(
        common::stdout(&o).contains("telephony"),
        "{}",
        common::stdout(&o)
    );
    // A domain sees one port (its own), its own processes only, and no other's shared memory.
    let o = exec(
        "common",
        "ls /run/cellvisor; ls /dev/shm | wc -l; ps -o args",
    );
    let out = common::stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["agent", "port", "0"], "{out}");
    // Its own agent (waiting for "messages"), none of trusted's or modem's programs.
    assert!(out.contains("agent send messages"), "{out}");
    assert!(
        !out.contains("agent echo") && !lines.contains(&"sleep 1000000"),
        "{out}"
    );
    let o = exec(
        "common",
        &format!("ls /proc/{} 2>&1 | head -1", d.pid("trusted")),
    );
    assert!(
        !common::stdout(&o).contains("cmdline"),
        "{}",
        common::stdout(&o)
    );
    // Garbage on the port gets an error line; the daemon goes on.
    let mut s = UnixStream::connect(d.state().join("run/common/port")).unwrap();
    s.write_all(b"{\"op\":42}\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("error"), "{answer}");
    assert!(d.ok(&["ps"]).contains("running"));
    let pids: Vec<i32> = ["trusted", "common", "modem"].map(|n| d.pid(n)).to_vec();
    d.teardown_and_check(&pids);
}

/// The same foreground switching where the domains' cgroups are v2: the device filter (eBPF)
/// is replaced on each switch.
#[test]
fn foreground_devices_move_on_cgroup_v2() {
    need_root!();
    if !Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
        || !Path::new("/dev/kmsg").exists()
    {
        eprintln!("skipped: no cgroup2 hierarchy or /dev/kmsg");
        return;
    }
    // No limits: on this hybrid machine the v2 tree has no memory, cpu or pids controller.
    let profile = r#"
name = "v2"
base = "rootfs"
[foreground]
initial = "a"
background = "freeze"
[device_nodes]
display = "/dev/kmsg"
[[domain]]
name = "a"
role = "trusted"
command = ["/bin/sh", "-c", "exec sleep 1000000"]
devices.exclusive = ["display"]
[[domain]]
name = "b"
role = "common"
command = ["/bin/sh", "-c", "exec sleep 1000000"]
devices.exclusive = ["display"]
"#;
    let mut d = Daemon::with_profile("v2", profile, &[]);
    d.signal(libc::SIGTERM);
    d.v2 = true;
    d.start();
    d.ok(&["up"]);
    // Can the domain open /dev/kmsg?
    let opens =
        |dom: &str| common::stdout(&d.exec(dom, "exec 3>/dev/kmsg && echo open")).contains("open");
    let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", d.pid("a"))).unwrap();
    // In a v2 cgroup, and in no v1 one but the roots.
    assert!(
        cg.lines().any(|l| l.starts_with("0::/cellvisor/")) && cg.contains(":devices:/\n"),
        "not a v2 domain: {cg}"
    );
    assert!(opens("a"), "the foreground domain cannot open its device");
    let node = |dom: &str| Path::new(&format!("/proc/{}/root/dev/kmsg", d.pid(dom))).exists();
    let filters = |dom: &str| {
        container::cgroups::devices::attached_ids(Path::new(&format!(
            "/sys/fs/cgroup/unified/cellvisor/{}-{dom}",
            d.prefix
        )))
        .unwrap()
        .len()
    };
    assert!(node("a") && !node("b"));
    d.ok(&["fg", "b"]);
    assert!(opens("b"));
    assert_eq!(d.domain("a")["status"], "frozen");
    // a lost the node, and its filter was replaced (one program, not two stacked).
    assert!(!node("a") && node("b"));
    assert_eq!(filters("a"), 1);
    assert_eq!(filters("b"), 1);
    d.ok(&["fg", "a"]);
    assert!(opens("a"));
    // b is frozen now; thawed for a moment, it may not open the device, and has no node.
    d.ok(&["down", "b"]);
    d.ok(&["up", "b"]);
    assert_eq!(d.domain("b")["status"], "frozen");
    let pids: Vec<i32> = ["a", "b"].map(|n| d.pid(n)).to_vec();
    d.teardown_and_check(&pids);
}

/// The channel between a microvm domain and a container domain. The guest's side is a vsock
/// stream to host port 1024, which the domain's VMM connects to `vsock_1024` in the domain's
/// run directory, where the daemon listens and carries the channel over the stream. The
/// idle guest has no vsock driver, so this drives that socket as the VMM would for the
/// guest's agent (`cellvisor-agent --port PATH`); the guest side itself runs in the KVM
/// test host (tests/vm.rs).
fn microvm_channel(d: &Daemon, vmm: i32) {
    let run = d.state().join("run/guest");
    let port = run.join("vsock_1024");
    let cmdline = std::fs::read_to_string(format!("/proc/{vmm}/cmdline")).unwrap();
    let args: Vec<&str> = cmdline.split('\0').collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--vsock", "3,uds=/run/cellvisor/vsock"]),
        "{args:?}"
    );
    assert!(run.join("vsock").exists(), "the VMM has no vsock socket");
    let guest = |args: &[&str]| {
        let o = Command::new(agent())
            .args(args)
            .arg("--port")
            .arg(&port)
            .output()
            .unwrap();
        (o.status.success(), common::stdout(&o) + &common::stderr(&o))
    };
    // Not open yet: the daemon's answer after the wait; then opened under the policy.
    let (ok, out) = guest(&["send", "msg", "x", "--wait", "0"]);
    assert!(!ok && out.contains("no open channel"), "{out}");
    let o = d.cv(&["channel", "open", "guest", "apps", "other"]);
    assert!(!o.status.success(), "a channel the policy does not allow");
    assert!(
        common::stderr(&o).contains("policy"),
        "{}",
        common::stderr(&o)
    );
    d.ok(&["channel", "open", "guest", "apps", "msg"]);
    let (ok, out) = guest(&["send", "msg", "hello", "world", "--reply"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("reply: apps got: hello") && out.contains("reply: apps got: world"),
        "{out}"
    );
    d.wait_log("apps", "got: world");
    let (ok, out) = guest(&["ls"]);
    assert!(ok && out.contains("\"msg\""), "{out}");
    // Too big for the 4 KiB buffer: refused by the agent, and a frame that claims it is
    // refused by the daemon, which drops that stream and keeps the channel.
    let (ok, out) = guest(&["send", "msg", &"x".repeat(5000)]);
    assert!(!ok && out.contains("does not fit"), "{out}");
    let mut s = UnixStream::connect(&port).unwrap();
    s.write_all(b"{\"op\":\"get\",\"channel\":\"msg\"}\n")
        .unwrap();
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("\"stream\":true"), "{answer}");
    let (ok, out) = guest(&["send", "msg", "again", "--reply"]);
    assert!(ok && out.contains("reply: apps got: again"), "{out}");
    // Garbage instead of a request: one error line.
    let mut s = UnixStream::connect(&port).unwrap();
    s.write_all(b"garbage\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("bad request"), "{answer}");
    // Closing the channel ends the guest's stream.
    let mut recv = Command::new(agent())
        .args(["recv", "msg", "--port"])
        .arg(&port)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (_, chans) = d.api("GET", "/v1/channels", None);
    let id = chans[0]["id"].to_string();
    d.ok(&["channel", "close", &id]);
    let end = Instant::now() + Duration::from_secs(10);
    while recv.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < end,
            "the guest's stream outlived its channel"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(recv.wait().unwrap().success());
}

/// A microvm domain beside a container domain: its VMM runs jailed in a container domain
/// (namespaces, cgroups, only /dev/kvm of the host's devices), boots the idle test guest,
/// is frozen in the background with its guest paused and thawed in the foreground, and
/// leaves nothing behind. Profile errors for microvm domains are one line each.
#[test]
fn a_microvm_domain_runs_beside_a_container_domain() {
    need_root!();
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: no /dev/kvm");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let idle = common::test_guest(t.path(), "idle");
    let profile = format!(
        r#"name = "vmtest"
base = "rootfs"

[foreground]
initial = "apps"
background = "freeze"

[[domain]]
name = "apps"
role = "trusted"
command = ["/bin/sh", "-c", "echo apps up; exec /run/cellvisor/agent echo msg --wait 600 --prefix 'apps got: '"]

[[domain]]
name = "guest"
role = "common"
backend = "microvm"
kernel = {:?}
memory = "32M"
vcpus = 2
balloon = true

[[allow]]
from = "guest"
to = "apps"
channel = "msg"
buffer = "4K"
"#,
        idle.display().to_string()
    );
    let d = Daemon::with_profile("vm", &profile, &[]);
    d.ok(&["up"]);
    let vmm = d.pid("guest");
    let comm = std::fs::read_to_string(format!("/proc/{vmm}/cmdline")).unwrap();
    assert!(
        comm.contains("vm\0run\0"),
        "the domain's process is not the VMM: {comm:?}"
    );
    // Jailed: its own mount and pid namespaces; /dev/kvm is the only host device it sees
    // besides the standard ones.
    for ns in ["mnt", "pid"] {
        let own = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let its = std::fs::read_link(format!("/proc/{vmm}/ns/{ns}")).unwrap();
        assert_ne!(own, its, "{ns} namespace shared with the host");
    }
    assert!(Path::new(&format!("/proc/{vmm}/root/dev/kvm")).exists());
    // Background: frozen from the start (the VMM and its vCPU threads stopped); foreground:
    // running, and the guest's console line reaches the domain's log.
    assert_eq!(d.domain("guest")["status"], "frozen");
    d.ok(&["fg", "guest"]);
    assert_eq!(d.domain("guest")["status"], "running");
    assert_eq!(d.domain("apps")["status"], "frozen");
    let end = Instant::now() + Duration::from_secs(10);
    let mut log = String::new();
    while !log.contains("idle guest: up") && Instant::now() < end {
        log = d.ok(&["logs", "guest"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(log.contains("idle guest: up"), "{log}");
    // Its balloon through the API and `cellvisor balloon` (the idle guest has no driver:
    // the figures are the VMM's own; tests/vm.rs drives Debian's driver in the test host).
    let b: Value = serde_json::from_str(&d.ok(&["balloon", "guest", "--json"])).unwrap();
    assert_eq!(
        (b["guest_mib"].as_u64(), b["target_mib"].as_u64()),
        (Some(32), Some(0)),
        "{b}"
    );
    let out = d.ok(&["balloon", "guest", "--size", "16M"]);
    assert!(
        out.contains("guest: balloon 16 MiB of the guest's 32 MiB"),
        "{out}"
    );
    for (method, path, body, status, why) in [
        (
            "PUT",
            "/v1/domains/guest/balloon",
            Some(serde_json::json!({"size_mib": 64})),
            400,
            "64 MiB is more than the guest's 32 MiB",
        ),
        (
            "PUT",
            "/v1/domains/guest/balloon",
            Some(serde_json::json!({"size_mib": -1})),
            400,
            "size_mib",
        ),
        (
            "GET",
            "/v1/domains/apps/balloon",
            None,
            409,
            "domain apps has no balloon",
        ),
        ("GET", "/v1/domains/nope/balloon", None, 404, "nope"),
    ] {
        let (st, v) = d.api(method, path, body);
        assert_eq!(st, status, "{method} {path}: {v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains(why),
            "{method} {path}: {v}"
        );
    }
    // The scheduler's actuator for a microVM is its VMM's cgroup: every thread goes along.
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    if online.trim() == "0-1" {
        d.ok(&["sched", "place", "guest", "1"]);
        for t in std::fs::read_dir(format!("/proc/{vmm}/task"))
            .unwrap()
            .flatten()
        {
            let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            assert!(
                st.is_empty() || st.contains("Cpus_allowed_list:\t1\n"),
                "{st}"
            );
        }
    }
    d.ok(&["fg", "apps"]);
    assert_eq!(d.domain("guest")["status"], "frozen");
    assert_eq!(d.pid("guest"), vmm, "the VMM was restarted");
    let (st, v) = d.api("GET", "/v1/domains/guest/balloon", None);
    assert_eq!(st, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("frozen in the background"),
        "{v}"
    );
    let control = d.state().join("run/guest/control");
    assert!(
        control.exists(),
        "no control socket at {}",
        control.display()
    );
    let pids = vec![vmm, d.pid("apps")];
    microvm_channel(&d, vmm);
    d.teardown_and_check(&pids);
    assert!(!control.exists(), "the control socket outlived its VMM");

    // A microvm domain with a disk: the tiny guest reads the shared base and writes its
    // private copy-on-write layer, then resets (its VMM exits, the domain stops). The base
    // image is unchanged.
    let tiny = common::test_guest(t.path(), "tiny");
    let base = t.path().join("base.img");
    let mut bytes = b"shared base image\n".to_vec();
    bytes.resize(1 << 20, 0);
    std::fs::write(&base, &bytes).unwrap();
    let profile = format!(
        "name = \"disk\"\nbase = \"rootfs\"\n[[domain]]\nname = \"disky\"\nrole = \"common\"\nbackend = \"microvm\"\nkernel = {:?}\nmemory = \"32M\"\ndisks = [{:?}]\n",
        tiny.display().to_string(),
        format!("{},cow", base.display())
    );
    let d = Daemon::with_profile("vmd", &profile, &[]);
    d.ok(&["up"]);
    let end = Instant::now() + Duration::from_secs(10);
    let mut log = String::new();
    while !log.contains("tiny guest: done") && Instant::now() < end {
        log = d.ok(&["logs", "disky"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    for want in [
        "virtio-blk sector 0: shared base image",
        "virtio-blk sector 1: written by the tiny guest",
        "hostile head index: device failed, as it must",
    ] {
        assert!(log.contains(want), "{want:?} not in {log}");
    }
    assert!(
        std::fs::read(&base).unwrap() == bytes,
        "the shared base was written"
    );
    d.teardown_and_check(&[]);

    // Profile errors.
    let bad = |extra: &str| {
        let p = t.path().join("bad.toml");
        std::fs::write(
            &p,
            format!("name = \"b\"\nbase = \"/\"\n[[domain]]\nname = \"g\"\nrole = \"common\"\nbackend = \"microvm\"\n{extra}"),
        )
        .unwrap();
        let o = Command::new(common::BIN)
            .args(["profile", "check"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(!o.status.success());
        common::stderr(&o)
    };
    assert!(bad("").contains("needs a kernel"));
    assert!(bad("kernel = \"k\"\ncommand = [\"sh\"]\n").contains("no command"));
    assert!(bad("kernel = \"k\"\nvcpus = 64\n").contains("outside 1..32"));
    assert!(
        bad("kernel = \"k\"\ndevices.exclusive = [\"display\"]\n").contains("exclusive devices")
    );
}

/// The phone profile's realtime domain under the daemon: its processes run SCHED_FIFO 50 on
/// core 1 with its budget (100 ms per second) in its cgroup; the other domains and the
/// daemon keep off its core; the budget is given back when it goes.
#[test]
fn the_realtime_domain_runs_in_real_time_on_its_own_core() {
    need_root!();
    let parent = Path::new("/sys/fs/cgroup/cpu/cellvisor");
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    if common::rt_runtime(Path::new("/sys/fs/cgroup/cpu")).is_none() || online.trim() != "0-1" {
        eprintln!("skipped: needs cgroup v1 RT group scheduling and CPUs 0-1");
        return;
    }
    let d = Daemon::new("rt");
    d.ok(&["up"]);
    let modem = d.pid("modem");
    let stat = std::fs::read_to_string(format!("/proc/{modem}/stat")).unwrap();
    // SCHED_FIFO (1) at 50.
    assert_eq!(common::sched_of(&stat), (1, 50), "{stat}");
    let cg = parent.join(format!("{}-modem", d.prefix));
    assert_eq!(common::rt_runtime(&cg), Some(100_000));
    let cpus = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("Cpus_allowed_list:")
                    .map(|v| v.trim().to_string())
            })
            .unwrap()
    };
    assert_eq!(cpus(modem), "1");
    for n in ["trusted", "common"] {
        assert_eq!(cpus(d.pid(n)), "0", "{n}");
    }
    // Its core is its own by the kernel's rule too (v1: an exclusive cpuset, not balanced),
    // unless another manager's cpuset beside /cellvisor shares CPUs with it (then by the
    // placement above only).
    let flag = |p: &Path, f: &str| {
        std::fs::read_to_string(p.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    let cpuset = Path::new("/sys/fs/cgroup/cpuset/cellvisor");
    let cs = cpuset.join(format!("{}-modem", d.prefix));
    let beside = common::cpusets_beside_cellvisor();
    if beside.is_empty() {
        assert_eq!(flag(&cs, "cpuset.cpu_exclusive"), "1");
        assert_eq!(flag(&cs, "cpuset.sched_load_balance"), "0");
    } else {
        eprintln!("{beside:?} share CPUs beside /cellvisor: the modem's core is not exclusive");
        assert_eq!(flag(&cs, "cpuset.cpu_exclusive"), "0");
    }
    let daemon = d.child.as_ref().unwrap().id() as i32;
    assert_eq!(cpus(daemon), "0", "the daemon runs on the realtime core");
    let out = d.ok(&["profile", "check"]);
    assert!(out.contains("realtime: SCHED_FIFO priority 50"), "{out}");
    let pids: Vec<i32> = ["trusted", "common", "modem"].map(|n| d.pid(n)).to_vec();
    // (Giving the budget back is tested in oci.rs, under a parent of its own: here other
    // tests' realtime domains come and go under the same parent.)
    d.teardown_and_check(&pids);
    // The core is given back: /cellvisor is an ordinary cpuset again.
    assert_eq!(flag(cpuset, "cpuset.cpu_exclusive"), "0");
}

/// A realtime microVM domain: its vCPU thread runs SCHED_FIFO on the core the domain owns,
/// the VMM's other threads and the other domains on the rest; its jail holds the budget;
/// the guest runs.
#[test]
fn a_realtime_microvm_runs_its_vcpu_in_real_time_on_its_core() {
    need_root!();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    if !Path::new("/dev/kvm").exists()
        || common::rt_runtime(Path::new("/sys/fs/cgroup/cpu")).is_none()
        || online.trim() != "0-1"
    {
        eprintln!("skipped: needs /dev/kvm, cgroup v1 RT group scheduling and CPUs 0-1");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let idle = common::test_guest(t.path(), "idle");
    let profile = format!(
        r#"name = "rtvm"
base = "rootfs"

[[domain]]
name = "apps"
role = "trusted"
command = ["/bin/sh", "-c", "exec sleep 1000000"]

[[domain]]
name = "baseband"
role = "realtime"
backend = "microvm"
kernel = {:?}
memory = "32M"
cpus = "1"
realtime = {{ policy = "fifo", priority = 40, budget = "100ms/1s" }}
"#,
        idle.display().to_string()
    );
    let d = Daemon::with_profile("rtvm", &profile, &[]);
    d.ok(&["up"]);
    let vmm = d.pid("baseband");
    // The guest runs on its real-time vCPU.
    let end = Instant::now() + Duration::from_secs(10);
    let mut log = String::new();
    while !log.contains("idle guest: up") && Instant::now() < end {
        log = d.ok(&["logs", "baseband"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(log.contains("idle guest: up"), "{log}");
    let status = |tid: &str, key: &str| {
        std::fs::read_to_string(format!("/proc/{vmm}/task/{tid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap()
    };
    // (policy, priority) of a thread.
    let sched = |tid: &str| {
        common::sched_of(&std::fs::read_to_string(format!("/proc/{vmm}/task/{tid}/stat")).unwrap())
    };
    let tids: Vec<String> = std::fs::read_dir(format!("/proc/{vmm}/task"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let vcpu: Vec<&String> = tids
        .iter()
        .filter(|t| status(t, "Name:") == "vcpu0")
        .collect();
    assert_eq!(vcpu.len(), 1, "threads {tids:?}");
    assert_eq!(sched(vcpu[0]), (1, 40), "SCHED_FIFO 40");
    assert_eq!(status(vcpu[0], "Cpus_allowed_list:"), "1");
    for t in tids.iter().filter(|t| *t != vcpu[0]) {
        assert_eq!(status(t, "Cpus_allowed_list:"), "0", "VMM thread {t}");
        assert_eq!(sched(t).0, 0, "VMM thread {t} is not SCHED_OTHER");
    }
    let jail = Path::new("/sys/fs/cgroup/cpu/cellvisor").join(format!("{}-baseband", d.prefix));
    assert_eq!(common::rt_runtime(&jail), Some(100_000));
    let apps = d.pid("apps");
    let cpus = std::fs::read_to_string(format!("/proc/{apps}/status")).unwrap();
    assert!(cpus.contains("Cpus_allowed_list:\t0\n"), "{cpus}");
    d.teardown_and_check(&[apps, vmm]);
}

/// The scheduler through `cellvisor sched`: two CPU-bound domains put on one core are moved
/// apart by `balance`; a daemon killed and restarted keeps where they are and the policy;
/// `fixed` puts them back on their profile's cores; bad requests get one line and change
/// nothing; nothing is left after.
#[test]
fn the_scheduler_moves_domains_apart_and_keeps_them_over_a_restart() {
    need_root!();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    if online.trim() != "0-1" || !Path::new("/sys/fs/cgroup/cpuset/cpuset.cpus").exists() {
        eprintln!("skipped: needs CPUs 0-1 and a cgroup v1 cpuset");
        return;
    }
    // The CPUs alone: another test's load on the idle core would hide the imbalance.
    let _cpus = common::cpus_lock();
    let hog = "command = [\"/run/cellvisor/agent\", \"load\", \"cpu\", \"--threads\", \"1\"]";
    let profile = format!(
        "name = \"sched\"\nbase = \"rootfs\"\n[scheduler]\npolicy = \"fixed\"\nperiod = \"500ms\"\n\
         [[domain]]\nname = \"a\"\nrole = \"common\"\n{hog}\n\
         [[domain]]\nname = \"b\"\nrole = \"common\"\n{hog}\n"
    );
    let mut d = Daemon::with_profile("sc", &profile, &[]);
    d.ok(&["up"]);
    let pids = [d.pid("a"), d.pid("b")];
    let prefix = d.prefix.clone();
    let cpuset = |n: &str| {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/cpuset/cellvisor/{prefix}-{n}/cpuset.cpus"
        ))
        .unwrap()
        .trim()
        .to_string()
    };
    assert_eq!((cpuset("a"), cpuset("b")), ("0-1".into(), "0-1".into()));
    d.ok(&["sched", "place", "a", "0"]);
    let out = d.ok(&["sched", "place", "b", "0"]);
    assert!(out.contains("b 0-1 -> 0: placed by request"), "{out}");
    assert_eq!((cpuset("a"), cpuset("b")), ("0".into(), "0".into()));
    // Under fixed they stay crowded.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!((cpuset("a"), cpuset("b")), ("0".into(), "0".into()));
    let out = d.ok(&["sched", "balance"]);
    assert!(out.starts_with("policy balance"), "{out}");
    let end = Instant::now() + Duration::from_secs(30);
    while cpuset("a") == cpuset("b") {
        assert!(Instant::now() < end, "not apart: {}", d.ok(&["sched"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (a, b) = (cpuset("a"), cpuset("b"));
    let mut apart = [a.clone(), b.clone()];
    apart.sort();
    assert_eq!(apart, ["0".to_string(), "1".to_string()]);
    let v: Value = serde_json::from_str(&d.ok(&["sched", "--json"])).unwrap();
    let mv = v["moves"].as_array().unwrap().last().unwrap().clone();
    assert!(
        mv["reason"]
            .as_str()
            .unwrap()
            .starts_with("balance: cpu 0 at"),
        "{mv}"
    );
    // The cpuset is the kernel's word for it: the moved domain's process runs there.
    let moved = if a == "1" { pids[0] } else { pids[1] };
    let allowed = std::fs::read_to_string(format!("/proc/{moved}/status")).unwrap();
    assert!(allowed.contains("Cpus_allowed_list:\t1\n"), "{allowed}");
    // Killed and started again: the same placement, the same policy.
    d.signal(libc::SIGKILL);
    d.start();
    assert_eq!((cpuset("a"), cpuset("b")), (a.clone(), b.clone()));
    let v = d.api("GET", "/v1/scheduler", None).1;
    assert_eq!(v["policy"], "balance", "{v}");
    let placed: Vec<(String, String)> = v["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap().into(),
                x["cpus"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(placed, [("a".into(), a.clone()), ("b".into(), b.clone())]);
    // Bad requests: one line each, nothing changed.
    for (args, says) in [
        (
            &["sched", "turbo"][..],
            "policy \"turbo\" is not one of balance, power, fixed",
        ),
        (
            &["sched", "place", "a", "5"],
            "domain a may use cpus 0-1 only: 5 is not among them",
        ),
        (
            &["sched", "place", "a", "0-"],
            "cpus \"0-\" is not a list like",
        ),
        (&["sched", "place", "ghost", "0"], "no domain \"ghost\""),
        (
            &["sched", "place", "a"],
            "usage: cellvisor sched place NAME CPUS",
        ),
    ] {
        let o = d.cv(args);
        assert!(!o.status.success(), "{args:?}");
        let err = common::stderr(&o);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert_eq!((cpuset("a"), cpuset("b")), (a, b));
    // fixed: back on the profile's cores.
    d.ok(&["sched", "fixed"]);
    assert_eq!((cpuset("a"), cpuset("b")), ("0-1".into(), "0-1".into()));
    let top = d.ok(&["top", "-n", "1", "--interval", "0.6"]);
    assert!(top.contains("cpu 0") && top.contains("cpu 1"), "{top}");
    d.teardown_and_check(&pids);
}
