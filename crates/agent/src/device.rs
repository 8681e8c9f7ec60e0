//! Devices as a domain's application uses them: `device CLASS -- PROGRAM` runs a program
//! with the descriptor of the domain's device of that class (from its port) as descriptor 3;
//! and for the revocation tests, `hold` keeps a
//! device open and says when it stops working (an input device revoked, a DRM card's master
//! lost), `probe` opens one and says what it gives (a DRM card's master, a camera's driver, an
//! input device's events); and, on a test host, `uinput` makes a real input device (a
//! keyboard through /dev/uinput) that types without end, so a domain has events to read.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::time::{Duration, Instant};

// linux/input.h, linux/uinput.h, drm/drm.h, linux/videodev2.h.
const EVIOCGVERSION: libc::c_ulong = 0x8004_4501; // _IOR('E', 0x01, int)
const DRM_IOCTL_AUTH_MAGIC: libc::c_ulong = 0x4004_6411; // _IOW('d', 0x11, struct drm_auth)
const DRM_IOCTL_SET_MASTER: libc::c_ulong = 0x641e; // _IO('d', 0x1e)
const VIDIOC_QUERYCAP: libc::c_ulong = 0x8068_5600; // _IOR('V', 0, struct v4l2_capability)
const UI_SET_EVBIT: libc::c_ulong = 0x4004_5564; // _IOW('U', 100, int)
const UI_SET_KEYBIT: libc::c_ulong = 0x4004_5565; // _IOW('U', 101, int)
const UI_DEV_SETUP: libc::c_ulong = 0x405c_5503; // _IOW('U', 3, struct uinput_setup)
const UI_DEV_CREATE: libc::c_ulong = 0x5501; // _IO('U', 1)
const UI_GET_SYSNAME_64: libc::c_ulong = 0x8040_552c; // _IOC(_IOC_READ, 'U', 44, 64)
const EV_SYN: u16 = 0;
const EV_KEY: u16 = 1;
const KEY_A: u16 = 30;
/// struct input_event on 64-bit: a timeval, type, code, value.
const EVENT_SIZE: usize = 24;

/// The device classes the commands know, by the node's major number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Input,
    Drm,
    Video,
    Other,
}

/// A device path (opened here), or a device class (no `/`): taken from the domain's port.
fn open(path: &str) -> Result<(std::fs::File, Class), String> {
    let f = if path.contains('/') {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| format!("{path}: {e}"))?
    } else {
        let (_, fd) = crate::port::device(&crate::port::Port::here(), path)?;
        let f = std::fs::File::from(fd);
        // SAFETY: F_SETFL with flags on an open descriptor.
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        f
    };
    let m = f.metadata().map_err(|e| format!("{path}: {e}"))?;
    if !m.file_type().is_char_device() {
        return Err(format!("{path}: not a character device"));
    }
    let class = match libc::major(m.rdev()) {
        13 => Class::Input,
        226 => Class::Drm,
        81 => Class::Video,
        _ => Class::Other,
    };
    Ok((f, class))
}

/// An ioctl whose argument is a buffer of `N` bytes: the errno it failed with.
fn ioctl_buf<const N: usize>(fd: RawFd, request: libc::c_ulong) -> Result<[u8; N], i32> {
    let mut buf = [0u8; N];
    // SAFETY: every request used with it writes at most N bytes into `buf`.
    if unsafe { libc::ioctl(fd, request, buf.as_mut_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    Ok(buf)
}

/// What the device gives now: `Ok(state)` while it works, `Err(why)` once it does not.
fn state(f: &std::fs::File, class: Class) -> Result<String, String> {
    let fd = f.as_raw_fd();
    let errno = |e: i32| std::io::Error::from_raw_os_error(e).to_string();
    match class {
        Class::Input => ioctl_buf::<4>(fd, EVIOCGVERSION)
            .map(|_| "input open".to_string())
            .map_err(|e| format!("input: {}", errno(e))),
        // AUTH_MAGIC is for the master only: a magic of 0 is refused with EINVAL by the
        // master and with EACCES by anyone else, and changes nothing either way.
        Class::Drm => match ioctl_buf::<4>(fd, DRM_IOCTL_AUTH_MAGIC) {
            Err(libc::EACCES) => Err("drm: not master".into()),
            Err(libc::EINVAL) | Ok(_) => Ok("drm master".into()),
            Err(e) => Err(format!("drm: {}", errno(e))),
        },
        Class::Video => ioctl_buf::<104>(fd, VIDIOC_QUERYCAP)
            .map(|cap| {
                let driver = &cap[..16];
                let end = driver.iter().position(|&b| b == 0).unwrap_or(16);
                format!("camera {}", String::from_utf8_lossy(&driver[..end]))
            })
            .map_err(|e| format!("camera: {}", errno(e))),
        Class::Other => Ok("open".into()),
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `device CLASS -- PROGRAM [ARGS]`: the domain's device of `class`, taken from its port,
/// as descriptor 3 of PROGRAM (with `CELLVISOR_DEVICE_FD=3` and `CELLVISOR_DEVICE_NODE` set).
pub fn run_with(class: &str, program: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let (prog, args) = program
        .split_first()
        .ok_or("device CLASS -- PROGRAM [ARGS]: which program?")?;
    let (node, fd) = crate::port::device(&crate::port::Port::here(), class)?;
    let raw = fd.as_raw_fd();
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args)
        .env("CELLVISOR_DEVICE_FD", "3")
        .env("CELLVISOR_DEVICE_NODE", node);
    // SAFETY: dup2 and fcntl are async-signal-safe; between fork and exec they put the
    // descriptor at 3 without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if raw == 3 {
                let fl = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
            } else if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Err(format!("{prog}: {}", cmd.exec()))
}

/// `hold DEVICE`: open it (a path, or a class from the port), say what it gives ("held:
/// ..."), and keep it open until killed, checking every 20 ms and saying each change: "lost:
/// ..." when it stops working (for a DRM card, with what taking master back by itself gave),
/// "back: ..." when it works again (a DRM card's master given back).
pub fn hold(path: &str) -> Result<(), String> {
    let (f, class) = open(path)?;
    say(&format!("held: {}", state(&f, class)?));
    let mut working = true;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        match state(&f, class) {
            Err(why) if working => {
                working = false;
                if class == Class::Drm {
                    // SAFETY: DRM_IOCTL_SET_MASTER takes no argument.
                    let r = unsafe { libc::ioctl(f.as_raw_fd(), DRM_IOCTL_SET_MASTER, 0) };
                    let took = if r == 0 {
                        "taken back by itself".to_string()
                    } else {
                        format!("SET_MASTER: {}", std::io::Error::last_os_error())
                    };
                    say(&format!("lost: {why} ({took})"));
                } else {
                    say(&format!("lost: {why}"));
                }
            }
            Ok(now) if !working => {
                working = true;
                say(&format!("back: {now}"));
            }
            _ => {}
        }
    }
}

/// `probe PATH [--count N]`: open it, say what it gives; for an input device, read N events
/// (within 10 s) and say how many of them were key events.
pub fn probe(path: &str, events: usize) -> Result<(), String> {
    let (mut f, class) = open(path)?;
    say(&state(&f, class)?);
    if class != Class::Input || events == 0 {
        return Ok(());
    }
    let end = Instant::now() + Duration::from_secs(10);
    let (mut got, mut keys) = (0, 0);
    let mut ev = [0u8; EVENT_SIZE];
    while got < events {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{path}: {got} events of {events} within 10 s"));
        }
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, for as long as the call.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        match f.read(&mut ev) {
            Ok(EVENT_SIZE) => {
                got += 1;
                if u16::from_ne_bytes([ev[16], ev[17]]) == EV_KEY {
                    keys += 1;
                }
            }
            Ok(n) => return Err(format!("{path}: a read of {n} bytes")),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("{path}: {e}")),
        }
    }
    say(&format!("events: {got} ({keys} keys)"));
    Ok(())
}

