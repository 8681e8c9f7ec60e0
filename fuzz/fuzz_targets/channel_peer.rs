//! A peer that writes the channel's shared memory at will, against our end
//! (channel::fuzz::hostile_peer).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    channel::fuzz::hostile_peer(data);
});
