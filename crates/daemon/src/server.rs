//! cellvisord's two kinds of socket: the REST API (one Unix socket, root or one group only,
//! described by `docs/api/openapi.json`), and one *port* per domain, which the domain sees at
//! `/run/cellvisor/port` and nobody else sees: there a domain's program asks for its side of
//! an open channel and receives it as descriptors (a microVM's guest, over vsock, receives the
//! channel carried as a stream instead).
//!
//! The daemon runs on one thread: every request is handled to the end before the next, so
//! the platform needs no finer locking, and starting a domain may fork. The only other threads
//! are the bridges carrying a microVM's channels over its port stream; they hold their own
//! descriptors and touch no platform state.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use channel::stream::VSOCK_PORT;
use container::backend::ContainerBackend;
use microvm::{MicrovmBackend, VSOCK_SOCKET};

use crate::backends::Backends;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::platform::{ApiError, Platform};
use crate::port::PortOp;

type Shared = Arc<Mutex<Platform<Domains>>>;
/// The daemon's domains: containers, and microVMs jailed in containers.
type Domains = Backends<ContainerBackend, MicrovmBackend>;

/// How the daemon is set up.
pub struct Config {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// Members of this group may use the API too.
    pub group: Option<u32>,
    pub profile: domain::Profile,
    pub agent: Option<PathBuf>,
    /// Prefix of the domains' container ids (and cgroups).
    pub prefix: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            Json(json!({"error": domain::one_line(&self.to_string())})),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Platform<Domains>> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Who is on the other end of an API connection.
#[derive(Clone, Copy, Debug)]
struct Peer {
    uid: u32,
    gid: u32,
    pid: i32,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, UnixListener>>
    for Peer
{
    fn connect_info(s: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        match s.io().peer_cred() {
            Ok(c) => Peer {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid().unwrap_or(0),
            },
            Err(_) => Peer {
                uid: u32::MAX,
                gid: u32::MAX,
                pid: 0,
            },
        }
    }
}

fn in_group(p: &Peer, group: u32) -> bool {
    if p.gid == group {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{}/status", p.pid))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(group)))
}

/// The whole API, as `docs/api/openapi.json` describes it.
pub fn router(state: Shared, group: Option<u32>) -> Router {
    let api = Router::new()
        .route("/v1/version", get(version))
        .route("/v1/domains", get(domains))
        .route("/v1/domains/{name}", get(domain_one))
        .route("/v1/domains/{name}/up", post(up_one))
        .route("/v1/domains/{name}/down", post(down_one))
        .route("/v1/domains/{name}/logs", get(logs))
        .route(
            "/v1/domains/{name}/balloon",
            get(balloon_get).put(balloon_put),
        )
        .route("/v1/up", post(up_all))
        .route("/v1/down", post(down_all))
        .route("/v1/foreground", get(fg_get).put(fg_put))
        .route("/v1/channels", get(channels).post(channel_open))
        .route("/v1/channels/{id}", axum::routing::delete(channel_close))
        .route("/v1/stats", get(stats))
        .route("/v1/scheduler", get(sched_get).put(sched_put))
        .route("/v1/domains/{name}/cpus", axum::routing::put(place))
        .fallback(|| async { ApiError::NotFound("no such API path".into()) })
        .with_state(state);
    api.layer(axum::middleware::from_fn(
        move |ci: ConnectInfo<Peer>, req: Request, next: Next| async move {
            let p = ci.0;
            if p.uid == 0 || group.is_some_and(|g| in_group(&p, g)) {
                next.run(req).await
            } else {
                ApiError::Forbidden(format!("uid {} may not use cellvisord", p.uid)).into_response()
            }
        },
    ))
}

async fn version(State(s): State<Shared>) -> ApiResult {
    let p = lock(&s);
    ok(json!({"version": env!("CARGO_PKG_VERSION"), "profile": p.profile.name}))
}

async fn domains(State(s): State<Shared>) -> ApiResult {
    ok(lock(&s).list())
}

async fn domain_one(State(s): State<Shared>, UrlPath(name): UrlPath<String>) -> ApiResult {
    ok(lock(&s).info(&name)?)
}

async fn up_one(State(s): State<Shared>, UrlPath(name): UrlPath<String>) -> ApiResult {
    ok(lock(&s).up(&name)?)
}

/// A query that does not parse, answered as every refusal is (JSON, one line), not axum's
/// plain text.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

#[derive(Deserialize)]
struct DownQuery {
    #[serde(default)]
    purge: bool,
}

async fn down_one(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    q: Result<Query<DownQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    ok(lock(&s).down(&name, q.purge)?)
}

/// Bring up every domain that is not up: realtime ones first, the foreground one next.
async fn up_all(State(s): State<Shared>) -> ApiResult {
    let mut p = lock(&s);
    let mut order: Vec<(u8, String)> = p
        .profile
        .domains
        .iter()
        .map(|d| {
            let rank = if d.role == domain::Role::Realtime {
                0
            } else if p.profile.foreground.as_deref() == Some(&d.name) {
                1
            } else {
                2
            };
            (rank, d.name.clone())
        })
        .collect();
    order.sort();
    let running = p.running()?;
    for (_, n) in order {
        if !running.contains(&n) {
            p.up(&n)?;
        }
    }
    ok(p.list())
}

async fn down_all(
    State(s): State<Shared>,
    q: Result<Query<DownQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let mut p = lock(&s);
    let names: Vec<String> = p.profile.domains.iter().map(|d| d.name.clone()).collect();
    for n in names {
        if p.backend_exists(&n) || q.purge {
            p.down(&n, q.purge)?;
        }
    }
    ok(p.list())
}

async fn fg_get(State(s): State<Shared>) -> ApiResult {
    ok(json!({"foreground": lock(&s).foreground()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FgBody {
    name: String,
}

async fn fg_put(
    State(s): State<Shared>,
    body: Result<Json<FgBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    ok(lock(&s).set_foreground(&b.name)?)
}

async fn channels(State(s): State<Shared>) -> ApiResult {
    ok(lock(&s).channels())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    from: String,
    to: String,
    channel: String,
    /// Bytes, or a size like "64K"; the rule's size if absent.
    buffer: Option<Value>,
}

async fn channel_open(
    State(s): State<Shared>,
    body: Result<Json<OpenBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let buffer =
        match &b.buffer {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .ok_or_else(|| ApiError::BadRequest(format!("buffer {n} is not a size")))?,
            ),
            Some(Value::String(t)) => Some(domain::profile::parse_size(t).ok_or_else(|| {
                ApiError::BadRequest(format!("buffer {t:?} is not a size like 64K"))
            })?),
            Some(v) => return Err(ApiError::BadRequest(format!("buffer {v} is not a size"))),
        };
    let c = lock(&s).open_channel(&b.from, &b.to, &b.channel, buffer)?;
    OPENED.notify_waiters();
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

async fn channel_close(State(s): State<Shared>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("channel id {id:?} is not a number")))?;
    lock(&s).close_channel(id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    offset: u64,
}

async fn logs(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult {
    let q = query(q)?;
    let (text, next) = lock(&s).logs(&name, q.offset)?;
    ok(json!({"text": text, "offset": next}))
}

async fn balloon_get(State(s): State<Shared>, UrlPath(name): UrlPath<String>) -> ApiResult {
    ok(lock(&s).balloon(&name, None)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BalloonBody {
    size_mib: u64,
}

async fn balloon_put(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<BalloonBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    ok(lock(&s).balloon(&name, Some(b.size_mib))?)
}

async fn stats(State(s): State<Shared>) -> ApiResult {
    let p = lock(&s);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let domains: Vec<Value> = p
        .stats()?
        .into_iter()
        .map(|(n, st)| json!({"name": n, "cpu_ns": st.cpu_ns, "memory_bytes": st.memory_bytes, "pids": st.pids}))
        .collect();
    ok(json!({"time_ns": now, "domains": domains}))
}

async fn sched_get(State(s): State<Shared>) -> ApiResult {
    ok(lock(&s).scheduler_info())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchedBody {
    policy: String,
}

async fn sched_put(
    State(s): State<Shared>,
    body: Result<Json<SchedBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let policy = domain::profile::SchedPolicy::parse(&b.policy).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "policy {:?} is not one of balance, power, fixed",
            b.policy
        ))
    })?;
    ok(lock(&s).set_policy(policy)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceBody {
    cpus: String,
}

async fn place(
    State(s): State<Shared>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<PlaceBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    ok(lock(&s).place_on(&name, &b.cpus)?)
}

/// This thread's CPU time, ns.
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The scheduler's period: read /proc/stat, tick the platform, count what it cost. On the
/// daemon's one thread, between requests.
async fn sched_loop(s: Shared) {
    let start = std::time::Instant::now();
    loop {
        let period = lock(&s).sched_period_ms();
        tokio::time::sleep(Duration::from_millis(period)).await;
        let c0 = thread_cpu_ns();
        let cpus = scheduler::sample::read_proc_stat().unwrap_or_default();
        let pressure = scheduler::sample::memory_pressure();
        let mut p = lock(&s);
        p.tick(start.elapsed().as_millis() as u64, cpus);
        p.tick_cost(thread_cpu_ns().saturating_sub(c0));
        if let Some(pct) = pressure {
            p.memory_tick(pct);
        }
    }
}

/// Woken whenever a channel is opened, for the ports' waiting `get`s.
static OPENED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// One request on a domain's port. A container domain's port answers a `get` with the end's
/// descriptors; a microVM's (`stream`, reached from the guest over vsock) answers with
/// `"stream": true` and then carries the channel itself, as frames ([`channel::stream`]).
async fn port_session(s: Shared, who: String, stream: UnixStream, framed: bool) {
    let mut r = BufReader::new(stream);
    let mut line = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut limited = (&mut r).take(crate::port::MAX_LINE as u64);
        limited.read_until(b'\n', &mut line).await
    })
    .await;
    // Bytes the peer sent after its request line: the first frames, in stream mode.
    let pending = r.buffer().to_vec();
    let stream = r.into_inner();
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    let reply = |v: Value, fds: &[i32]| {
        let mut msg = v.to_string();
        msg.push('\n');
        let _ = channel::handoff::send(stream.as_raw_fd(), msg.as_bytes(), fds);
    };
    let op = match crate::port::parse(&line) {
        Ok(op) => op,
        Err(e) => return reply(json!({ "error": e }), &[]),
    };
    match op {
        PortOp::Ls => {
            let mine: Vec<_> = lock(&s)
                .channels()
                .iter()
                .filter(|c| c.from == who || c.to == who)
                .cloned()
                .collect();
            reply(json!({"domain": who, "channels": mine}), &[]);
        }
        PortOp::Device { class } => {
            // Sent under the platform's lock: no switch comes between the open and the
            // send (the daemon keeps a copy to revoke it through, even unreceived).
            let mut p = lock(&s);
            match p.take_device(&who, &class) {
                Ok((node, fd)) => reply(json!({"device": class, "node": node}), &[fd.as_raw_fd()]),
                Err(e) => reply(json!({"error": e.to_string()}), &[]),
            }
        }
        PortOp::Get {
            channel: ch,
            peer,
            wait,
        } => {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let opened = OPENED.notified();
                tokio::pin!(opened);
                opened.as_mut().enable();
                let r = lock(&s).take_end(&who, &ch, peer.as_deref());
                match r {
                    Ok((c, side, fds)) => {
                        let mut answer = json!({"channel": c.channel, "id": c.id, "side": side,
                                   "peer": if side == 0 { &c.to } else { &c.from }, "buffer": c.buffer});
                        if !framed {
                            return reply(answer, &fds);
                        }
                        answer["stream"] = json!(true);
                        return bridge(stream, side, fds, pending, answer);
                    }
                    Err(ApiError::NotFound(_)) if tokio::time::Instant::now() < deadline => {
                        // Wait for a channel to open, the deadline, or the domain hanging up.
                        tokio::select! {
                            _ = opened => {}
                            _ = tokio::time::sleep_until(deadline) => {}
                            _ = stream.readable() => {
                                let mut b = [0u8; 1];
                                if matches!(stream.try_read(&mut b), Ok(0)) {
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => return reply(json!({"error": e.to_string()}), &[]),
                }
            }
        }
    }
}

/// Carry a channel over a microVM's port stream: `answer` first, then the domain's side of
/// the channel (rebuilt from the daemon's descriptors, one end per direction) bridged to the
/// stream on a thread of its own until the guest hangs up or the channel closes.
fn bridge(stream: UnixStream, side: usize, fds: [RawFd; 5], pending: Vec<u8>, answer: Value) {
    use std::io::Write;
    let start = || -> std::io::Result<_> {
        let end = || {
            // SAFETY: the platform's end holds `fds` open: we run on the daemon's only
            // thread, before anything else can close the channel.
            unsafe { channel::stream::dup_from_raw(side, fds) }.map_err(std::io::Error::other)
        };
        let (tx, rx) = (end()?, end()?);
        let mut s = stream.into_std()?;
        s.set_nonblocking(false)?;
        s.write_all(format!("{answer}\n").as_bytes())?;
        Ok((tx, rx, s))
    };
    let started = start().and_then(|(tx, rx, s)| {
        std::thread::Builder::new()
            .name("bridge".into())
            .spawn(move || channel::stream::bridge(tx, rx, s, pending))
    });
    if let Err(e) = started {
        eprintln!("cellvisord: bridging channel {}: {e}", answer["id"]);
    }
}

/// Listen on every domain's port.
fn bind_ports(s: &Shared) -> std::io::Result<Vec<PathBuf>> {
    let names: Vec<(String, PathBuf, bool)> = {
        let p = lock(s);
        p.profile
            .domains
            .iter()
            .map(|d| {
                let vm = d.backend() == domain::BackendKind::Microvm;
                (d.name.clone(), p.run_dir(&d.name), vm)
            })
            .collect()
    };
    let mut paths = Vec::new();
    for (name, dir, vm) in names {
        std::fs::create_dir_all(&dir)?;
        // A container domain's port; a microVM's guest reaches its port over vsock, which its
        // VMM connects to the socket `vsock_1024` beside its own.
        let (file, framed) = if vm {
            (format!("{VSOCK_SOCKET}_{VSOCK_PORT}"), true)
        } else {
            ("port".to_string(), false)
        };
        let path = dir.join(file);
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path)?;
        paths.push(path);
        let s = s.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                tokio::spawn(port_session(s.clone(), name.clone(), stream, framed));
            }
        });
    }
    Ok(paths)
}

/// Hold `<state>/lock` for the daemon's life: one daemon per state directory.
fn take_lock(dir: &Path) -> Result<std::fs::File, String> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        return Err(format!(
            "another cellvisord (pid {}) is using {}",
            pid.trim(),
            dir.display()
        ));
    }
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = write!(f, "{}", std::process::id());
    Ok(f)
}

/// Run the daemon until SIGTERM or SIGINT. Domains keep running after it exits.
pub async fn run(mut cfg: Config) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.state_dir)
        .map_err(|e| format!("creating {}: {e}", cfg.state_dir.display()))?;
    cfg.state_dir = std::fs::canonicalize(&cfg.state_dir)
        .map_err(|e| format!("{}: {e}", cfg.state_dir.display()))?;
    let _ = std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o700));
    let lock_file = take_lock(&cfg.state_dir)?;
    container::cgroups::cache_hierarchies();
    let mut made = Vec::new();
    let r = serve(&mut cfg, &mut made).await;
    for p in made {
        let _ = std::fs::remove_file(p);
    }
    // Nothing up and nothing kept (no container state, no domain directory): leave no state.
    let empty = |d: &str| {
        std::fs::read_dir(cfg.state_dir.join(d))
            .map(|mut e| e.next().is_none())
            .unwrap_or(true)
    };
    if empty("oci") && empty("domains") {
        // Nothing up: no channel to keep, the interrupts go back where they were.
        crate::keeper::stop(&cfg.state_dir);
        crate::placement::restore(&cfg.state_dir);
        let _ = std::fs::remove_dir_all(&cfg.state_dir);
    }
    drop(lock_file);
    r
}

