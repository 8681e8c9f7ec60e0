//! A device profile's text to a validated profile or errors, each one line with its place
//! (domain::profile::fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    domain::profile::fuzz(data);
});
