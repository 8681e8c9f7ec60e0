//! A microVM's stream of frames into a channel, as a hostile guest writes it
//! (channel::fuzz::hostile_stream).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    channel::fuzz::hostile_stream(data);
});
