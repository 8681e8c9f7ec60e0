//! One microVM's configuration: what `cellvisor vm run` takes. It is checked as a whole
//! before anything is made ([`Config::validate`], as Cloud Hypervisor validates its
//! VmConfig), and written back as that command's arguments ([`Config::args`]): how a jailer
//! starts the VMM, so the command line is built in one place, from this type.

use std::path::PathBuf;

use crate::pin::{cpus_arg, VcpuSched};
use crate::{arch, virtio, Error, Result};

/// The kernel command line when none is given: the serial console, and a reboot (or a
/// panic) ends the VM.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";

/// Where the serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Console {
    Stdout,
    File(PathBuf),
}

/// One microVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub kernel: PathBuf,
    /// Boot a compressed bzImage through its own decompressor in the guest (which keeps its
    /// KASLR) instead of unpacking it here (see unpack.rs).
    pub keep_bzimage: bool,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub mem_bytes: u64,
    pub vcpus: u8,
    pub console: Console,
    /// virtio block devices, in order (the guest's vda, vdb, ...).
    pub disks: Vec<virtio::block::DiskSpec>,
    /// virtio network devices on tap devices, in order (the guest's eth0, eth1, ...).
    pub nets: Vec<virtio::net::NetSpec>,
    /// A virtio vsock device, its host side on Unix sockets.
    pub vsock: Option<virtio::vsock::VsockSpec>,
    /// vCPU i runs on CPU `vcpu_cpus[i]` alone (empty: wherever the process may).
    pub vcpu_cpus: Vec<u32>,
    /// The VMM's other threads (the device loop and its helpers) run on these (empty:
    /// wherever the process may).
    pub vmm_cpus: Vec<u32>,
    /// The vCPU threads' real-time policy (a realtime domain's).
    pub vcpu_sched: Option<VcpuSched>,
    /// Guest memory offered to the kernel's page merging (KSM): identical pages of VMs
    /// marked so are kept once. Off by default: a merged page is a side channel between the
    /// VMs that share it (docs/microvm.md).
    pub mergeable: bool,
    /// A virtio balloon: memory the guest gives back (a target, free page reporting).
    pub balloon: Option<virtio::balloon::BalloonSpec>,
    /// The control socket (control.rs): a running VM's balloon target and figures.
    pub control: Option<PathBuf>,
}

impl Config {
    /// A VM booting `kernel` with the defaults: 128 MiB, one vCPU, the default command line,
    /// its console on stdout, no devices.
    pub fn new(kernel: impl Into<PathBuf>) -> Config {
        Config {
            kernel: kernel.into(),
            keep_bzimage: false,
            initrd: None,
            cmdline: DEFAULT_CMDLINE.into(),
            mem_bytes: 128 << 20,
            vcpus: 1,
            console: Console::Stdout,
            disks: Vec::new(),
            nets: Vec::new(),
            vsock: None,
            vcpu_cpus: Vec::new(),
            vmm_cpus: Vec::new(),
            vcpu_sched: None,
            mergeable: false,
            balloon: None,
            control: None,
        }
    }

    /// What this VM asks for can be had: its vCPUs, memory and command line fit the machine
    /// the VMM builds, and no two devices claim the same thing. Nothing is opened.
    pub fn validate(&self) -> Result<()> {
        if self.vcpus == 0 || self.vcpus > arch::MAX_VCPUS {
            return Err(Error::Config(format!(
                "vcpus: {} is outside 1..{}",
                self.vcpus,
                arch::MAX_VCPUS
            )));
        }
        arch::ram_ranges(self.mem_bytes)?;
        if !self.mem_bytes.is_multiple_of(4096) {
            return Err(Error::Config(format!(
                "memory: {} bytes is not a whole number of 4 KiB pages",
                self.mem_bytes
            )));
        }
        if self.cmdline.len() >= arch::CMDLINE_MAX {
            return Err(Error::Config(format!(
                "the command line is longer than {} bytes",
                arch::CMDLINE_MAX - 1
            )));
        }
        for (i, n) in self.nets.iter().enumerate() {
            if self.nets[..i].iter().any(|m| m.tap == n.tap) {
                return Err(Error::Config(format!("net: tap {} is given twice", n.tap)));
            }
        }
        if !self.vcpu_cpus.is_empty() && self.vcpu_cpus.len() != usize::from(self.vcpus) {
            return Err(Error::Config(format!(
                "vcpu cpus: {} CPUs for {} vCPUs (one each)",
                self.vcpu_cpus.len(),
                self.vcpus
            )));
        }
        for (i, c) in self.vcpu_cpus.iter().enumerate() {
            if self.vcpu_cpus[..i].contains(c) {
                return Err(Error::Config(format!(
                    "vcpu cpus: CPU {c} is given to two vCPUs"
                )));
            }
            if self.vmm_cpus.contains(c) {
                return Err(Error::Config(format!(
                    "vmm cpus: CPU {c} is a vCPU's: the VMM's other threads keep off the vCPUs' cores"
                )));
            }
        }
        if let Some(b) = &self.balloon {
            if b.size_mib.saturating_mul(1 << 20) > self.mem_bytes {
                return Err(Error::Config(format!(
                    "balloon: size={} MiB is more than the guest's {} MiB",
                    b.size_mib,
                    self.mem_bytes >> 20
                )));
            }
        }
        if let (Some(c), Some(v)) = (&self.control, &self.vsock) {
            if *c == v.uds {
                return Err(Error::Config(format!(
                    "control: {} is the vsock socket too",
                    c.display()
                )));
            }
        }
        let devices = self.disks.len()
            + self.nets.len()
            + usize::from(self.vsock.is_some())
            + usize::from(self.balloon.is_some());
        if devices > arch::MAX_DEVICES {
            return Err(Error::Config(format!(
                "{devices} virtio devices: at most {}",
                arch::MAX_DEVICES
            )));
        }
        Ok(())
    }

