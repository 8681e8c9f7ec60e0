//! MicroVMs end to end (root, /dev/kvm): the tiny test guest on this machine's own KVM, bad
//! input, a guest that faults, and the stock Debian kernel booted to userspace by our VMM
//! inside the emulated KVM test host (scripts/kvm-test-host.sh).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::WORKSPACE;

fn can_run_vms() -> bool {
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: needs root and /dev/kvm");
        return false;
    }
    true
}

fn vm(args: &[&str]) -> Output {
    Command::new(common::BIN)
        .arg("vm")
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Assemble a guest (GNU as, 64-bit) into an ELF kernel.
fn assemble(dir: &Path, name: &str, src: &str) -> PathBuf {
    let s = dir.join(format!("{name}.S"));
    std::fs::write(&s, src).unwrap();
    let o = dir.join(format!("{name}.o"));
    let elf = dir.join(format!("{name}.elf"));
    assert!(Command::new("as")
        .arg("--64")
        .arg("-o")
        .arg(&o)
        .arg(&s)
        .status()
        .unwrap()
        .success());
    assert!(Command::new("ld")
        .args([
            "-static",
            "-nostdlib",
            "-Ttext=0x200000",
            "-e",
            "_start",
            "-o"
        ])
        .arg(&elf)
        .arg(&o)
        .status()
        .unwrap()
        .success());
    elf
}

fn tiny(dir: &Path) -> PathBuf {
    common::test_guest(dir, "tiny")
}

/// The project's tiny guest on this machine's /dev/kvm: it reaches ring 3, prints on the
/// serial port, makes port and MMIO exits, and resets the machine, which ends the VMM with 0.
#[test]
fn the_tiny_guest_runs_on_this_machines_kvm() {
    if !can_run_vms() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let k = tiny(t.path());
    let console = t.path().join("console.log");
    let o = vm(&[
        "--kernel",
        k.to_str().unwrap(),
        "--mem",
        "32M",
        "--console",
        console.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = std::fs::read_to_string(&console).unwrap();
    for line in [
        "tiny guest: up in ring 3",
        "tiny guest: exit round trip ",
        "tiny guest: mmio read ok",
        "tiny guest: done, resetting",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // The same on the terminal, and with more vCPUs (the others wait for a start IPI).
    let o = vm(&[
        "--kernel",
        k.to_str().unwrap(),
        "--mem",
        "32M",
        "--vcpus",
        "4",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(
        common::stdout(&o).contains("tiny guest: done"),
        "{}",
        common::stdout(&o)
    );
}

/// A raw image with "cellvisor disk 0" as its first line, 1 MiB.
fn disk_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let p = dir.join("base.img");
    let mut bytes = b"cellvisor disk 0\n".to_vec();
    bytes.resize(1 << 20, 0);
    std::fs::write(&p, &bytes).unwrap();
    (p, bytes)
}

fn sector1(bytes: &[u8]) -> &[u8] {
    &bytes[512..512 + 26]
}

/// virtio-blk driven by the tiny guest through a virtqueue on this machine's KVM: it reads
/// sector 0, writes sector 1, and four hostile requests each fail the device (not the VMM).
/// Copy-on-write leaves the shared base as it was; a kept layer holds the write; read-write
/// writes the image; read-only refuses the write.
#[test]
fn the_tiny_guest_drives_a_virtio_block_device() {
    if !can_run_vms() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let k = tiny(t.path());
    let (base, orig) = disk_image(t.path());
    let run = |disk: String| {
        let o = vm(&[
            "--kernel",
            k.to_str().unwrap(),
            "--mem",
            "32M",
            "--disk",
            &disk,
        ]);
        assert!(o.status.success(), "{}", common::stderr(&o));
        common::stdout(&o)
    };
    let written = b"written by the tiny guest\n";
    // Copy-on-write into an unnamed layer: the guest reads back its write, the base is as it was.
    let out = run(format!("{},cow", base.display()));
    for line in [
        "tiny guest: virtio-blk sector 0: cellvisor disk 0\n",
        "tiny guest: virtio-blk wrote sector 1\n",
        "tiny guest: hostile buffer outside memory: device failed, as it must\n",
        "tiny guest: hostile looping chain: device failed, as it must\n",
        "tiny guest: hostile available index: device failed, as it must\n",
        "tiny guest: hostile head index: device failed, as it must\n",
        "tiny guest: virtio-blk sector 1: written by the tiny guest\n",
        "tiny guest: done, resetting",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert!(
        std::fs::read(&base).unwrap() == orig,
        "the base was written"
    );
    // A kept layer: it has the write, the base does not; the next boot sees it.
    let layer = t.path().join("layer.img");
    let out = run(format!("{},cow={}", base.display(), layer.display()));
    assert!(out.contains("sector 1: written by the tiny guest"), "{out}");
    assert_eq!(sector1(&std::fs::read(&layer).unwrap()), written);
    assert!(
        std::fs::read(&base).unwrap() == orig,
        "the base was written"
    );
    // Read-write: the image itself.
    let own = t.path().join("own.img");
    std::fs::copy(&base, &own).unwrap();
    run(own.display().to_string());
    assert_eq!(sector1(&std::fs::read(&own).unwrap()), written);
    // Read-only: the write is refused (the guest reports the failed request).
    let out = run(format!("{},ro", base.display()));
    assert!(
        out.contains("tiny guest: virtio-blk request FAILED"),
        "{out}"
    );
    assert!(
        std::fs::read(&base).unwrap() == orig,
        "the base was written"
    );
    // Bad disks: one line each, and no layer file left behind.
    let gone = t.path().join("new-layer.img");
    let none = t.path().join("none.img").display().to_string();
    let layered = format!("{},cow={}", base.display(), gone.display());
    for (disks, want) in [
        (vec![none.clone()], "No such file"),
        // The first disk's layer is made, then the second disk fails: the layer goes.
        (vec![layered, none], "No such file"),
        (vec![format!("{},rx", base.display())], "unknown option"),
    ] {
        let mut args = vec!["--kernel", k.to_str().unwrap(), "--mem", "32M"];
        for d in &disks {
            args.extend(["--disk", d]);
        }
        let o = vm(&args);
        assert!(!o.status.success());
        let err = common::stderr(&o);
        assert!(
            err.contains(want) && err.lines().count() <= 3,
            "{want:?} not in {err}"
        );
        assert!(!gone.exists(), "a layer was left behind");
    }
}

/// A guest that drops to ring 3, prints "x" and spins there until stopped.
fn spin_guest(dir: &Path) -> PathBuf {
    assemble(
        dir,
        "spin",
        ".intel_syntax noprefix\n.code64\n.globl _start\n_start:\n push 0x2b\n push 0x70000\n push 0x3002\n push 0x23\n lea rax, [rip + user]\n push rax\n iretq\nuser:\n mov dx, 0x3f8\n mov al, 'x'\n out dx, al\nspin:\n jmp spin\n",
    )
}

/// `vm run --mem 32M ARGS --kernel K` (the spin guest), once the guest has printed its byte.
fn spinning(args: &[&str], k: &Path) -> std::process::Child {
    use std::io::Read;
    let mut child = Command::new(common::BIN)
        .args(["vm", "run", "--mem", "32M"])
        .args(args)
        .arg("--kernel")
        .arg(k)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    let _ = child.stdout.as_mut().unwrap().read_exact(&mut first);
    child
}

/// Bad input: one line, a non-zero exit, no VM.
#[test]
fn bad_input_gets_one_line() {
    if !can_run_vms() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let k = tiny(t.path());
    let k = k.to_str().unwrap();
    let junk = t.path().join("junk");
    std::fs::write(&junk, b"not a kernel at all").unwrap();
    let big = t.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    for (args, want) in [
        (vec!["--kernel", "/no/such/kernel"], "/no/such/kernel"),
        (
            vec!["--kernel", junk.to_str().unwrap()],
            "neither an ELF kernel",
        ),
        (vec!["--kernel", k, "--vcpus", "0"], "vcpus: 0"),
        (vec!["--kernel", k, "--mem", "1M"], "too little"),
        (vec!["--kernel", k, "--mem", "lots"], "not a size"),
        (
            vec!["--kernel", k, "--initrd", "/no/such/initrd"],
            "/no/such/initrd",
        ),
        // Files that would be read for ever, or could not fit.
        (
            vec!["--kernel", "/dev/zero"],
            "kernel /dev/zero: not a regular file",
        ),
        (
            vec!["--kernel", k, "--initrd", "/dev/urandom"],
            "initrd /dev/urandom: not a regular file",
        ),
        (
            vec!["--kernel", big.to_str().unwrap(), "--mem", "32M"],
            "more than the guest's 33554432 bytes of memory",
        ),
    ] {
        let o = vm(&args);
        assert!(!o.status.success(), "{args:?}");
        let e = common::stderr(&o);
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        assert!(e.contains(want), "{args:?}: {e}");
    }
}

/// A guest that faults with no IDT triple-faults: that VM ends with the registers and the
/// instruction bytes at RIP (here `ud2`: 0f 0b), and the VMM exits non-zero.
#[test]
fn a_faulting_guest_ends_with_the_code_at_rip() {
    if !can_run_vms() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let k = assemble(
        t.path(),
        "fault",
        ".intel_syntax noprefix\n.code64\n.globl _start\n_start:\n nop\n ud2\n",
    );
    let o = vm(&["--kernel", k.to_str().unwrap(), "--mem", "32M"]);
    assert!(!o.status.success());
    let e = common::stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("triple fault") && e.contains("code at rip: 0f 0b"),
        "{e}"
    );
    assert!(e.contains("rip=0x200001"), "{e}");
}

/// SIGTERM stops a VM whose guest never ends: the VMM tears down and exits with 128+15.
#[test]
fn sigterm_stops_a_running_vm() {
    if !can_run_vms() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let k = spin_guest(t.path());
    let mut child = Command::new(common::BIN)
        .args(["vm", "run", "--mem", "32M", "--vcpus", "2", "--kernel"])
        .arg(&k)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the guest's first byte, then stop it.
    let mut first = [0u8; 1];
    use std::io::Read;
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"x");
    // Every thread of the running VMM is under a seccomp filter (mode 2). The main thread
    // installs its own after starting the vCPUs, so the guest's first byte may come first: poll.
    // (KVM adds a worker of its own to the thread group, kvm-nx-lpage-recovery: not ours.)
    let ours = |pid: u32| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten()
                    .map(|e| std::fs::read_to_string(e.path().join("status")).unwrap_or_default())
                    .filter(|s| s.starts_with("Name:\tcellvisor") || s.starts_with("Name:\tvcpu"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let tasks = loop {
        let t = ours(child.id());
        let filtered = t.iter().all(|s| s.lines().any(|l| l == "Seccomp:\t2"));
        if (t.len() == 3 && filtered) || std::time::Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    if tasks.len() != 3 || !tasks.iter().all(|s| s.contains("Seccomp:\t2\n")) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("main + 2 vCPU threads, each with a seccomp filter: {tasks:?}");
    }
    // SAFETY: kill of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < end,
            "the VMM did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status}");
}

/// A tap the VMM creates exists while the VM runs (with the host address asked for) and is
/// gone when the VMM is — even when it is SIGKILLed. Bad network options: one line, no tap.
#[test]
fn a_tap_goes_with_its_vm() {
    if !can_run_vms() || !Path::new("/dev/net/tun").exists() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let k = spin_guest(t.path());
    let tap = format!("cvt{}", std::process::id() % 100000);
    let link = |name: &str| {
        let o = Command::new("ip")
            .args(["-4", "addr", "show", name])
            .output()
            .unwrap();
        o.status.success().then(|| common::stdout(&o))
    };
    let net = format!("{tap},ip=10.123.0.1/24");
    let mut child = spinning(&["--net", &net], &k);
    let during = link(&tap);
    let _ = child.kill();
    let _ = child.wait();
    let during = during.unwrap_or_else(|| panic!("no tap {tap} while the VM ran"));
    assert!(during.contains("10.123.0.1/24"), "{during}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while link(&tap).is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(link(&tap).is_none(), "tap {tap} left behind after SIGKILL");
    for (net, want) in [
        ("", "not a tap device name"),
        ("a-name-longer-than-15", "not a tap device name"),
        ("cvbad0,ip=10.0.0.1", "bad ip"),
        ("cvbad0,mtu=9000", "unknown option"),
    ] {
        let o = vm(&["--kernel", k.to_str().unwrap(), "--net", net]);
        assert!(!o.status.success());
        assert!(
            common::stderr(&o).contains(want),
            "{want:?}: {}",
            common::stderr(&o)
        );
    }
    assert!(link("cvbad0").is_none());
}

/// The vsock socket exists while the VM runs and is removed when it ends (under the VMM's
/// seccomp filter), or by its reaper when the VMM is SIGKILLed; a stale socket is replaced;
/// one in use is refused in one line and left alone.
#[test]
fn the_vsock_socket_goes_with_its_vm() {
    if !can_run_vms() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let k = tiny(t.path());
    let uds = t.path().join("v.sock");
    let spec = format!("3,uds={}", uds.display());
    let run = || {
        vm(&[
            "--kernel",
            k.to_str().unwrap(),
            "--mem",
            "32M",
            "--vsock",
            &spec,
        ])
    };
    let o = run();
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(!uds.exists(), "the vsock socket was left behind");
    // A VMM that is SIGKILLed cannot remove it: its reaper does.
    let mut child = spinning(&["--vsock", &spec], &spin_guest(t.path()));
    let bound = uds.exists();
    // The reaper, forked after the kernel was loaded, shares none of the guest's 32 MiB
    // (MADV_DONTFORK): no mapping of that size in it, where the VMM has one.
    let guest_sized = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (a, b) = l.split_whitespace().next()?.split_once('-')?;
                Some(u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?)
            })
            .any(|len| len == 32 << 20)
    };
    let reaper: Vec<u32> =
        std::fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id()))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    let (in_vmm, in_reaper) = (
        guest_sized(child.id()),
        reaper.iter().any(|&p| guest_sized(p)),
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(reaper.len(), 1, "the VMM's children: {reaper:?}");
    assert!(in_vmm, "no guest memory mapping in the VMM");
    assert!(!in_reaper, "the reaper maps the guest's memory");
    assert!(bound, "no vsock socket while the VM ran");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while uds.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !uds.exists(),
        "the socket of a SIGKILLed VMM was left behind"
    );
    // Stale: bound once, nobody listening.
    drop(std::os::unix::net::UnixListener::bind(&uds).unwrap());
    assert!(uds.exists());
    let o = run();
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(!uds.exists(), "the stale socket was left behind");
    // In use by someone else.
    let other = std::os::unix::net::UnixListener::bind(&uds).unwrap();
    let o = run();
    assert!(!o.status.success());
    let e = common::stderr(&o);
    assert!(e.contains("in use") && e.lines().count() == 1, "{e}");
    assert!(uds.exists(), "someone else's socket was removed");
    drop(other);
    for (bad, want) in [
        ("2,uds=/tmp/x".to_string(), "CID 3 or more"),
        ("3".to_string(), "CID,uds=PATH"),
        (
            format!("3,uds={}/none/v.sock", t.path().display()),
            "No such file",
        ),
    ] {
        let o = vm(&["--kernel", k.to_str().unwrap(), "--vsock", &bad]);
        assert!(!o.status.success());
        assert!(
            common::stderr(&o).contains(want),
            "{want:?}: {}",
            common::stderr(&o)
        );
    }
}

/// `vm run --balloon ... --control PATH` and `vm balloon --control PATH [--size]` on this
/// machine (the spin guest has no balloon driver: what shows is the VMM's side): the figures,
/// a new target, a target past the guest refused in one line, a bad spec refused before
/// anything is made; the control socket goes with the VMM, SIGKILLed too (its reaper).
#[test]
fn a_running_vms_balloon_is_set_through_its_control_socket() {
    if !can_run_vms() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let k = spin_guest(t.path());
    let sock = t.path().join("c.sock");
    let s = sock.to_str().unwrap();
    let balloon = |args: &[&str]| {
        Command::new(common::BIN)
            .args(["vm", "balloon", "--control", s])
            .args(args)
            .output()
            .unwrap()
    };
    let mut child = spinning(
        &[
            "--balloon",
            "size=8,reporting,deflate-on-oom",
            "--control",
            s,
        ],
        &k,
    );
    let o = balloon(&[]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&common::stdout(&o)).unwrap();
    assert_eq!(
        (v["guest_mib"].as_u64(), v["target_mib"].as_u64()),
        (Some(32), Some(8)),
        "{v}"
    );
    let o = balloon(&["--size", "16M"]);
    assert_eq!(common::stdout(&o).trim(), r#"{"target_mib":16}"#);
    let o = balloon(&["--size", "64M"]);
    assert!(!o.status.success());
    assert_eq!(
        common::stderr(&o).trim(),
        "cellvisor: balloon: 64 MiB is more than the guest's 32 MiB"
    );
    // Garbage on the socket: one line back, the VM goes on.
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    use std::io::{Read, Write};
    c.write_all(b"{\"op\":\"reboot\"}\n").unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        v["error"], "no op \"reboot\" (balloon, balloon-stats)",
        "{answer}"
    );
    assert!(balloon(&[]).status.success());
    let _ = child.kill();
    let _ = child.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !sock.exists(),
        "the control socket of a SIGKILLed VMM was left behind"
    );
    for (args, want) in [
        (
            vec!["--balloon", "size=64"],
            "balloon: size=64 MiB is more than the guest's 32 MiB",
        ),
        (
            vec!["--balloon", "hint"],
            "is not size=MIB, deflate-on-oom, reporting, stats=SECS or on",
        ),
    ] {
        let o = Command::new(common::BIN)
            .args(["vm", "run", "--mem", "32M", "--kernel"])
            .arg(&k)
            .args(&args)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let e = common::stderr(&o);
        // The first line says it (clap adds a hint to a flag it cannot parse).
        assert!(e.lines().next().unwrap_or("").contains(want), "{e}");
    }
    let o = balloon(&[]);
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("control socket"),
        "{}",
        common::stderr(&o)
    );
}

