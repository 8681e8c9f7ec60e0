//! A hostile guest driver against the virtio queue handling (vmm::virtio::fuzz): the first
//! byte picks the device (block on a copy-on-write disk, net, vsock); the rest becomes guest
//! memory, the queues' set-up and a sequence of register writes, memory writes, notifications
//! and host-side events. Any panic is a bug: a VMM crash, a write to the shared base, a failed
//! device that does not say so, a socket left behind.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vmm::virtio::fuzz::devices(data);
});