/// Open the platform, bind the sockets (recorded in `made`, for removal), and answer
/// requests until SIGTERM or SIGINT.
async fn serve(cfg: &mut Config, made: &mut Vec<PathBuf>) -> Result<(), String> {
    // Taken before the socket exists: a SIGTERM as soon as a client can connect still stops
    // the daemon cleanly (its state and socket removed), not by the signal's default action.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    // microvm domains run `cellvisor vm run`, the binary installed beside this one.
    let vmm = std::env::current_exe()
        .ok()
        .map(|e| e.with_file_name("cellvisor"))
        .filter(|p| p.is_file());
    let backend = Backends::new(
        &cfg.profile,
        ContainerBackend::new(&cfg.state_dir, &cfg.prefix),
        MicrovmBackend::new(ContainerBackend::new(&cfg.state_dir, &cfg.prefix), vmm)
            .with_run_root(&cfg.state_dir.join("run")),
    );
    let moved = crate::placement::keep_off(&cfg.profile, &cfg.state_dir)?;
    if moved.moved > 0 || moved.refused > 0 {
        eprintln!("cellvisord: {moved}");
    }
    let profile = cfg.profile.clone();
    let online = container::cgroups::rt::online_cpus();
    // The channels are held over a restart by the keeper, `cellvisord --keeper`.
    let keeper = std::env::current_exe()
        .map(|exe| crate::keeper::Keeper::new(&cfg.state_dir, &exe))
        .map_err(|e| format!("finding cellvisord itself: {e}"))?;
    let platform = Platform::open(
        profile,
        backend,
        &cfg.state_dir,
        cfg.agent.clone(),
        online,
        Some(Box::new(keeper)),
    )
    .map_err(|e| e.to_string())?;
    let shared: Shared = Arc::new(Mutex::new(platform));
    tokio::spawn(sched_loop(shared.clone()));
    made.extend(bind_ports(&shared).map_err(|e| format!("binding the domains' ports: {e}"))?);
    if let Some(parent) = cfg.socket.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    if std::fs::symlink_metadata(&cfg.socket).is_ok() {
        // We hold the state lock; a socket left here by a killed daemon of ours is stale.
        // So is one that still answers when the server that listened on it is dead: a
        // domain's starting process forked by that daemon may hold its listener a moment
        // (the kernel names the listener's maker as the peer of a connection to it).
        if let Ok(c) = UnixStream::connect(&cfg.socket).await {
            let maker_alive = c
                .peer_cred()
                .ok()
                .and_then(|cred| cred.pid())
                .is_none_or(|pid| {
                    // SAFETY: kill with signal 0 only asks whether the process exists.
                    let r = unsafe { libc::kill(pid, 0) };
                    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
                });
            if maker_alive {
                return Err(format!(
                    "{} is in use by another server",
                    cfg.socket.display()
                ));
            }
        }
        let _ = std::fs::remove_file(&cfg.socket);
    }
    // Created 0600 from the start (no window with looser permissions); the daemon has one
    // thread, so the umask change affects nothing else.
    // SAFETY: umask only swaps the process's file mode mask.
    let old_mask = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(&cfg.socket);
    // SAFETY: as above, restoring it.
    unsafe { libc::umask(old_mask) };
    let listener = bound.map_err(|e| format!("binding {}: {e}", cfg.socket.display()))?;
    made.push(cfg.socket.clone());
    let mode = if cfg.group.is_some() { 0o660 } else { 0o600 };
    if let Some(g) = cfg.group {
        let c = container::util::cstring(&cfg.socket);
        // SAFETY: chown of a path we just created, with a valid C string.
        unsafe { libc::chown(c.as_ptr(), 0, g) };
    }
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", cfg.socket.display()))?;
    eprintln!("cellvisord: listening on {}", cfg.socket.display());
    let app = router(shared.clone(), cfg.group);
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    let r = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| e.to_string());
    // The channels stay open for the domains, held by the keeper alone.
    lock(&shared).detach();
    r
}

/// The routes the server answers, for the OpenAPI check.
pub const ROUTES: [(&str, &str); 19] = [
    ("get", "/v1/version"),
    ("get", "/v1/domains"),
    ("get", "/v1/domains/{name}"),
    ("post", "/v1/domains/{name}/up"),
    ("post", "/v1/domains/{name}/down"),
    ("get", "/v1/domains/{name}/logs"),
    ("post", "/v1/up"),
    ("post", "/v1/down"),
    ("get", "/v1/foreground"),
    ("put", "/v1/foreground"),
    ("get", "/v1/channels"),
    ("post", "/v1/channels"),
    ("delete", "/v1/channels/{id}"),
    ("get", "/v1/stats"),
    ("get", "/v1/scheduler"),
    ("put", "/v1/scheduler"),
    ("put", "/v1/domains/{name}/cpus"),
    ("get", "/v1/domains/{name}/balloon"),
    ("put", "/v1/domains/{name}/balloon"),
];
