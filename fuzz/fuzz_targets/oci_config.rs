//! config.json (and process.json) as a user writes it, to a validated config or a refusal in
//! one line (container::config::fuzz).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    container::config::fuzz(data);
});
