//! `cellvisor-agent`: run inside a domain (it is there at /run/cellvisor/agent) to use the
//! channels the daemon opened for it.
//!
//!   ls                                   the domain's channels
//!   send CHANNEL MESSAGE... [--reply]    send messages (and print one reply to each)
//!   recv CHANNEL [--count N]             print messages as they come (N, or until closed)
//!   echo CHANNEL [--prefix TEXT]         answer every message with TEXT + the message
//!   bench-echo | bench-drive ROUNDS      the two sides of the channel benchmark between
//!                                        domains, over descriptors 3..11 (see `bench`)
//!   micro [--interval-ms 5] [--host-fds R,W | --host-vsock PORT] [--exit-port]
//!         [--exec PROG] [--cpu N] [--macro [--files 100]]
//!                                        LMbench-style microbenchmarks, as JSON (see micro.rs);
//!                                        --macro adds the macrobenchmarks (workload.rs: the
//!                                        application /app/cellvisor-app, files in /data)
//!   hello                                print "Hello world" (what micro's fork+exec runs)
//!   device CLASS -- PROGRAM [ARGS]       run PROGRAM with the domain's device of CLASS
//!                                        (from its port: a DRM card only comes so) as fd 3
//!   hold DEVICE                          keep a device open; say when it stops working and
//!                                        when it works again (a DRM card's master)
//!   probe DEVICE [--count N]             open a device, say what it gives (DRM master, a
//!                                        camera's driver), read N input events; DEVICE is
//!                                        a path, or a class taken from the port
//!   uinput NAME                          (test host) a keyboard made through /dev/uinput:
//!                                        prints its event node, types until killed
//!   rt-probe [--interval-us 1000] [--samples N] [--fifo PRIO] [--cpu N]
//!                                        periodic wake-ups (cyclictest's method): their
//!                                        latency histogram as JSON (see rt.rs)
//!   load cpu|fork|msg|mem|io|all [--threads N] [--group 20]
//!                                        the real-time benchmark's load, until killed
//!   work --duty PCT [--threads N] [--duty-file PATH]
//!                                        the scheduler benchmark's load: PCT of a core's work
//!                                        per thread, the chunks done printed (see duty.rs)
//!   spin FROM_MS TO_MS                   wait for FROM, count loop iterations until TO (epoch
//!                                        ms), print the count (bench's busy domains)
//!   spin-go PORT MS                      (microVM guest) connect to host vsock PORT, wait for
//!                                        a byte, count iterations for MS ms, answer the count
//!   vsock-echo PORT                      (microVM guest) echo one vsock connection on PORT
//!   vsock-send PORT MESSAGE              (microVM guest) send a line to host PORT, print the reply
//!   uds-send PATH PORT MESSAGE           (host) the same to guest PORT through the VMM's socket
//!   uds-echo PATH                        (host) echo one guest connection on PATH (= VMM's PATH_PORT)
//! Common flags: --peer DOMAIN (which channel of that name), --wait SECONDS (for it to open,
//! default 10), --port PATH|vsock (default: /run/cellvisor/port in a container domain, the
//! host's vsock port 1024 in a microVM, where the daemon carries the channel over the stream).

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use agent::pingpong::{self, Case, Side};
use agent::port;

struct Opts {
    args: Vec<String>,
    peer: Option<String>,
    wait: Duration,
    port: port::Port,
    reply: bool,
    count: Option<usize>,
    prefix: String,
    interval_ms: u64,
    host_fds: Option<(i32, i32)>,
    host_vsock: Option<u32>,
    exit_port: bool,
    exec: Option<String>,
    cpu: Option<usize>,
    macros: bool,
    files: usize,
    interval_us: u64,
    samples: u64,
    fifo: Option<i32>,
    threads: usize,
    duty: u32,
    duty_file: Option<String>,
    group: usize,
}