/// Several VMs at once with the idle guest: `bench vms` measures them and stops them all
/// cleanly; the VMM's own overhead stays far below Firecracker's 5 MiB bound.
#[test]
fn many_idle_vms_and_their_memory() {
    if !can_run_vms() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let k = common::test_guest(t.path(), "idle");
    let o = Command::new(common::BIN)
        .args(["bench", "vms", "-n", "4", "--mem", "64M", "--out"])
        .arg(t.path())
        .arg("--kernel")
        .arg(&k)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("vms.json")).unwrap()).unwrap();
    assert_eq!(r["samples"].as_array().unwrap().len(), 4);
    for s in r["samples"].as_array().unwrap() {
        let guest = s["guest_touched_kib"].as_u64().unwrap();
        assert!(
            guest > 0 && guest < 4096,
            "guest memory is touched lazily: {s}"
        );
        assert!(s["overhead_kib"].as_u64().unwrap() < 5 * 1024, "{s}");
    }
}

/// Page merging: `--mergeable` marks the guest memory for KSM (VmFlags `mg`), nothing else
/// does; `bench vms --merge` with the fill guest keeps the pages alike VMs share once (each
/// added VM costs a fraction of what it costs unmerged) and puts KSM's settings back.
#[test]
fn alike_vms_share_their_pages_when_merging() {
    if !can_run_vms() || !Path::new("/sys/kernel/mm/ksm/run").exists() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let k = common::test_guest(t.path(), "fill");
    // The guest's mapping is the one of 64 MiB; its VmFlags say whether KSM may merge it.
    let guest_flags = |mergeable: bool| {
        let log = t.path().join(format!("fill-{mergeable}.log"));
        let mut c = Command::new(common::BIN);
        c.args(["vm", "run", "--mem", "64M", "--kernel"])
            .arg(&k)
            .arg("--console")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if mergeable {
            c.arg("--mergeable");
        }
        let mut vm = c.spawn().unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(" up")
        {
            assert!(Instant::now() < end, "the fill guest did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", vm.id())).unwrap();
        let mut flags = String::new();
        let mut size = 0;
        for l in smaps.lines() {
            if l.starts_with("Size:") {
                size = l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
            } else if l.starts_with("VmFlags:") && size == 64 * 1024 {
                flags = l.to_string();
            }
        }
        vm.kill().unwrap();
        vm.wait().unwrap();
        flags
    };
    assert!(guest_flags(true).contains(" mg"), "{}", guest_flags(true));
    let plain = guest_flags(false);
    assert!(
        plain.starts_with("VmFlags:") && !plain.contains(" mg"),
        "{plain}"
    );
    let ksm = || {
        ["run", "pages_to_scan", "sleep_millisecs"]
            .map(|f| std::fs::read_to_string(format!("/sys/kernel/mm/ksm/{f}")).unwrap())
    };
    let before = ksm();
    let o = Command::new(common::BIN)
        .args([
            "bench", "vms", "--merge", "-n", "3", "--mem", "64M", "--out",
        ])
        .arg(t.path())
        .arg("--kernel")
        .arg(&k)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert_eq!(ksm(), before, "KSM's settings were not put back");
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("merge.json")).unwrap()).unwrap();
    let off = &r["sides"][0];
    let on = &r["sides"][1];
    // Unmerged, each added VM holds its 32 MiB; merged, a small part of it.
    assert!(
        off["pss_kib_per_added"].as_f64().unwrap() > 30.0 * 1024.0,
        "{r}"
    );
    assert!(r["per_added_ratio"].as_f64().unwrap() < 0.5, "{r}");
    assert!(on["ksm_pages_sharing"].as_u64().unwrap() > 8192, "{r}");
}

