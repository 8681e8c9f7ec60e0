//! virtio-block over a raw image: read-write, read-only, or a read-only base shared by many
//! VMs under a private copy-on-write layer.
//!
//! The layer is a sparse file as large as the base. A 4 KiB cluster the guest wrote lives in
//! the layer (as data); every other cluster is read from the base (the layer has a hole
//! there). Which clusters the layer holds is read once at start (SEEK_DATA/SEEK_HOLE) and
//! kept as a bitmap, so a layer kept in a file (`cow=FILE`) carries over to the next boot.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::{Device, Fault, F_VERSION_1};

pub const SECTOR: u64 = 512;
const CLUSTER: u64 = 4096;

const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// Why a disk cannot be given to the VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--disk`'s text is not `PATH[,ro|,cow[=LAYER]]`.
    #[error("{0}")]
    Spec(String),
    #[error("disk {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disk {}: {msg}", .path.display())]
    Invalid { path: PathBuf, msg: String },
    #[error("disk {}: its copy-on-write layer in {}", .base.display(), .dir.display())]
    Layer {
        base: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: p.to_path_buf(),
        source,
    }
}

fn invalid(p: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Invalid {
        path: p.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// How a disk is given to the VM (`--disk PATH[,ro|,cow[=LAYER]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    ReadWrite,
    ReadOnly,
    /// The base read-only, writes into a private layer: a file kept after the VM
    /// (Some) or an unlinked one that goes with the VMM (None).
    Cow(Option<PathBuf>),
}

impl std::str::FromStr for DiskSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut parts = s.split(',');
        let path = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Error::Spec("disk: no path".into()))?;
        let mut mode = Mode::ReadWrite;
        for opt in parts {
            mode = match opt {
                "ro" => Mode::ReadOnly,
                "rw" => Mode::ReadWrite,
                "cow" => Mode::Cow(None),
                o if o.starts_with("cow=") && o.len() > 4 => Mode::Cow(Some(o[4..].into())),
                o => {
                    return Err(Error::Spec(format!(
                        "disk {path}: unknown option {o:?} (ro, rw, cow, cow=FILE)"
                    )))
                }
            };
        }
        Ok(DiskSpec {
            path: path.into(),
            mode,
        })
    }
}

/// As `--disk` takes it.
impl std::fmt::Display for DiskSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        match &self.mode {
            Mode::ReadWrite => Ok(()),
            Mode::ReadOnly => write!(f, ",ro"),
            Mode::Cow(None) => write!(f, ",cow"),
            Mode::Cow(Some(layer)) => write!(f, ",cow={}", layer.display()),
        }
    }
}

/// The pieces of `len` bytes at `off`, one per cluster: (cluster, disk offset, buffer range).
fn clusters(off: u64, len: usize) -> impl Iterator<Item = (u64, u64, std::ops::Range<usize>)> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        (done < len).then(|| {
            let at = off + done as u64;
            let n = ((CLUSTER - at % CLUSTER) as usize).min(len - done);
            done += n;
            (at / CLUSTER, at, done - n..done)
        })
    })
}

/// A private copy-on-write layer over a base.
struct Layer {
    file: File,
    present: Vec<u64>,
}

impl Layer {
    fn has(&self, c: u64) -> bool {
        self.present[(c / 64) as usize] & (1 << (c % 64)) != 0
    }
    fn mark(&mut self, c: u64) {
        self.present[(c / 64) as usize] |= 1 << (c % 64);
    }
}

/// The bytes behind a virtio disk.
pub struct Disk {
    base: File,
    layer: Option<Layer>,
    size: u64,
    read_only: bool,
}