fn parse() -> Result<(String, Opts), String> {
    let mut o = Opts {
        args: Vec::new(),
        peer: None,
        wait: Duration::from_secs(10),
        port: port::Port::here(),
        reply: false,
        count: None,
        prefix: String::new(),
        interval_ms: 5,
        host_fds: None,
        host_vsock: None,
        exit_port: false,
        exec: None,
        cpu: None,
        macros: false,
        files: 100,
        interval_us: 1000,
        samples: 10_000,
        fifo: None,
        threads: 1,
        duty: 100,
        duty_file: None,
        group: 20,
    };
    let mut it = std::env::args().skip(1);
    let cmd = it
        .next()
        .ok_or("usage: cellvisor-agent ls|send|recv|echo|bench-echo|bench-drive ...")?;
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--peer" => o.peer = Some(val("--peer")?),
            "--wait" => {
                let v = val("--wait")?;
                o.wait = Duration::from_secs_f64(
                    v.parse()
                        .map_err(|_| format!("--wait {v:?}: not a number"))?,
                );
            }
            "--port" => o.port = port::Port::parse(&val("--port")?),
            "--reply" => o.reply = true,
            "--count" => {
                let v = val("--count")?;
                o.count = Some(
                    v.parse()
                        .map_err(|_| format!("--count {v:?}: not a number"))?,
                );
            }
            "--prefix" => o.prefix = val("--prefix")?,
            "--interval-ms" => {
                let v = val("--interval-ms")?;
                o.interval_ms = v
                    .parse()
                    .map_err(|_| format!("--interval-ms {v:?}: not a number"))?;
            }
            "--macro" => o.macros = true,
            "--interval-us" => {
                o.interval_us = val("--interval-us")?
                    .parse()
                    .ok()
                    .filter(|&i| i > 0)
                    .ok_or("--interval-us: a positive number of µs")?
            }
            "--samples" => {
                o.samples = val("--samples")?
                    .parse()
                    .map_err(|_| "--samples: a number")?
            }
            "--fifo" => {
                o.fifo = Some(
                    val("--fifo")?
                        .parse()
                        .map_err(|_| "--fifo: a priority 1..99")?,
                )
            }
            "--threads" => {
                o.threads = val("--threads")?
                    .parse()
                    .map_err(|_| "--threads: a number")?
            }
            "--duty" => {
                let v = val("--duty")?;
                o.duty = v
                    .parse()
                    .map_err(|_| format!("--duty {v:?}: a percentage"))?;
            }
            "--duty-file" => o.duty_file = Some(val("--duty-file")?),
            "--group" => o.group = val("--group")?.parse().map_err(|_| "--group: a number")?,
            "--exit-port" => o.exit_port = true,
            "--exec" => o.exec = Some(val("--exec")?),
            "--cpu" => {
                let v = val("--cpu")?;
                o.cpu = Some(v.parse().map_err(|_| format!("--cpu {v:?}: not a CPU"))?);
            }
            "--host-vsock" => {
                let v = val("--host-vsock")?;
                o.host_vsock = Some(
                    v.parse()
                        .map_err(|_| format!("--host-vsock {v:?}: not a port"))?,
                );
            }
            "--files" => {
                let v = val("--files")?;
                o.files = v
                    .parse()
                    .map_err(|_| format!("--files {v:?}: not a number"))?;
            }
            "--host-fds" => {
                let v = val("--host-fds")?;
                let (r, w) = v
                    .split_once(',')
                    .and_then(|(r, w)| Some((r.parse().ok()?, w.parse().ok()?)))
                    .ok_or(format!("--host-fds {v:?}: not R,W"))?;
                o.host_fds = Some((r, w));
            }
            _ => o.args.push(a),
        }
    }
    Ok((cmd, o))
}

