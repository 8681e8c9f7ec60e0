//! virtio-net on a tap device. Frames go between the guest's queues and the tap as they are,
//! each behind the 12-byte virtio-net header (the tap is opened with IFF_VNET_HDR and that
//! header size), so no offload is offered and nothing is parsed.
//!
//! A tap named on the command line that does not exist yet is created by the VMM without
//! IFF_PERSIST: the kernel removes it when the VMM's descriptor closes — when the VMM exits,
//! is killed or crashes — so no tap device is ever left behind. An existing (persistent) tap
//! is used and left as it was.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{Device, Fault, F_VERSION_1};

const F_MAC: u64 = 1 << 5;
/// The virtio-net header of a VERSION_1 device (with num_buffers).
const HDR: usize = 12;
/// The largest frame with its header (64 KiB of payload is the guest's limit without offloads
/// far above what a 1500-byte MTU needs).
const MAX_FRAME: usize = HDR + 65550;
const RX: usize = 0;
const TX: usize = 1;

/// Why a network device cannot be given to the VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--net`'s text is not `TAP[,mac=MAC][,ip=ADDR/PREFIX]`.
    #[error("{0}")]
    Spec(String),
    /// Setting up the tap: `what` failed.
    #[error("net: {what}")]
    Os {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// The last OS error, as what failed doing `what`.
fn os_err(what: impl std::fmt::Display) -> Error {
    Error::Os {
        what: what.to_string(),
        source: std::io::Error::last_os_error(),
    }
}

/// How a network device is given to the VM (`--net TAP[,mac=MAC][,ip=ADDR/PREFIX]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    pub tap: String,
    pub mac: Option<[u8; 6]>,
    /// An address for the host side of the tap (set, with the link up, by the VMM).
    pub host_ip: Option<(std::net::Ipv4Addr, u8)>,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok().filter(|_| p.len() == 2))
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

impl std::str::FromStr for NetSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s).map_err(Error::Spec)
    }
}

impl NetSpec {
    fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let tap = parts.next().unwrap_or_default();
        if tap.is_empty() || tap.len() >= libc::IFNAMSIZ || tap.contains(['/', ' ']) {
            return Err(format!(
                "net: {tap:?} is not a tap device name (1-15 characters)"
            ));
        }
        let mut spec = NetSpec {
            tap: tap.into(),
            mac: None,
            host_ip: None,
        };
        for opt in parts {
            match opt.split_once('=') {
                Some(("mac", m)) => {
                    spec.mac = Some(parse_mac(m).ok_or(format!("net {tap}: bad mac {m:?}"))?)
                }
                Some(("ip", a)) => {
                    let bad = || format!("net {tap}: bad ip {a:?} (like 10.0.2.1/24)");
                    let (ip, len) = a.split_once('/').ok_or_else(bad)?;
                    let ip = ip.parse().map_err(|_| bad())?;
                    let len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
                    spec.host_ip = Some((ip, len));
                }
                _ => return Err(format!("net {tap}: unknown option {opt:?} (mac=, ip=)")),
            }
        }
        Ok(spec)
    }
}

/// As `--net` takes it.
impl std::fmt::Display for NetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.tap)?;
        if let Some(m) = self.mac {
            write!(
                f,
                ",mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            )?;
        }
        if let Some((ip, len)) = self.host_ip {
            write!(f, ",ip={ip}/{len}")?;
        }
        Ok(())
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    r
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;

/// Open (or create, non-persistent) the tap `name`, non-blocking, with the virtio-net header.
pub fn open_tap(spec: &NetSpec) -> Result<File, Error> {
    let name = &spec.tap;
    // SAFETY: open(2) of a constant path.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(os_err("/dev/net/tun"));
    }
    // SAFETY: a descriptor we just opened and own.
    let tap = unsafe { File::from_raw_fd(fd) };
    let mut req = ifreq(name);
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    // SAFETY: TUNSETIFF reads and writes the ifreq we pass.
    if unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETIFF as _, &mut req) } < 0 {
        return Err(os_err(format!("tap {name}")));
    }
    let sz: libc::c_int = HDR as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads an int.
    if unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETVNETHDRSZ as _, &sz) } < 0 {
        return Err(os_err(format!("tap {name}: header size")));
    }
    if let Some((ip, len)) = spec.host_ip {
        host_address(name, ip, len)?;
    }
    Ok(tap)
}