/// `uinput NAME`: a keyboard made through /dev/uinput; prints its event node
/// (`/dev/input/eventN`) once it exists, then types the A key every 20 ms until killed.
pub fn uinput(name: &str) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/uinput")
        .map_err(|e| format!("/dev/uinput: {e}"))?;
    let fd = f.as_raw_fd();
    let int_ioctl = |request, arg: libc::c_int, what: &str| {
        // SAFETY: these requests take an int by value.
        if unsafe { libc::ioctl(fd, request, arg) } < 0 {
            return Err(format!("{what}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    };
    int_ioctl(UI_SET_EVBIT, EV_KEY.into(), "UI_SET_EVBIT")?;
    int_ioctl(UI_SET_KEYBIT, KEY_A.into(), "UI_SET_KEYBIT")?;
    // struct uinput_setup: struct input_id (bustype, vendor, product, version), name[80],
    // ff_effects_max.
    let mut setup = [0u8; 92];
    setup[0..2].copy_from_slice(&0x06u16.to_ne_bytes()); // BUS_VIRTUAL
    setup[2..4].copy_from_slice(&0x1234u16.to_ne_bytes());
    setup[4..6].copy_from_slice(&0x5678u16.to_ne_bytes());
    let n = name.len().min(79);
    setup[8..8 + n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: UI_DEV_SETUP reads a struct uinput_setup, which `setup` is laid out as.
    if unsafe { libc::ioctl(fd, UI_DEV_SETUP, setup.as_ptr()) } < 0 {
        return Err(format!("UI_DEV_SETUP: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: UI_DEV_CREATE takes no argument.
    if unsafe { libc::ioctl(fd, UI_DEV_CREATE) } < 0 {
        return Err(format!(
            "UI_DEV_CREATE: {}",
            std::io::Error::last_os_error()
        ));
    }
    let sys =
        ioctl_buf::<64>(fd, UI_GET_SYSNAME_64).map_err(|e| format!("UI_GET_SYSNAME: errno {e}"))?;
    let end = sys.iter().position(|&b| b == 0).unwrap_or(64);
    let input = String::from_utf8_lossy(&sys[..end]).into_owned();
    // Its event node, once evdev has made it (devtmpfs).
    let deadline = Instant::now() + Duration::from_secs(10);
    let node = loop {
        let found = std::fs::read_dir(format!("/sys/devices/virtual/input/{input}"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("event"));
        if let Some(ev) = found {
            let node = format!("/dev/input/{ev}");
            if std::path::Path::new(&node).exists() {
                break node;
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{input}: no event node within 10 s (is evdev loaded?)"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    say(&node);
    let event = |kind: u16, code: u16, value: i32| {
        let mut ev = [0u8; EVENT_SIZE];
        ev[16..18].copy_from_slice(&kind.to_ne_bytes());
        ev[18..20].copy_from_slice(&code.to_ne_bytes());
        ev[20..24].copy_from_slice(&value.to_ne_bytes());
        ev
    };
    loop {
        for value in [1, 0] {
            f.write_all(&event(EV_KEY, KEY_A, value))
                .and_then(|()| f.write_all(&event(EV_SYN, 0, 0)))
                .map_err(|e| format!("typing: {e}"))?;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
