//! The suite's microvm backend: a cellvisor microVM domain as cellvisord runs it, the VMM
//! (`cellvisor vm run`) jailed in a container domain, booting a stock kernel. The kernel's
//! initramfs (`scripts/mkinitramfs.sh`) loads the virtio drivers, mounts the suite's root,
//! an ext4 image of the same busybox root the other backends run (read-only and shared, under
//! a private copy-on-write layer per VM), and runs the command chrooted there. Figures come
//! back on the serial console; the guest/host switch and the busy domains' start signal
//! cross vsock (guest port P reaches `<run dir>/vsock_P` on the host).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{io, Error, Result};

/// The kernel command line every benchmark's guest boots with (serial console, reboot ends
/// the VMM, no PCI, the legacy devices cellvisor's VMM has).
pub const CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet pci=off nomodules 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/// How long a guest may take to reach userspace before the backend is judged unable to boot
/// it (a nested "PVM" /dev/kvm emulates guest ring 0 and takes minutes).
pub const BOOT_DEADLINE: Duration = Duration::from_secs(120);

/// What a microvm domain boots, and the VMM that runs it.
#[derive(Debug, Clone, Serialize)]
pub struct Guest {
    /// The `cellvisor` binary (its `vm run` is the VMM; it is also the OCI runtime).
    pub vmm: PathBuf,
    pub kernel: PathBuf,
    /// An initramfs from `scripts/mkinitramfs.sh` (it honours `cellvisor.root=`).
    pub initrd: PathBuf,
}

impl Guest {
    /// Check that the files exist and that this machine has KVM.
    pub fn new(vmm: &Path, kernel: &Path, initrd: &Path) -> Result<Guest> {
        for (what, p) in [("--kernel", kernel), ("--initrd", initrd)] {
            if !p.is_file() {
                return Err(Error::Msg(format!(
                    "microvm: {what} {}: no such file",
                    p.display()
                )));
            }
        }
        if !Path::new("/dev/kvm").exists() {
            return Err(Error::Msg("microvm: this machine has no /dev/kvm".into()));
        }
        // Absolute: the jail binds them in from wherever the bundle is.
        let abs = |p: &Path| {
            io(std::fs::canonicalize(p), || {
                format!("microvm: {}", p.display())
            })
        };
        Ok(Guest {
            vmm: abs(vmm)?,
            kernel: abs(kernel)?,
            initrd: abs(initrd)?,
        })
    }
}

/// The guest's root: `rootfs` as an ext4 image at `image`, with `spare_mib` free for what the
/// guest writes (into its copy-on-write layer).
pub fn root_image(rootfs: &Path, image: &Path, spare_mib: u64) -> Result<()> {
    let mke2fs = crate::host::program("mke2fs").ok_or_else(|| {
        Error::Msg("microvm: mke2fs not found (apt-get install e2fsprogs)".into())
    })?;
    let mib = (crate::host::du_kib(rootfs) / 1024.0 * 1.2) as u64 + spare_mib + 16;
    let out = io(
        Command::new(&mke2fs)
            .args(["-q", "-F", "-t", "ext4", "-m", "0", "-d"])
            .arg(rootfs)
            .arg(image)
            .arg(format!("{mib}M"))
            .output(),
        || format!("running {}", mke2fs.display()),
    )?;
    if !out.status.success() {
        return Err(Error::Msg(format!(
            "mke2fs {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Write an OCI bundle at `bundle` whose process is a jailed VMM booting `g` with `image` as
/// its root disk (copy-on-write) and running `cmd` (no double quotes) in the guest. With
/// `run`, the VMM has a vsock device whose host side is in that directory.
pub fn bundle(
    g: &Guest,
    image: &Path,
    bundle: &Path,
    run: Option<&Path>,
    cmd: &str,
    mem_mib: u64,
    vcpus: u8,
) -> Result<()> {
    use domain::profile::{DiskMode, Domain, DomainKind, Role, VmSpec};
    if cmd.contains('"') {
        return Err(Error::Msg(format!("a guest command with a quote: {cmd}")));
    }
    // The jail's own root: empty but for the mount points the runtime makes, and /tmp where
    // the VMM keeps the unnamed copy-on-write layer.
    let jail = bundle.join("rootfs");
    io(std::fs::create_dir_all(jail.join("tmp")), || {
        format!("creating {}", jail.display())
    })?;
    let d = Domain {
        name: "bench".into(),
        role: Role::Common,
        rootfs: Some(jail.clone()),
        cpus: None,
        cpu_weight: 100,
        memory_bytes: Some(mem_mib << 20),
        pids: None,
        exclusive_devices: Vec::new(),
        shared_devices: Vec::new(),
        passthrough: Vec::new(),
        realtime: None,
        kind: DomainKind::Microvm(VmSpec {
            kernel: g.kernel.clone(),
            initrd: Some(g.initrd.clone()),
            cmdline: Some(format!(
                "{CMDLINE} loglevel=1 cellvisor.root=/dev/vda cellvisor.run=\"{cmd}\""
            )),
            vcpus,
            disks: vec![(image.to_path_buf(), DiskMode::CopyOnWrite)],
            merge: false,
            balloon: false,
        }),
    };
    let o = domain::UpOpts {
        base: None,
        run_dir: run,
        devices: Vec::new(),
        fds: Vec::new(),
    };
    let mut cfg = microvm::domain_config(&d, &jail, &o, &g.vmm)?;
    // The VMM's stdin is not a terminal; its console is its stdout.
    cfg["process"]["terminal"] = serde_json::json!(false);
    io(
        std::fs::write(bundle.join("config.json"), cfg.to_string()),
        || format!("writing {}/config.json", bundle.display()),
    )
}

/// Where the host side of guest vsock port `port` listens, in a VM's run directory.
pub fn vsock_path(run: &Path, port: u32) -> PathBuf {
    run.join(format!("{}_{port}", microvm::VSOCK_SOCKET))
}

/// Why a console wait ended without its marker.
#[derive(Debug, PartialEq, Eq)]
pub enum Missed {
    /// The deadline passed.
    Timeout,
    /// The console closed: the VMM ended.
    Closed,
}

/// A VM's serial console, read line by line on a thread of its own.
pub struct Console {
    lines: Receiver<String>,
    /// Every line so far.
    pub text: String,
}

impl Console {
    pub fn new(out: impl Read + Send + 'static) -> Console {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line.trim_end_matches('\r').to_string()).is_err() {
                    break;
                }
            }
        });
        Console {
            lines: rx,
            text: String::new(),
        }
    }

    /// Wait until a line starts with `marker` (and return it), the console closes, or the
    /// deadline passes.
    pub fn wait_for(
        &mut self,
        marker: &str,
        deadline: Instant,
    ) -> std::result::Result<String, Missed> {
        self.wait_until(|l| l.starts_with(marker), deadline)
    }

    /// Wait until a line is one `want` takes (and return it), the console closes, or the
    /// deadline passes.
    pub fn wait_until(
        &mut self,
        want: impl Fn(&str) -> bool,
        deadline: Instant,
    ) -> std::result::Result<String, Missed> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.text.push_str(&l);
                    self.text.push('\n');
                    if want(&l) {
                        return Ok(l);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(Missed::Timeout),
                Err(RecvTimeoutError::Disconnected) => return Err(Missed::Closed),
            }
        }
    }

    /// Wait for `marker` after the guest is up: an error names what the console last said.
    pub fn expect(&mut self, marker: &str, deadline: Instant) -> Result<()> {
        self.wait_for(marker, deadline).map(drop).map_err(|m| {
            let how = match m {
                Missed::Timeout => "not in time",
                Missed::Closed => "the VM ended first",
            };
            Error::Msg(format!("no {marker} ({how}); console: {}", self.tail()))
        })
    }

    /// Read to the end of the console (the VMM has exited).
    pub fn drain(&mut self) {
        while let Ok(l) = self.lines.recv() {
            self.text.push_str(&l);
            self.text.push('\n');
        }
    }

    /// The last few lines, for an error message.
    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self.text.lines().filter(|l| !l.is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }
}