    /// `cellvisor vm run`'s arguments for this VM (after `run`).
    pub fn args(&self) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        let mut a = vec!["--kernel".to_string(), path(&self.kernel)];
        if self.keep_bzimage {
            a.push("--keep-bzimage".into());
        }
        if let Some(i) = &self.initrd {
            a.extend(["--initrd".into(), path(i)]);
        }
        let mem = if self.mem_bytes.is_multiple_of(1 << 20) {
            format!("{}M", self.mem_bytes >> 20)
        } else {
            self.mem_bytes.to_string()
        };
        a.extend([
            "--cmdline".into(),
            self.cmdline.clone(),
            "--mem".into(),
            mem,
            "--vcpus".into(),
            self.vcpus.to_string(),
        ]);
        if let Console::File(p) = &self.console {
            a.extend(["--console".into(), path(p)]);
        }
        for d in &self.disks {
            a.extend(["--disk".into(), d.to_string()]);
        }
        for n in &self.nets {
            a.extend(["--net".into(), n.to_string()]);
        }
        if let Some(v) = &self.vsock {
            a.extend(["--vsock".into(), v.to_string()]);
        }
        if !self.vcpu_cpus.is_empty() {
            a.extend(["--vcpu-cpus".into(), cpus_arg(&self.vcpu_cpus)]);
        }
        if !self.vmm_cpus.is_empty() {
            a.extend(["--vmm-cpus".into(), cpus_arg(&self.vmm_cpus)]);
        }
        if let Some(s) = self.vcpu_sched {
            a.extend(["--vcpu-sched".into(), s.to_string()]);
        }
        if self.mergeable {
            a.push("--mergeable".into());
        }
        if let Some(b) = &self.balloon {
            a.extend(["--balloon".into(), b.to_string()]);
        }
        if let Some(c) = &self.control {
            a.extend(["--control".into(), path(c)]);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_is_checked_as_a_whole() {
        let ok = Config::new("/k");
        ok.validate().unwrap();
        let bad = |f: &dyn Fn(&mut Config), want: &str| {
            let mut c = ok.clone();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        bad(&|c| c.vcpus = 0, "vcpus: 0 is outside");
        bad(&|c| c.vcpus = arch::MAX_VCPUS + 1, "is outside 1..");
        bad(&|c| c.mem_bytes = 1 << 20, "too little");
        bad(&|c| c.mem_bytes = (64 << 20) + 1, "4 KiB pages");
        bad(
            &|c| c.cmdline = "x".repeat(arch::CMDLINE_MAX),
            "longer than",
        );
        bad(
            &|c| c.nets = vec!["tap0".parse().unwrap(), "tap0".parse().unwrap()],
            "tap tap0 is given twice",
        );
        bad(
            &|c| c.disks = vec!["/d".parse().unwrap(); arch::MAX_DEVICES + 1],
            "virtio devices: at most",
        );
        bad(&|c| c.vcpu_cpus = vec![1, 2], "2 CPUs for 1 vCPUs");
        bad(
            &|c| c.balloon = Some("size=129".parse().unwrap()),
            "size=129 MiB is more than the guest's 128 MiB",
        );
        bad(
            &|c| {
                c.vsock = Some("3,uds=/v".parse().unwrap());
                c.control = Some("/v".into())
            },
            "is the vsock socket too",
        );
        bad(
            &|c| {
                c.vcpus = 2;
                c.vcpu_cpus = vec![1, 1]
            },
            "CPU 1 is given to two vCPUs",
        );
        bad(
            &|c| {
                c.vcpu_cpus = vec![1];
                c.vmm_cpus = vec![0, 1]
            },
            "CPU 1 is a vCPU's",
        );
    }

    #[test]
    fn every_field_is_written_as_an_argument() {
        let mut c = Config::new("/k");
        assert_eq!(
            c.args(),
            [
                "--kernel",
                "/k",
                "--cmdline",
                DEFAULT_CMDLINE,
                "--mem",
                "128M",
                "--vcpus",
                "1"
            ]
        );
        c.keep_bzimage = true;
        c.initrd = Some("/i".into());
        c.mem_bytes = (64 << 20) + 4096;
        c.console = Console::File("/c".into());
        c.disks = vec!["/a,ro".parse().unwrap(), "/b,cow=/l".parse().unwrap()];
        c.nets = vec!["tap0,mac=02:00:00:00:00:01,ip=10.0.0.1/24".parse().unwrap()];
        c.vsock = Some("3,uds=/v".parse().unwrap());
        c.vcpu_cpus = vec![1];
        c.vmm_cpus = vec![0, 2];
        c.vcpu_sched = Some(VcpuSched::Fifo(50));
        c.mergeable = true;
        c.balloon = Some("size=8,reporting".parse().unwrap());
        c.control = Some("/s".into());
        let a = c.args().join(" ");
        assert_eq!(
            a,
            format!("--kernel /k --keep-bzimage --initrd /i --cmdline {DEFAULT_CMDLINE} --mem 67112960 --vcpus 1 --console /c --disk /a,ro --disk /b,cow=/l --net tap0,mac=02:00:00:00:00:01,ip=10.0.0.1/24 --vsock 3,uds=/v --vcpu-cpus 1 --vmm-cpus 0,2 --vcpu-sched fifo:50 --mergeable --balloon size=8,reporting --control /s")
        );
    }
}
