//! Property tests of the platform over random sequences of API calls (and daemon restarts,
//! and scheduler periods with random loads), on an in-memory backend: no sequence yields a
//! channel the policy forbids, hands a domain another domain's channel, leaves the
//! foreground's devices and weights inconsistent, puts a domain on a realtime domain's core or
//! outside its own, or loses a placement or a channel over a restart (the channels' ends are
//! kept in an in-memory store, as the keeper process keeps them; a restart may also lose it).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use daemon::keeper::EndStore;
use daemon::platform::{ApiError, Platform};
use domain::{Backend, BackendError, Decision, Domain, DomainStats, DomainStatus, Role, UpOpts};
use proptest::prelude::*;

#[derive(Debug, Clone, Default)]
struct FakeDomain {
    frozen: bool,
    weight: u32,
    devices: BTreeSet<PathBuf>,
    /// Its cpuset, as the scheduler last set it (empty: the profile's).
    cpus: Vec<u32>,
    /// Its CPU time per CPU, as the test makes it run.
    cpu_ns: Vec<u64>,
}

/// Domains in memory; clones share them (a restarted daemon sees the same domains).
#[derive(Clone, Default)]
struct Fake(Rc<RefCell<BTreeMap<String, FakeDomain>>>);

fn nope(name: &str) -> BackendError {
    BackendError::NotRunning(name.to_string())
}

impl Backend for Fake {
    fn up(&self, d: &Domain, o: &UpOpts) -> Result<(), BackendError> {
        let mut m = self.0.borrow_mut();
        if m.contains_key(&d.name) {
            return Err(BackendError::AlreadyUp(d.name.clone()));
        }
        m.insert(
            d.name.clone(),
            FakeDomain {
                frozen: false,
                weight: d.cpu_weight,
                devices: o.devices.iter().cloned().collect(),
                cpus: Vec::new(),
                cpu_ns: vec![0; CPUS.len()],
            },
        );
        Ok(())
    }
    fn down(&self, name: &str) -> Result<(), BackendError> {
        self.0.borrow_mut().remove(name);
        Ok(())
    }
    fn destroy(&self, name: &str) -> Result<(), BackendError> {
        self.down(name)
    }
    fn status(&self, name: &str) -> Result<DomainStatus, BackendError> {
        Ok(match self.0.borrow().get(name) {
            None => DomainStatus::Stopped,
            Some(d) if d.frozen => DomainStatus::Frozen,
            Some(_) => DomainStatus::Running,
        })
    }
    fn freeze(&self, name: &str, frozen: bool) -> Result<(), BackendError> {
        let mut m = self.0.borrow_mut();
        m.get_mut(name).ok_or_else(|| nope(name))?.frozen = frozen;
        Ok(())
    }
    fn set_cpu_weight(&self, name: &str, weight: u32) -> Result<(), BackendError> {
        let mut m = self.0.borrow_mut();
        m.get_mut(name).ok_or_else(|| nope(name))?.weight = weight;
        Ok(())
    }
    fn set_device(&self, name: &str, node: &Path, present: bool) -> Result<(), BackendError> {
        let mut m = self.0.borrow_mut();
        let d = m.get_mut(name).ok_or_else(|| nope(name))?;
        if d.frozen {
            return Err(BackendError::invalid(
                name,
                "a frozen domain cannot change devices",
            ));
        }
        if present {
            d.devices.insert(node.to_path_buf());
        } else {
            d.devices.remove(node);
        }
        Ok(())
    }
    fn stats(&self, _: &str) -> Result<DomainStats, BackendError> {
        Ok(DomainStats::default())
    }
    fn set_cpus(&self, name: &str, cpus: &[u32]) -> Result<(), BackendError> {
        let mut m = self.0.borrow_mut();
        m.get_mut(name).ok_or_else(|| nope(name))?.cpus = cpus.to_vec();
        Ok(())
    }
    fn cpu_time(&self, name: &str) -> Result<domain::CpuTime, BackendError> {
        let m = self.0.borrow();
        Ok(domain::CpuTime::PerCpu(
            m.get(name).ok_or_else(|| nope(name))?.cpu_ns.clone(),
        ))
    }
    fn pid(&self, name: &str) -> Option<i32> {
        self.0.borrow().contains_key(name).then_some(1)
    }
    fn exists(&self, name: &str) -> bool {
        self.0.borrow().contains_key(name)
    }
    fn log_path(&self, _: &str) -> Option<PathBuf> {
        None
    }
}