fn link(o: &Opts) -> Result<port::Link, String> {
    let name = o.args.first().ok_or("which channel?")?;
    port::get(&o.port, name, o.peer.as_deref(), o.wait).map(|(e, _)| e)
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Descriptor `n`, inherited from whoever started the domain.
fn inherited(n: i32) -> OwnedFd {
    // SAFETY: the benchmark hands descriptors 3..=11 to the domain's first process, which owns
    // them from here on.
    unsafe { OwnedFd::from_raw_fd(n) }
}

/// The benchmark's three transports, from descriptors 3..=10.
fn transports(side: usize) -> Result<Vec<Side>, String> {
    let chan = channel::End::from_fds(
        side,
        inherited(3),
        [inherited(4), inherited(5)],
        [inherited(6), inherited(7)],
    )
    .map_err(|e| e.to_string())?;
    let pipe = Side::Stream {
        rx: inherited(8).into(),
        tx: inherited(9).into(),
    };
    let sock: std::fs::File = inherited(10).into();
    let sock2 = sock.try_clone().map_err(|e| e.to_string())?;
    Ok(vec![
        Side::Chan(chan),
        pipe,
        Side::Stream {
            rx: sock,
            tx: sock2,
        },
    ])
}

const NAMES: [&str; 3] = ["channel", "pipe", "unix"];
const SIZES: [usize; 3] = [1, 4096, 1 << 20];

fn case(size: usize, quick: bool) -> Case {
    let iters = match (size >= 1 << 20, quick) {
        (true, true) => 20,
        (true, false) => 100,
        (false, true) => 500,
        (false, false) => 5000,
    };
    let bulk = match (size == 1 << 20, quick) {
        (false, _) => 0,
        (true, true) => 50,
        (true, false) => 300,
    };
    Case {
        msg: size,
        iters,
        bulk,
    }
}

fn bench_echo() -> Result<(), String> {
    let mut t = transports(1)?;
    let ctl = std::io::BufReader::new(std::fs::File::from(inherited(11)));
    for line in ctl.lines() {
        let line = line.map_err(|e| e.to_string())?;
        let f: Vec<usize> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let [ti, msg, iters, bulk] = f[..] else {
            return Err(format!("bad control line {line:?}"));
        };
        pingpong::echo(
            t.get_mut(ti).ok_or("bad transport")?,
            Case { msg, iters, bulk },
        )?;
    }
    Ok(())
}

fn bench_drive(o: &Opts) -> Result<(), String> {
    let rounds: usize = o.args.first().and_then(|r| r.parse().ok()).unwrap_or(5);
    let quick = o.args.get(1).is_some_and(|q| q == "quick");
    let mut t = transports(0)?;
    let mut ctl = std::fs::File::from(inherited(11));
    let mut cases: Vec<(usize, usize)> = (0..3).flat_map(|ti| SIZES.map(|s| (ti, s))).collect();
    let mut samples = vec![(Vec::new(), Vec::new()); cases.len()];
    let mut order: Vec<usize> = (0..cases.len()).collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..rounds {
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        for &i in &order {
            let (ti, size) = cases[i];
            let c = case(size, quick);
            writeln!(ctl, "{ti} {} {} {}", c.msg, c.iters, c.bulk).map_err(|e| e.to_string())?;
            let (rtt, bw) = pingpong::drive(&mut t[ti], c)?;
            samples[i].0.push(rtt);
            samples[i].1.push(bw);
        }
    }
    let rows: Vec<String> = cases
        .drain(..)
        .zip(samples)
        .map(|((ti, size), (rtt, bw))| {
            let list = |v: &[f64]| v.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(",");
            format!(
                r#"{{"transport":"{}","message_bytes":{size},"rtt_us":[{}],"bandwidth_mib_s":[{}]}}"#,
                NAMES[ti],
                list(&rtt),
                list(&bw)
            )
        })
        .collect();
    say(&format!(
        r#"{{"bench":"channel","rows":[{}]}}"#,
        rows.join(",")
    ));
    Ok(())
}

fn vsock_cmd(cmd: &str, o: &Opts) -> Result<(), String> {
    use agent::vsock;
    let arg = |i: usize| {
        o.args
            .get(i)
            .map(String::as_str)
            .ok_or(format!("{cmd}: missing arguments"))
    };
    let port = |s: &str| s.parse::<u32>().map_err(|_| format!("{s:?}: not a port"));
    match cmd {
        "vsock-echo" => {
            let n = vsock::guest_echo(port(arg(0)?)?)?;
            say(&format!("echoed {n} bytes"));
        }
        "vsock-send" => say(&format!(
            "reply: {}",
            vsock::guest_send(port(arg(0)?)?, arg(1)?)?
        )),
        "uds-send" => say(&format!(
            "reply: {}",
            vsock::host_send(arg(0)?.as_ref(), port(arg(1)?)?, arg(2)?, o.wait)?
        )),
        _ => {
            let n = vsock::host_echo(arg(0)?.as_ref())?;
            say(&format!("echoed {n} bytes"));
        }
    }
    Ok(())
}

fn run() -> Result<(), String> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    if all.first().is_some_and(|c| c == "device") {
        // Everything after `--` is the program's, flags included.
        let class = all
            .get(1)
            .filter(|c| *c != "--")
            .ok_or("device: which class?")?;
        let dash = all
            .iter()
            .position(|a| a == "--")
            .ok_or("usage: device CLASS -- PROGRAM [ARGS]")?;
        return agent::device::run_with(class, &all[dash + 1..]);
    }
    let (cmd, o) = parse()?;
    match cmd.as_str() {
        "ls" => say(&port::list(&o.port)?),
        "rt-probe" => {
            if o.cpu.is_some() {
                agent::micro::pin(o.cpu);
            }
            if let Some(p) = o.fifo {
                agent::rt::set_fifo(p)?;
            }
            say(&agent::rt::probe(o.interval_us, o.samples)?.json());
        }
        "work" => agent::duty::run(o.duty, o.threads, o.duty_file.clone())?,
        "load" => agent::rt::load(
            o.args.first().map_or("all", String::as_str),
            o.threads,
            o.group,
        )?,
        "send" => {
            let mut l = link(&o)?;
            let mut buf = Vec::new();
            for m in &o.args[1..] {
                l.send(m.as_bytes())?;
                say(&format!("sent: {m}"));
                if o.reply {
                    if !l.recv(&mut buf)? {
                        return Err(channel::Error::Closed.to_string());
                    }
                    say(&format!("reply: {}", String::from_utf8_lossy(&buf)));
                }
            }
            // Leave the channel open for the domain's next sender: only the daemon closes it.
            l.keep();
        }
        "recv" => {
            let mut l = link(&o)?;
            let mut buf = Vec::new();
            let mut n = 0;
            while o.count.is_none_or(|c| n < c) && l.recv(&mut buf)? {
                say(&format!("got: {}", String::from_utf8_lossy(&buf)));
                n += 1;
            }
            l.keep();
        }
        "echo" => {
            let mut l = link(&o)?;
            let mut buf = Vec::new();
            while l.recv(&mut buf)? {
                let m = String::from_utf8_lossy(&buf).into_owned();
                say(&format!("got: {m}"));
                l.send(format!("{}{m}", o.prefix).as_bytes())?;
            }
        }
        "micro" => {
            // Our own path as we were run (a chroot may have no /proc), else from /proc.
            let exe = match std::env::args().next().filter(|a| a.starts_with('/')) {
                Some(a) => a,
                None => std::env::current_exe()
                    .map_err(|e| format!("finding this program: {e}"))?
                    .display()
                    .to_string(),
            };
            // In a microVM the host's echo is a vsock stream, read and written both ways.
            let stream = match o.host_vsock {
                Some(p) => Some(agent::vsock::connect_host(p)?),
                None => None,
            };
            let host = match &stream {
                Some(s) => Some((s.as_raw_fd(), s.as_raw_fd())),
                None => o.host_fds,
            };
            let exec = match &o.exec {
                Some(p) => vec![p.clone()],
                None => vec![exe, "hello".into()],
            };
            let opts = agent::micro::Opts {
                interval: Duration::from_millis(o.interval_ms.max(1)),
                exec,
                host,
                exit_port: o.exit_port,
                cpu: o.cpu,
            };
            let mut figs = agent::micro::run(&opts, &mut |name| eprintln!("micro: {name}"))?;
            if o.macros {
                let w = agent::workload::Opts {
                    app: "/app/cellvisor-app".into(),
                    app_files: "/app/files".into(),
                    save_dir: "/data".into(),
                    files: o.files,
                    interval: opts.interval,
                };
                figs.extend(agent::workload::run(&w, &mut |name| {
                    eprintln!("macro: {name}")
                })?);
            }
            say(&agent::micro::json(&figs));
        }
        "hello" => say("Hello world"),
        "hold" | "probe" | "uinput" => {
            let arg = o.args.first().ok_or(format!("{cmd}: which device?"))?;
            match cmd.as_str() {
                "hold" => agent::device::hold(arg)?,
                "probe" => agent::device::probe(arg, o.count.unwrap_or(0))?,
                _ => agent::device::uinput(arg)?,
            }
        }
        "spin" => {
            let ms = |i: usize| -> Result<u64, String> {
                o.args
                    .get(i)
                    .and_then(|v| v.parse().ok())
                    .ok_or("spin FROM_MS TO_MS (milliseconds since the epoch)".to_string())
            };
            say(&agent::micro::spin(ms(0)?, ms(1)?).to_string());
        }
        "spin-go" => {
            let arg = |i: usize, what: &str| -> Result<u64, String> {
                o.args
                    .get(i)
                    .and_then(|v| v.parse().ok())
                    .ok_or(format!("spin-go PORT MS: {what}?"))
            };
            let port = u32::try_from(arg(0, "port")?).map_err(|e| e.to_string())?;
            let link = agent::vsock::connect_host(port)?;
            say(&agent::micro::spin_on_signal(&link, arg(1, "milliseconds")?)?.to_string());
        }
        "bench-echo" => bench_echo()?,
        "bench-drive" => bench_drive(&o)?,
        "vsock-echo" | "vsock-send" | "uds-send" | "uds-echo" => vsock_cmd(&cmd, &o)?,
        c => return Err(format!("unknown command {c:?}")),
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("cellvisor-agent: {e}");
        std::process::exit(1);
    }
}
