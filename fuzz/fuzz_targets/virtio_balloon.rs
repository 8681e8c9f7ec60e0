//! A hostile driver against virtio-balloon (vmm::virtio::fuzz::balloon_queues): frame lists
//! and reported ranges anywhere in or outside guest memory, of any length, statistics of any
//! shape, while the host sets targets and asks for figures. Any panic is a bug: a VMM crash,
//! a failed device that does not say so.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vmm::virtio::fuzz::balloon_queues(data);
});
