//! A request line on a domain's port, as a hostile domain writes it (daemon::port::fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    daemon::port::fuzz(data);
});