impl Disk {
    pub fn open(spec: &DiskSpec) -> Result<Disk, Error> {
        let p = &spec.path;
        let writable = spec.mode == Mode::ReadWrite;
        let base = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(p)
            .map_err(io_err(p))?;
        let meta = base.metadata().map_err(io_err(p))?;
        if !meta.is_file() {
            return Err(invalid(p, "not a regular file (a raw image)"));
        }
        let size = meta.len();
        if size == 0 || !size.is_multiple_of(SECTOR) {
            return Err(invalid(
                p,
                format!("size {size} is not a positive multiple of 512"),
            ));
        }
        let layer = match &spec.mode {
            Mode::Cow(keep) => Some(Layer::open(p, keep.as_deref(), size)?),
            _ => None,
        };
        Ok(Disk {
            base,
            layer,
            size,
            read_only: spec.mode == Mode::ReadOnly,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Read `buf.len()` bytes at `off` (inside the disk).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let Some(layer) = &self.layer else {
            return self.base.read_exact_at(buf, off);
        };
        for (c, at, r) in clusters(off, buf.len()) {
            let src = if layer.has(c) {
                &layer.file
            } else {
                &self.base
            };
            src.read_exact_at(&mut buf[r], at)?;
        }
        Ok(())
    }

    /// Write `buf` at `off` (inside the disk); into the layer for a copy-on-write disk.
    pub fn write_at(&mut self, buf: &[u8], off: u64) -> std::io::Result<()> {
        let Some(layer) = &mut self.layer else {
            return self.base.write_all_at(buf, off);
        };
        for (c, at, r) in clusters(off, buf.len()) {
            if !layer.has(c) && r.len() as u64 != CLUSTER {
                // A partial cluster: bring the rest of it over from the base first.
                let start = c * CLUSTER;
                let len = CLUSTER.min(self.size - start) as usize;
                let mut whole = vec![0u8; len];
                self.base.read_exact_at(&mut whole, start)?;
                layer.file.write_all_at(&whole, start)?;
            }
            layer.file.write_all_at(&buf[r], at)?;
            layer.mark(c);
        }
        Ok(())
    }

    pub fn flush(&self) -> std::io::Result<()> {
        match &self.layer {
            Some(l) => l.file.sync_data(),
            None if self.read_only => Ok(()),
            None => self.base.sync_data(),
        }
    }
}

impl Layer {
    fn open(base: &Path, keep: Option<&Path>, size: u64) -> Result<Layer, Error> {
        let file = match keep {
            Some(k) => {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(k)
                    .map_err(io_err(k))?;
                let len = f.metadata().map_err(io_err(k))?.len();
                if len != 0 && len != size {
                    return Err(invalid(
                        k,
                        format!("layer of {len} bytes over a base of {size}"),
                    ));
                }
                f
            }
            None => {
                // An unnamed file: it goes when the VMM does. $TMPDIR, else /var/tmp (on
                // disk, usually), else /tmp.
                let dir = std::env::var_os("TMPDIR")
                    .map(PathBuf::from)
                    .or_else(|| {
                        ["/var/tmp", "/tmp"]
                            .map(PathBuf::from)
                            .into_iter()
                            .find(|d| d.is_dir())
                    })
                    .unwrap_or_else(|| "/tmp".into());
                tempfile_in(&dir).map_err(|source| Error::Layer {
                    base: base.to_path_buf(),
                    dir: dir.clone(),
                    source,
                })?
            }
        };
        let at = keep.unwrap_or(base);
        file.set_len(size).map_err(io_err(at))?;
        let clusters = size.div_ceil(CLUSTER);
        let mut layer = Layer {
            present: vec![0; clusters.div_ceil(64) as usize],
            file,
        };
        for (start, end) in data_extents(&layer.file, size).map_err(io_err(at))? {
            for c in start / CLUSTER..end.div_ceil(CLUSTER) {
                layer.mark(c);
            }
        }
        Ok(layer)
    }
}

/// An O_TMPFILE in `dir`: never visible by name, gone with its last descriptor. Where the
/// file system cannot make one (overlayfs before Linux 6.6), a named file removed at once.
fn tempfile_in(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match unnamed {
        Ok(f) => Ok(f),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = dir.join(format!(".cellvisor-layer-{}-{n}", std::process::id()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)?;
            std::fs::remove_file(&p)?;
            Ok(f)
        }
        Err(e) => Err(e),
    }
}

/// The data (non-hole) extents of a sparse file.
fn data_extents(f: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    let mut at = 0i64;
    while (at as u64) < size {
        // SAFETY: lseek on a descriptor we own.
        let data = unsafe { libc::lseek(f.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        out.push((data as u64, hole as u64));
        at = hole;
    }
    Ok(out)
}

/// `buf`, grown to hold one step of a `len`-byte transfer.
fn chunk_buf(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let want = len.min(CHUNK);
    if buf.len() < want {
        buf.resize(want, 0);
    }
    &mut buf[..want]
}

/// The virtio block device.
pub struct Block {
    disk: Disk,
    config: Vec<u8>,
    id: [u8; 20],
    /// Data goes between the disk and the guest through this, CHUNK bytes at most at a time
    /// (grown on first use: an idle VM pays nothing for it).
    buf: Vec<u8>,
}

/// The most a request moves between disk and guest in one step.
const CHUNK: usize = 128 * 1024;

impl Block {
    pub fn new(disk: Disk, id: &str) -> Block {
        // Configuration: capacity in sectors (u64), then fields we do not offer.
        let mut config = vec![0u8; 8];
        config.copy_from_slice(&(disk.size / SECTOR).to_le_bytes());
        let mut ident = [0u8; 20];
        let n = id.len().min(20);
        ident[..n].copy_from_slice(&id.as_bytes()[..n]);
        Block {
            disk,
            config,
            id: ident,
            buf: Vec::new(),
        }
    }

    /// One request. Ok(bytes written to the guest, the status byte included); Err when it does
    /// not parse.
    fn request(
        &mut self,
        chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
        mem: &GuestMemoryMmap,
    ) -> Result<u32, Fault> {
        let bad = |what: &str| Fault(format!("block: {what}"));
        let mut r = chain
            .clone()
            .reader(mem)
            .map_err(|e| bad(&format!("readable buffers: {e}")))?;
        let mut w = chain
            .writer(mem)
            .map_err(|e| bad(&format!("writable buffers: {e}")))?;
        let mut header = [0u8; 16];
        r.read_exact(&mut header)
            .map_err(|_| bad("request header shorter than 16 bytes"))?;
        let kind = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let room = w.available_bytes();
        if room == 0 {
            return Err(bad("no writable status byte"));
        }
        let mut status_w = w
            .split_at(room - 1)
            .map_err(|e| bad(&format!("status byte: {e}")))?;
        let in_range = |len: usize| {
            sector
                .checked_mul(SECTOR)
                .and_then(|o| o.checked_add(len as u64))
                .is_some_and(|end| end <= self.disk.size)
        };
        let (status, written): (u8, u32) = match kind {
            T_IN => {
                let len = w.available_bytes();
                if !(len as u64).is_multiple_of(SECTOR) || !in_range(len) {
                    (S_IOERR, 0)
                } else {
                    let buf = chunk_buf(&mut self.buf, len);
                    let mut status = (S_OK, len as u32);
                    for at in (0..len).step_by(CHUNK) {
                        let n = CHUNK.min(len - at);
                        if self
                            .disk
                            .read_at(&mut buf[..n], sector * SECTOR + at as u64)
                            .is_err()
                        {
                            status = (S_IOERR, 0);
                            break;
                        }
                        w.write_all(&buf[..n]).map_err(|e| bad(&format!("{e}")))?;
                    }
                    status
                }
            }
            T_OUT => {
                let len = r.available_bytes();
                if self.disk.read_only || !(len as u64).is_multiple_of(SECTOR) || !in_range(len) {
                    (S_IOERR, 0)
                } else {
                    let buf = chunk_buf(&mut self.buf, len);
                    let mut status = (S_OK, 0);
                    for at in (0..len).step_by(CHUNK) {
                        let n = CHUNK.min(len - at);
                        r.read_exact(&mut buf[..n])
                            .map_err(|e| bad(&format!("{e}")))?;
                        if self
                            .disk
                            .write_at(&buf[..n], sector * SECTOR + at as u64)
                            .is_err()
                        {
                            status = (S_IOERR, 0);
                            break;
                        }
                    }
                    status
                }
            }
            T_FLUSH => match self.disk.flush() {
                Ok(()) => (S_OK, 0),
                Err(_) => (S_IOERR, 0),
            },
            T_GET_ID => {
                let n = w.available_bytes().min(20);
                w.write_all(&self.id[..n])
                    .map_err(|e| bad(&format!("{e}")))?;
                (S_OK, n as u32)
            }
            _ => (S_UNSUPP, 0),
        };
        status_w
            .write_all(&[status])
            .map_err(|e| bad(&format!("status byte: {e}")))?;
        Ok(written + 1)
    }
}

impl Device for Block {
    fn device_type(&self) -> u32 {
        2
    }
    fn features(&self) -> u64 {
        F_VERSION_1 | F_FLUSH | if self.disk.read_only { F_RO } else { 0 }
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256]
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
        super::drain(&mut queues[q], mem, "block", |chain| {
            self.request(chain, mem)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn disk_specs_parse() {
        let d: DiskSpec = "a.img".parse().unwrap();
        assert_eq!(d.mode, Mode::ReadWrite);
        assert_eq!("a.img,ro".parse::<DiskSpec>().unwrap().mode, Mode::ReadOnly);
        assert_eq!(
            "a.img,cow".parse::<DiskSpec>().unwrap().mode,
            Mode::Cow(None)
        );
        assert_eq!(
            "a.img,cow=/x/l".parse::<DiskSpec>().unwrap().mode,
            Mode::Cow(Some("/x/l".into()))
        );
        for s in ["a.img", "a.img,ro", "a.img,cow", "/x/a.img,cow=/x/l"] {
            assert_eq!(s.parse::<DiskSpec>().unwrap().to_string(), s);
        }
        for bad in ["", ",ro", "a.img,rx", "a.img,cow="] {
            assert!(bad.parse::<DiskSpec>().is_err(), "{bad}");
        }
    }

    fn image(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 13 % 241) as u8).collect();
        let p = dir.join("base.img");
        std::fs::write(&p, &bytes).unwrap();
        (p, bytes)
    }

    #[test]
    fn bad_images_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let odd = t.path().join("odd.img");
        std::fs::write(&odd, [0u8; 700]).unwrap();
        for (spec, want) in [
            (format!("{}", odd.display()), "multiple of 512"),
            (format!("{},ro", t.path().display()), "not a regular file"),
            (format!("{}/none", t.path().display()), "No such file"),
        ] {
            let e = Disk::open(&spec.parse().unwrap()).err().unwrap();
            let e = format!(
                "{e}: {}",
                std::error::Error::source(&e).map_or(String::new(), |s| s.to_string())
            );
            assert!(e.contains(want), "{e}");
        }
        // A kept layer of the wrong size is refused, and nothing is made for it.
        let (base, _) = image(t.path(), 8192);
        let layer = t.path().join("layer");
        std::fs::write(&layer, [0u8; 512]).unwrap();
        let spec = format!("{},cow={}", base.display(), layer.display());
        assert!(Disk::open(&spec.parse().unwrap()).is_err());
    }

    proptest! {
        /// Writes through a copy-on-write layer read back like writes to a plain copy; the
        /// base is never touched; a kept layer carries the writes to the next open.
        #[test]
        fn cow_layer_behaves_like_a_private_copy(
            writes in proptest::collection::vec((0usize..40000, 1usize..9000, any::<u8>()), 1..12)
        ) {
            let t = tempfile::tempdir().unwrap();
            let len = 40960;
            let (base, orig) = image(t.path(), len);
            let layer = t.path().join("layer");
            let spec: DiskSpec = format!("{},cow={}", base.display(), layer.display()).parse().unwrap();
            let mut model = orig.clone();
            {
                let mut d = Disk::open(&spec).unwrap();
                for (off, n, b) in &writes {
                    let n = (*n).min(len - off);
                    d.write_at(&vec![*b; n], *off as u64).unwrap();
                    model[*off..off + n].fill(*b);
                }
                let mut got = vec![0u8; len];
                d.read_at(&mut got, 0).unwrap();
                prop_assert!(got == model);
                d.flush().unwrap();
            }
            prop_assert!(std::fs::read(&base).unwrap() == orig);
            let d = Disk::open(&spec).unwrap();
            let mut got = vec![0u8; len];
            d.read_at(&mut got, 0).unwrap();
            prop_assert!(got == model);
        }
    }
}