/// The guest reached userspace in time, or the error that says why not: the VMM ended (its
/// last error line is in `vmm_err`), or this KVM cannot boot the kernel in useful time.
pub fn wait_boot(c: &mut Console, vmm_err: &Path) -> Result<()> {
    let console = |c: &Console| {
        if c.text.is_empty() {
            String::new()
        } else {
            format!("; console: {}", c.tail())
        }
    };
    match c.wait_for("GUEST-UP", Instant::now() + BOOT_DEADLINE) {
        Ok(_) => Ok(()),
        Err(Missed::Closed) => Err(Error::Msg(format!(
            "the VM ended before its guest's userspace: {}{}",
            std::fs::read_to_string(vmm_err)
                .unwrap_or_default()
                .lines()
                .last()
                .unwrap_or("no error from the VMM"),
            console(c)
        ))),
        Err(Missed::Timeout) => Err(Error::Msg(format!(
            "the guest kernel did not reach userspace within {} s (a nested \"PVM\" /dev/kvm cannot boot one: run the suite in scripts/kvm-test-host.sh){}",
            BOOT_DEADLINE.as_secs(),
            console(c)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_is_read_to_its_marker() {
        let mut c = Console::new(std::io::Cursor::new(
            b"noise\r\nGUEST-UP 0.5\r\nDOMAIN-UP\r\nrest\r\n".to_vec(),
        ));
        let far = Instant::now() + Duration::from_secs(5);
        assert_eq!(c.wait_for("DOMAIN-UP", far).unwrap(), "DOMAIN-UP");
        assert!(c.text.contains("GUEST-UP 0.5\n"), "{}", c.text);
        assert_eq!(c.wait_for("NEVER", far), Err(Missed::Closed));
        c.drain();
        assert_eq!(c.tail(), "GUEST-UP 0.5 | DOMAIN-UP | rest");
    }

    #[test]
    fn a_guest_that_never_boots_is_named() {
        // A console that closes at once: the VMM's own error and the console's last words.
        let t = tempfile::tempdir().unwrap();
        let err = t.path().join("err");
        std::fs::write(&err, "noise\nvm: /dev/kvm: permission denied\n").unwrap();
        let mut c = Console::new(std::io::Cursor::new(b"early\n".to_vec()));
        let e = wait_boot(&mut c, &err).unwrap_err().to_string();
        assert!(e.contains("ended before"), "{e}");
        assert!(e.contains("/dev/kvm: permission denied"), "{e}");
        assert!(e.contains("console: early"), "{e}");
        // A console that stays silent past the deadline is a guest this KVM cannot boot.
        let (_keep, rx) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut c = Console::new(rx);
        assert_eq!(
            c.wait_for("GUEST-UP", Instant::now() + Duration::from_millis(20)),
            Err(Missed::Timeout)
        );
    }

    #[test]
    fn a_guest_command_with_a_quote_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let g = Guest {
            vmm: "/bin/true".into(),
            kernel: "/bin/true".into(),
            initrd: "/bin/true".into(),
        };
        let e = bundle(
            &g,
            Path::new("/x.img"),
            t.path(),
            None,
            "echo \"hi\"",
            64,
            1,
        );
        assert!(e.is_err());
        assert!(!t.path().join("config.json").exists());
    }
}
