#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    akgate_fuzz::run_canonicalize(data);
});