/// Give the host side of the tap an address and bring it up.
fn host_address(name: &str, ip: std::net::Ipv4Addr, len: u8) -> Result<(), Error> {
    // SAFETY: socket(2) with constant arguments.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(os_err("socket"));
    }
    // SAFETY: a descriptor we just made and own.
    let sock = unsafe { File::from_raw_fd(s) };
    let sin = |a: u32| {
        // SAFETY: sockaddr is plain old data.
        let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
        let v = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: a.to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in fits in sockaddr (both 16 bytes).
        unsafe { std::ptr::write((&mut sa as *mut libc::sockaddr).cast(), v) };
        sa
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let set = |req: libc::c_ulong, addr: u32, what: &str| -> Result<(), Error> {
        let mut r = ifreq(name);
        r.ifr_ifru.ifru_addr = sin(addr);
        // SAFETY: the ioctl reads the ifreq we pass.
        if unsafe { libc::ioctl(sock.as_raw_fd(), req as _, &r) } < 0 {
            return Err(os_err(format!("tap {name}: {what}")));
        }
        Ok(())
    };
    set(libc::SIOCSIFADDR, u32::from(ip), "address")?;
    set(libc::SIOCSIFNETMASK, mask, "netmask")?;
    let mut r = ifreq(name);
    // SAFETY: SIOCGIFFLAGS fills the ifreq we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut r) } < 0 {
        return Err(os_err(format!("tap {name}: flags")));
    }
    // SAFETY: the flags member was just filled in.
    unsafe { r.ifr_ifru.ifru_flags |= libc::IFF_UP as i16 };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &r) } < 0 {
        return Err(os_err(format!("tap {name}: up")));
    }
    Ok(())
}

/// The virtio network device.
pub struct Net {
    tap: File,
    config: [u8; 6],
    buf: Vec<u8>,
}

impl Net {
    pub fn new(tap: File, mac: [u8; 6]) -> Net {
        Net {
            tap,
            config: mac,
            buf: vec![0; MAX_FRAME],
        }
    }

    /// Guest → tap: every frame the driver queued. A frame the tap cannot take is dropped,
    /// as a NIC would.
    fn transmit(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, Fault> {
        super::drain(q, mem, "net tx", |chain| {
            let mut r = chain
                .reader(mem)
                .map_err(|e| Fault(format!("net: tx buffers: {e}")))?;
            let n = r.available_bytes();
            if !(HDR..=MAX_FRAME).contains(&n) {
                return Err(Fault(format!("net: a tx frame of {n} bytes")));
            }
            r.read_exact(&mut self.buf[..n])
                .map_err(|e| Fault(format!("net: tx buffers: {e}")))?;
            let _ = self.tap.write(&self.buf[..n]);
            Ok(0)
        })
    }

    /// Tap → guest: as many frames as the driver has buffers for.
    fn receive(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, Fault> {
        let mut used = false;
        loop {
            let Some(chain) = q
                .iter(mem)
                .map_err(|e| Fault(format!("net: rx ring: {e}")))?
                .next()
            else {
                // No buffers: the frames wait in the tap until the driver adds some.
                return Ok(used);
            };
            let n = match self.tap.read(&mut self.buf) {
                Ok(n) if n >= HDR => n,
                Ok(_) | Err(_) => {
                    // Nothing to read (or a runt): give the buffer back.
                    q.go_to_previous_position();
                    return Ok(used);
                }
            };
            // Without mergeable buffers, a frame fits in one chain: num_buffers is 1.
            self.buf[10..12].copy_from_slice(&1u16.to_le_bytes());
            let head = chain.head_index();
            let mut w = chain
                .writer(mem)
                .map_err(|e| Fault(format!("net: rx buffers: {e}")))?;
            let len = if w.available_bytes() >= n {
                w.write_all(&self.buf[..n])
                    .map_err(|e| Fault(format!("net: rx buffers: {e}")))?;
                n as u32
            } else {
                // Too small for this frame: the frame is dropped, the buffer returned empty.
                0
            };
            q.add_used(mem, head, len)
                .map_err(|e| Fault(format!("net: rx used ring: {e}")))?;
            used = true;
        }
    }
}

impl Device for Net {
    fn device_type(&self) -> u32 {
        1
    }
    fn features(&self) -> u64 {
        F_VERSION_1 | F_MAC
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 256]
    }
    fn config(&self) -> &[u8] {
        &self.config
    }
    fn process(
        &mut self,
        q: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, Fault> {
        match q {
            TX => self.transmit(&mut queues[TX], mem),
            _ => self.receive(&mut queues[RX], mem),
        }
    }
    fn fd(&self) -> Option<RawFd> {
        Some(self.tap.as_raw_fd())
    }
    fn event(&mut self, queues: &mut [Queue], mem: &GuestMemoryMmap) -> Result<bool, Fault> {
        // Only RX can be ready before the driver is.
        Ok(queues[RX].ready() && self.receive(&mut queues[RX], mem)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_specs_parse() {
        let n: NetSpec = "tap0".parse().unwrap();
        assert_eq!((n.tap.as_str(), n.mac, n.host_ip), ("tap0", None, None));
        let n: NetSpec = "cv1,mac=02:00:00:00:00:01,ip=10.0.2.1/24".parse().unwrap();
        assert_eq!(n.mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(n.host_ip, Some(("10.0.2.1".parse().unwrap(), 24)));
        assert_eq!(n.to_string(), "cv1,mac=02:00:00:00:00:01,ip=10.0.2.1/24");
        for bad in [
            "",
            "a-name-longer-than-15",
            "t,mac=02:00",
            "t,mac=zz:00:00:00:00:01",
            "t,ip=10.0.2.1",
            "t,ip=10.0.2.1/33",
            "t,speed=10",
        ] {
            assert!(bad.parse::<NetSpec>().is_err(), "{bad}");
        }
    }
}