/// The phone profile, with device nodes every host has, and a second "messages" rule so a
/// domain can have two channels of one name.
fn profile(background: &str) -> domain::Profile {
    let text = domain::DEFAULT_PROFILE
        .replace("background = \"throttle\"", &format!("background = \"{background}\""))
        .replace("\"/dev/vcs1\"", "\"/dev/null\"")
        .replace("\"/dev/tty1\"", "\"/dev/zero\"")
        .replace("\"/dev/vcsa1\"", "\"/dev/full\"")
        + "\n[[allow]]\nfrom = \"modem\"\nto = \"common\"\nchannel = \"messages\"\nbuffer = \"4K\"\n";
    domain::profile::parse(&text, "test.toml", Path::new("/")).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Up(&'static str),
    Down(&'static str, bool),
    Fg(&'static str),
    Open(&'static str, &'static str, &'static str, Option<u64>),
    Close(u64),
    Take(&'static str, &'static str, Option<&'static str>),
    /// The daemon restarts; with `false`, its keeper of channels was lost too.
    Restart(bool),
    Sched(domain::profile::SchedPolicy),
    Place(&'static str, &'static str),
    /// A scheduler period: each running domain used this share (‰) of each of its cores.
    Tick(Vec<u16>),
}

/// The host's CPUs in these tests; the modem (realtime) owns cpu 1.
const CPUS: [u32; 4] = [0, 1, 2, 3];
const LISTS: [&str; 6] = ["0", "1", "2-3", "0,2", "0-3", "x"];

const DOMAINS: [&str; 4] = ["trusted", "common", "modem", "ghost"];
const CHANNELS: [&str; 3] = ["messages", "telephony", "x"];

fn op() -> impl Strategy<Value = Op> {
    let d = || prop::sample::select(DOMAINS.to_vec());
    let c = || prop::sample::select(CHANNELS.to_vec());
    let buf = prop::option::of(prop::sample::select(vec![
        3000u64,
        4096,
        16384,
        65536,
        1 << 20,
    ]));
    prop_oneof![
        3 => d().prop_map(Op::Up),
        1 => (d(), any::<bool>()).prop_map(|(d, p)| Op::Down(d, p)),
        2 => d().prop_map(Op::Fg),
        4 => (d(), d(), c(), buf).prop_map(|(a, b, c, s)| Op::Open(a, b, c, s)),
        1 => (0u64..6).prop_map(Op::Close),
        4 => (d(), c(), prop::option::of(d())).prop_map(|(a, c, p)| Op::Take(a, c, p)),
        1 => any::<bool>().prop_map(Op::Restart),
        1 => prop::sample::select(domain::profile::SchedPolicy::ALL.to_vec()).prop_map(Op::Sched),
        2 => (d(), prop::sample::select(LISTS.to_vec())).prop_map(|(d, l)| Op::Place(d, l)),
        4 => prop::collection::vec(0u16..1000, 16).prop_map(Op::Tick),
    ]
}

/// The keeper in memory: copies of each channel's descriptors, by id; clones share them (a
/// restarted daemon finds what the last one kept).
#[derive(Clone, Default)]
struct Store(Arc<Mutex<BTreeMap<u64, Vec<OwnedFd>>>>);

fn dup(fd: RawFd) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC of an open descriptor; the copy is new and ours.
    unsafe { OwnedFd::from_raw_fd(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0)) }
}

impl EndStore for Store {
    fn put(&mut self, id: u64, fds: [RawFd; 5]) -> std::io::Result<()> {
        self.0.lock().unwrap().insert(id, fds.map(dup).into());
        Ok(())
    }
    fn forget(&mut self, id: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().remove(&id);
        Ok(())
    }
    fn list(&mut self) -> std::io::Result<Vec<(u64, [OwnedFd; 5])>> {
        let m = self.0.lock().unwrap();
        Ok(m.iter()
            .map(|(id, f)| (*id, std::array::from_fn(|i| dup(f[i].as_raw_fd()))))
            .collect())
    }
}

fn check_invariants(p: &Platform<Fake>, fake: &Fake, store: &Store) {
    // The keeper holds exactly the channels whose ends the daemon hands out.
    let kept: BTreeSet<u64> = store.0.lock().unwrap().keys().copied().collect();
    let live: BTreeSet<u64> = p
        .channels()
        .iter()
        .filter(|c| !c.adopted)
        .map(|c| c.id)
        .collect();
    assert_eq!(kept, live);
    let prof = &p.profile;
    let running = p.running().unwrap();
    let mut keys = BTreeSet::new();
    for c in p.channels() {
        // Every open channel is one the policy allows, between two domains that are up.
        assert_eq!(
            prof.policy
                .check(&c.from, &c.to, &c.channel, Some(c.buffer)),
            Decision::Allow { buffer: c.buffer },
            "{c:?}"
        );
        assert!(
            running.contains(&c.from) && running.contains(&c.to),
            "{c:?}"
        );
        assert!(
            keys.insert((c.from.clone(), c.to.clone(), c.channel.clone())),
            "twice: {c:?}"
        );
    }
    // One foreground at most, up and not realtime; it alone holds exclusive devices.
    if let Some(f) = p.foreground() {
        assert!(running.iter().any(|r| r == f), "foreground {f} is not up");
        assert_ne!(prof.domain(f).unwrap().role, Role::Realtime);
    }
    let m = fake.0.borrow();
    for (name, st) in m.iter() {
        // Placed within its own cores, never on the modem's, never on none; as the platform
        // says it is.
        let allowed = p.allowed(name);
        if name == "modem" {
            assert!(
                st.cpus.is_empty(),
                "the realtime domain was moved: {:?}",
                st.cpus
            );
        } else if st.cpus.is_empty() {
            assert_eq!(p.cpus_of(name), allowed, "{name}");
        } else {
            assert!(
                st.cpus.iter().all(|c| allowed.contains(c)),
                "{name} on {:?}",
                st.cpus
            );
            assert!(!st.cpus.contains(&1), "{name} on the realtime core");
            assert_eq!(p.cpus_of(name), st.cpus, "{name}");
        }
        let d = prof.domain(name).unwrap();
        let excl: BTreeSet<PathBuf> = prof.exclusive_nodes(d).into_iter().collect();
        let held: BTreeSet<PathBuf> = st.devices.intersection(&excl).cloned().collect();
        if p.foreground() == Some(name.as_str()) {
            assert_eq!(held, excl, "{name} in the foreground");
            assert!(!st.frozen);
            assert_eq!(st.weight, d.cpu_weight);
        } else {
            assert!(held.is_empty(), "{name} in the background holds {held:?}");
            if d.role == Role::Realtime {
                assert!(!st.frozen);
                assert_eq!(st.weight, d.cpu_weight);
            } else if prof.background == domain::profile::BackgroundMode::Freeze {
                assert!(st.frozen, "{name} in the background is not frozen");
            } else {
                assert_eq!(st.weight, prof.background_cpu_weight, "{name}");
            }
        }
    }
}

fn run(ops: Vec<Op>, background: &str) {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let mut store = Store::default();
    let open = |prof, store: &Store| {
        let store = Some(Box::new(store.clone()) as Box<dyn EndStore>);
        Platform::open(prof, fake.clone(), dir.path(), None, CPUS.to_vec(), store).unwrap()
    };
    let mut p = open(profile(background), &store);
    let mut t_ms = 0u64;
    let mut stat: BTreeMap<u32, scheduler::sample::CpuTimes> = CPUS
        .iter()
        .map(|&c| (c, scheduler::sample::CpuTimes::default()))
        .collect();
    for op in ops {
        match op {
            Op::Up(d) => {
                let was_up = p.running().unwrap().iter().any(|r| r == d);
                match p.up(d) {
                    Ok(_) => assert!(!was_up),
                    Err(ApiError::NotFound(_)) => assert_eq!(d, "ghost"),
                    Err(ApiError::Conflict(_)) => assert!(was_up),
                    Err(e) => panic!("up {d}: {e}"),
                }
            }
            Op::Down(d, purge) => {
                let _ = p.down(d, purge);
                assert!(!p.running().unwrap().iter().any(|r| r == d));
                assert!(!p.channels().iter().any(|c| c.from == d || c.to == d));
            }
            Op::Fg(d) => {
                let r = p.set_foreground(d);
                let ok_expected = p.running().unwrap().iter().any(|r| r == d)
                    && p.profile
                        .domain(d)
                        .is_some_and(|x| x.role != Role::Realtime);
                assert_eq!(r.is_ok(), ok_expected, "fg {d}: {r:?}");
                if r.is_ok() {
                    assert_eq!(p.foreground(), Some(d));
                }
            }
            Op::Open(a, b, c, buf) => {
                let decision = p.profile.policy.check(a, b, c, buf);
                let before = p.channels().len();
                match p.open_channel(a, b, c, buf) {
                    Ok(info) => {
                        assert!(
                            matches!(decision, Decision::Allow { buffer } if buffer == info.buffer)
                        );
                        assert_eq!(p.channels().len(), before + 1);
                    }
                    Err(ApiError::Forbidden(_)) => {
                        assert!(matches!(decision, Decision::Deny(_)));
                        assert_eq!(p.channels().len(), before);
                    }
                    Err(ApiError::NotFound(_)) => assert!(a == "ghost" || b == "ghost"),
                    Err(ApiError::Conflict(_)) => assert_eq!(p.channels().len(), before),
                    Err(e) => panic!("open: {e}"),
                }
            }
            Op::Close(id) => {
                let had = p.channels().iter().any(|c| c.id == id);
                assert_eq!(p.close_channel(id).is_ok(), had);
                assert!(!p.channels().iter().any(|c| c.id == id));
            }
            Op::Take(who, c, peer) => {
                if let Ok((info, side, fds)) = p.take_end(who, c, peer) {
                    // Only an end of the channel gets it, on its own side.
                    assert_eq!(info.channel, c);
                    assert!(info.from == who || info.to == who, "{who} got {info:?}");
                    assert_eq!(side == 0, info.from == who);
                    if let Some(peer) = peer {
                        assert_eq!(if side == 0 { &info.to } else { &info.from }, peer);
                    }
                    assert!(p.channels().contains(&info));
                    for fd in fds {
                        // SAFETY: fcntl F_GETFD on a descriptor number only queries it.
                        assert!(unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0);
                    }
                }
            }
            Op::Restart(kept) => {
                let prof = p.profile.clone();
                let before: Vec<(String, Vec<u32>)> = p
                    .running()
                    .unwrap()
                    .into_iter()
                    .map(|n| (n.clone(), p.cpus_of(&n)))
                    .collect();
                let policy = p.scheduler_info().params.policy;
                let chans = p.channels().to_vec();
                drop(p);
                if !kept {
                    store = Store::default();
                }
                p = open(prof, &store);
                // Every channel still listed; with its keeper, as good as before (its ends
                // handed out to both sides); without, adopted: no longer handed out.
                assert_eq!(p.channels().len(), chans.len());
                for (c, was) in p.channels().iter().zip(&chans) {
                    assert_eq!((c.id, &c.from, &c.to), (was.id, &was.from, &was.to));
                    assert_eq!(c.adopted, !kept || was.adopted, "{c:?}");
                    for who in [&c.from, &c.to] {
                        let peer = if who == &c.from { &c.to } else { &c.from };
                        let r = p.take_end(who, &c.channel, Some(peer));
                        assert_eq!(r.is_ok(), !c.adopted, "{c:?}: {:?}", r.err());
                    }
                }
                // Every domain where it was, the policy as it was.
                for (n, cpus) in before {
                    assert_eq!(p.cpus_of(&n), cpus, "{n} after a restart");
                }
                assert_eq!(p.scheduler_info().params.policy, policy);
            }
            Op::Sched(policy) => {
                assert_eq!(p.set_policy(policy).unwrap().params.policy, policy);
            }
            Op::Place(d, list) => {
                let up = p.running().unwrap().iter().any(|r| r == d);
                let r = p.place_on(d, list);
                match &r {
                    Ok(_) => assert_eq!(p.cpus_of(d), domain::profile::cpu_list(list)),
                    Err(ApiError::NotFound(_)) => assert_eq!(d, "ghost"),
                    Err(ApiError::BadRequest(_)) => assert_eq!(list, "x"),
                    Err(ApiError::Conflict(_)) => {
                        assert!(!up || d == "modem" || list.contains('1') || list == "0-3")
                    }
                    Err(e) => panic!("place {d} {list}: {e}"),
                }
                assert_eq!(
                    r.is_ok(),
                    up && d != "modem" && ["0", "2-3", "0,2"].contains(&list),
                    "{d} {list}: {r:?}"
                );
            }
            Op::Tick(use_) => {
                t_ms += p.sched_period_ms();
                let period_ns = p.sched_period_ms() * 1_000_000;
                let names: Vec<String> = fake.0.borrow().keys().cloned().collect();
                let mut busy = [0u64; 4];
                for (i, n) in names.iter().enumerate() {
                    let cpus = p.cpus_of(n);
                    let mut m = fake.0.borrow_mut();
                    let st = m.get_mut(n).unwrap();
                    for c in cpus {
                        let ns =
                            period_ns * u64::from(use_[(i * 4 + c as usize) % use_.len()]) / 4000;
                        st.cpu_ns[c as usize] += ns;
                        busy[c as usize] += ns;
                    }
                }
                // Clock ticks of 1 ms: each core's busy and idle time this period.
                for (c, t) in stat.iter_mut() {
                    let b = (busy[*c as usize] / 1_000_000).min(p.sched_period_ms());
                    t.busy += b;
                    t.idle += p.sched_period_ms() - b;
                }
                p.tick(t_ms, stat.clone());
            }
        }
        check_invariants(&p, &fake, &store);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_of_calls_breaks_the_policy_or_the_foreground(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, "throttle");
    }

    #[test]
    fn the_same_holds_when_the_background_is_frozen(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, "freeze");
    }
}
