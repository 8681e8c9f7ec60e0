//! Macrobenchmarks standing in for the survey's (UI loading, a WMV codec, saving 100 image
//! files to flash): an application's start, cold and warm; a codec encoding and decoding a
//! fixed frame sequence; saving 100 files of 10 KB to 5 MB, each synced, onto the domain's
//! own storage. They append to the figures of [`crate::micro`].

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::micro::{Figure, Figures, TRIES};

/// Where the application and its files are, inside the domain's root.
pub struct Opts {
    /// The dynamically linked application (`cellvisor-app`).
    pub app: String,
    /// A file listing, one per line, every file the application's start reads (the program,
    /// its libraries, its assets): dropped from the page cache before each cold start.
    pub app_files: String,
    /// Where the files are saved.
    pub save_dir: String,
    /// How many files (100 in the survey).
    pub files: usize,
    pub interval: Duration,
}

/// Drop `path`'s pages from the page cache (clean pages no process maps).
fn evict(path: &str) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: fdatasync and fadvise on a descriptor we own.
    let r = unsafe {
        libc::fdatasync(f.as_raw_fd());
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED)
    };
    if r != 0 {
        return Err(format!(
            "{path}: fadvise: {}",
            std::io::Error::from_raw_os_error(r)
        ));
    }
    Ok(())
}

/// Start the application and time it to its first byte of output, ms.
fn start_once(app: &str) -> Result<f64, String> {
    let t = Instant::now();
    let mut child = Command::new(app)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("{app}: {e}"))?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let mut b = [0u8; 1];
    let first = out.read(&mut b).map_err(|e| e.to_string())?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    let st = child.wait().map_err(|e| e.to_string())?;
    if first == 0 || !st.success() {
        return Err(format!("{app} did not start ({st})"));
    }
    Ok(ms)
}

fn app_start(o: &Opts) -> Result<[Vec<f64>; 2], String> {
    let list =
        std::fs::read_to_string(&o.app_files).map_err(|e| format!("{}: {e}", o.app_files))?;
    let files: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
    let mut cold = Vec::new();
    for _ in 0..TRIES {
        for f in &files {
            evict(f)?;
        }
        cold.push(start_once(&o.app)?);
    }
    start_once(&o.app)?;
    let mut warm = Vec::new();
    for _ in 0..TRIES {
        warm.push(start_once(&o.app)?);
    }
    Ok([cold, warm])
}

/// A fixed sequence of frames: a moving gradient with a noisy block, like camera frames.
fn frames(w: usize, h: usize, n: usize) -> Vec<Vec<u8>> {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|k| {
            let mut f = vec![0u8; w * h * 3];
            for y in 0..h {
                for x in 0..w {
                    let i = (y * w + x) * 3;
                    f[i] = ((x + 3 * k) % 256) as u8;
                    f[i + 1] = ((y + 2 * k) % 256) as u8;
                    f[i + 2] = ((x + y + k) % 256) as u8;
                    if (w / 4..w / 2).contains(&x) && (h / 4..h / 2).contains(&y) {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        f[i] = seed as u8;
                    }
                }
            }
            f
        })
        .collect()
}

fn encode(frame: &[u8], w: u32, h: u32, out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    let mut e = png::Encoder::new(&mut *out, w, h);
    e.set_color(png::ColorType::Rgb);
    e.set_depth(png::BitDepth::Eight);
    let mut wr = e.write_header().map_err(|e| e.to_string())?;
    wr.write_image_data(frame).map_err(|e| e.to_string())
}

fn decode(data: &[u8], buf: &mut Vec<u8>) -> Result<(), String> {
    let mut r = png::Decoder::new(data)
        .read_info()
        .map_err(|e| e.to_string())?;
    buf.resize(r.output_buffer_size(), 0);
    r.next_frame(buf).map_err(|e| e.to_string())?;
    Ok(())
}

/// Frames per second encoding and decoding (PNG, the `png` crate), per timing.
fn codec(iv: Duration) -> Result<[Vec<f64>; 2], String> {
    let (w, h) = (320usize, 240usize);
    let seq = frames(w, h, 16);
    let mut encoded = Vec::new();
    for f in &seq {
        let mut out = Vec::new();
        encode(f, w as u32, h as u32, &mut out)?;
        encoded.push(out);
    }
    let mut out = Vec::new();
    let mut k = 0;
    let enc = crate::micro::measure(iv, |n| {
        for _ in 0..n {
            encode(&seq[k % seq.len()], w as u32, h as u32, &mut out)?;
            k += 1;
        }
        Ok(())
    })?;
    let mut buf = Vec::new();
    let dec = crate::micro::measure(iv, |n| {
        for _ in 0..n {
            decode(&encoded[k % encoded.len()], &mut buf)?;
            k += 1;
        }
        Ok(())
    })?;
    let fps = |v: Vec<f64>| v.into_iter().map(|us| 1e6 / us).collect();
    Ok([fps(enc), fps(dec)])
}

/// The sizes of the files to save: log-uniform from 10 KB to 5 MB, fixed seed.
pub fn file_sizes(n: usize) -> Vec<usize> {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
            let (lo, hi) = (10e3f64.ln(), 5e6f64.ln());
            (lo + u * (hi - lo)).exp() as usize
        })
        .collect()
}

/// Save the files (each written whole and fsynced), ms for all; they are removed after.
fn save_files(dir: &str, n: usize) -> Result<f64, String> {
    let sizes = file_sizes(n);
    let max = sizes.iter().copied().max().unwrap_or(0);
    let mut data = vec![0u8; max];
    let mut seed: u64 = 7;
    for chunk in data.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let b = seed.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    let path = |i: usize| format!("{dir}/image-{i:03}.png");
    let t = Instant::now();
    for (i, &len) in sizes.iter().enumerate() {
        let mut f = std::fs::File::create(path(i)).map_err(|e| format!("{}: {e}", path(i)))?;
        f.write_all(&data[..len])
            .map_err(|e| format!("{}: {e}", path(i)))?;
        f.sync_all().map_err(|e| format!("{}: {e}", path(i)))?;
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    for i in 0..n {
        let _ = std::fs::remove_file(path(i));
    }
    Ok(ms)
}

/// Every macrobenchmark, in order.
pub fn run(o: &Opts, progress: &mut dyn FnMut(&str)) -> Result<Vec<Figure>, String> {
    let mut figs = Figures::new(progress);
    let mut fig = |name: &str, unit: &'static str, samples: Vec<f64>| figs.add(name, unit, samples);
    let [cold, warm] = app_start(o)?;
    fig("app_start_cold", "ms", cold);
    fig("app_start_warm", "ms", warm);
    let [enc, dec] = codec(o.interval)?;
    fig("codec_encode", "frames/s", enc);
    fig("codec_decode", "frames/s", dec);
    let ms = save_files(&o.save_dir, o.files)?;
    fig(&format!("save_{}_files", o.files), "ms", vec![ms]);
    Ok(figs.out)
}