/// The stock Debian cloud kernel, booted by our VMM with our initramfs to guest userspace,
/// inside the emulated KVM test host (real hardware-virtualization semantics), with two vCPUs,
/// a copy-on-write virtio disk, virtio-net on a tap (the guest pings the host side) and vsock
/// both ways (a guest program reaches a host echo server at PATH_5000; a host program reaches
/// the guest's echo server on port 1234 through PATH; the guest's agent reaches its port at
/// PATH_1024), a line piped into the VMM read by the
/// guest from its console, ending in an ACPI poweroff after which the tap and the socket are
/// gone. The VMM unpacks the bzImage's kernel (the default); a second, short boot takes the
/// bzImage through its own decompressor (--keep-bzimage). Slow (about 30 s); the emulated
/// host itself sometimes stalls for good (its timer interrupts stop while the nested guest
/// runs), so each attempt has a deadline and there are three.
#[test]
fn a_stock_debian_kernel_boots_to_userspace_in_the_test_host() {
    if !can_run_vms() {
        return;
    }
    let Some(kernel) = common::stock_kernel() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let initrd = t.path().join("initramfs.cpio.gz");
    let agent = common::agent();
    assert!(Command::new("bash")
        .arg(Path::new(WORKSPACE).join("scripts/mkinitramfs.sh"))
        .arg("-a")
        .arg(&agent)
        .arg(&initrd)
        .status()
        .unwrap()
        .success());
    let kname = kernel.file_name().unwrap().to_string_lossy().into_owned();
    let (base, _) = disk_image(t.path());
    // Two vCPUs (found through the ACPI MADT), the disk as vda (found through the DSDT) under
    // a private copy-on-write layer, and an ACPI poweroff at the end (the VMM exits 0). Then
    // the L1 checks the shared base is unchanged.
    let guest = "read -t 60 line; echo GOT-$line; echo IN-GUEST-$((6*7)); uname -r; echo CPUS-$(nproc); head -n1 /dev/vda; \
                 echo guest-wrote-this | dd of=/dev/vda bs=512 seek=1 conv=sync,fsync 2>/dev/null; \
                 dd if=/dev/vda bs=512 skip=1 count=1 2>/dev/null | head -n1; \
                 ip addr add 10.0.2.2/24 dev eth0; ip link set eth0 up; \
                 ping -c 2 -W 5 10.0.2.1 | grep -q 2.packets.received && echo PING-OK; \
                 cellvisor-agent vsock-send 5000 from-guest; cellvisor-agent vsock-echo 1234; \
                 cellvisor-agent ls; poweroff -f";
    let cmd = format!(
        "before=$(md5sum base.img); \
         ./cellvisor-agent uds-echo /tmp/v.sock_5000 > /tmp/host-echo.log 2>&1 & \
         ./cellvisor-agent uds-echo /tmp/v.sock_1024 > /tmp/port-echo.log 2>&1 & \
         printf 'serial-input\\n' | ./cellvisor vm run --kernel {kname} --initrd initramfs.cpio.gz --mem 256M --vcpus 2 \
         --disk base.img,cow --net cvtap0,ip=10.0.2.1/24 --vsock 3,uds=/tmp/v.sock \
         --console /tmp/guest.log \
         --cmdline 'console=ttyS0 reboot=k panic=-1 quiet pci=off nomodules 8250.nr_uarts=1 \
         i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd cellvisor.run=\"{guest}\"' & \
         vmm=$!; ./cellvisor-agent uds-send /tmp/v.sock 1234 hello-guest --wait 100; \
         wait $vmm; rc=$?; cat /tmp/guest.log /tmp/host-echo.log /tmp/port-echo.log; \
         [ -e /tmp/v.sock ] || echo UDS-GONE; [ \"$before\" = \"$(md5sum base.img)\" ] && echo BASE-UNCHANGED; \
         ip link show cvtap0 >/dev/null 2>&1 || echo TAP-GONE; \
         ./cellvisor vm run --keep-bzimage --kernel {kname} --initrd initramfs.cpio.gz --mem 128M \
         --cmdline 'console=ttyS0 reboot=k panic=-1 quiet pci=off nomodules 8250.nr_uarts=1 \
         i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd cellvisor.run=\"echo BZIMAGE-$((6*7))\"' \
         | grep -a BZIMAGE-42 || echo BZIMAGE-FAILED; exit $rc"
    );
    let o = common::in_test_host(
        "the Debian kernel did not reach userspace",
        || {
            let mut c = Command::new("bash");
            c.arg(Path::new(WORKSPACE).join("scripts/kvm-test-host.sh"))
                .args(["-m", "1024", "-f", common::BIN, "-f"])
                .arg(&kernel)
                .arg("-f")
                .arg(&initrd)
                .arg("-f")
                .arg(&base)
                .arg("-f")
                .arg(&agent)
                .arg("--")
                .arg(&cmd)
                .env("KVM_TEST_HOST_TIMEOUT", "150");
            c
        },
        |o| o.status.success() && common::stdout(o).contains("GUEST-UP "),
    );
    let out = common::stdout(&o);
    assert!(out.contains("IN-GUEST-42"), "{out}");
    assert!(
        out.contains(kname.trim_start_matches("vmlinuz-")),
        "uname -r: {out}"
    );
    for want in [
        "CPUS-2\n",
        "cellvisor disk 0\n",
        "guest-wrote-this\n",
        "BASE-UNCHANGED",
        "PING-OK",
        "TAP-GONE",
        "reply: from-guest",
        "reply: hello-guest",
        "echoed 12 bytes",
        "UDS-GONE",
        "GOT-serial-input",
        // The same kernel booted through its own decompressor (--keep-bzimage); the run
        // above had the VMM unpack it.
        "BZIMAGE-42",
        // The guest's agent finds its port at host vsock port 1024 (PATH_1024, where
        // cellvisord listens for a microvm domain; an echo here).
        "{\"op\":\"ls\"}",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // Powered off through ACPI before the init's own reboot.
    assert!(!out.contains("GUEST-DONE"), "{out}");
}

/// The virtio balloon against Debian's driver, in the KVM test host
/// (`scripts/bench-balloon-vm.sh -n 2 --idle 10`: `cellvisor bench balloon`, then `bench vms`
/// with two Linux guests with and without a reporting balloon, and with page merging): two idle
/// 128 MiB guests side by side, one with free page reporting, which hands its free memory back
/// (the host keeps less of its memory than of the other's); the other's balloon inflated to 48
/// MiB (the host gets pages back) and deflated; the reporting guest, its balloon inflated,
/// allocates 32 MiB and gets memory back from the balloon (deflate on OOM) without an OOM kill.
/// Every VMM stops cleanly and its control socket goes. About 3 minutes.
#[test]
fn a_balloon_gives_memory_back_in_the_test_host() {
    if !can_run_vms() {
        return;
    }
    if common::stock_kernel().is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("report");
    let bin = Path::new(common::BIN).parent().unwrap();
    common::in_test_host(
        "the balloon benchmarks did not finish in the test host",
        || {
            let mut c = Command::new("bash");
            c.arg(Path::new(WORKSPACE).join("scripts/bench-balloon-vm.sh"))
                .args(["-n", "2", "--idle", "10", "--settle", "2"])
                .arg(&dir)
                .env("CELLVISOR_BIN", bin)
                .env("KVM_TEST_HOST_MEM", "1536")
                .env("KVM_TEST_HOST_TIMEOUT", "600");
            c
        },
        |o| o.status.success() && dir.join("merge.json").exists(),
    );
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let out = std::fs::read_to_string(dir.join("table.txt")).unwrap();
    let r = read("balloon.json");
    let (with, without) = (&r["with_reporting"], &r["without_reporting"]);
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    assert!(
        with["balloon"]["reported_mib"].as_u64().unwrap() >= 16,
        "little reported: {out}"
    );
    assert!(
        f(&with["guest_resident_mib"]) + 8.0 < f(&without["guest_resident_mib"]),
        "reporting gave nothing back: {out}"
    );
    let stats = &without["balloon"]["stats"];
    assert!(stats["free_memory"].as_u64().unwrap() > 0, "{out}");
    assert!(stats["total_memory"].as_u64().unwrap() > 64 << 20, "{out}");
    let i = &r["inflate"];
    assert!(
        f(&i["guest_resident_inflated_mib"]) + 8.0 < f(&i["guest_resident_before_mib"]),
        "inflating gave nothing back: {out}"
    );
    let a = &r["realloc"];
    assert_eq!(a["filled_bytes"], 32 << 20, "{out}");
    assert_eq!(a["oom_kill"], false, "{out}");
    assert!(a["balloon_after_mib"].as_u64().unwrap() < 48, "{out}");
    assert!(with["balloon"]["fault"].is_null(), "{out}");
    // Two Linux guests at once, with and without a reporting balloon; and merged.
    let (on, off) = (read("vms-reporting.json"), read("vms-plain.json"));
    assert_eq!(
        (on["vms"].as_u64(), off["vms"].as_u64()),
        (Some(2), Some(2)),
        "{out}"
    );
    assert!(
        on["guest"].as_str().unwrap().contains("balloon reporting"),
        "{out}"
    );
    let m = read("merge.json");
    assert_eq!(m["sides"].as_array().unwrap().len(), 2, "{out}");
}
