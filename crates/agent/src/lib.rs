//! What runs inside a domain: [`port`] asks the daemon, over the domain's own port socket,
//! for the domain's side of an open channel; [`pingpong`] holds the round-trip and bandwidth
//! loops the channel benchmarks run, between two processes or two domains; [`vsock`] holds
//! both ends of a microVM's vsock; [`micro`] the LMbench-style microbenchmarks `cellvisor bench`
//! runs in every backend, [`workload`] its macrobenchmarks; [`rt`] the real-time benchmark's
//! wake-up probe and loads; [`duty`] the scheduler benchmark's load; [`device`] devices held,
//! probed and (on a test host) made, for the revocation tests.

pub mod device;
pub mod duty;
pub mod micro;
pub mod pingpong;
pub mod port;
pub mod rt;
pub mod vsock;
pub mod workload;
