//! A hostile guest driver against the virtio-block queue handling (vmm::virtio::fuzz): the
//! input becomes guest memory, the queue's set-up and a sequence of register writes, memory
//! writes and notifications. Any panic is a bug: a VMM crash or a write to the shared base.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vmm::virtio::fuzz::block_queue(data);
});
