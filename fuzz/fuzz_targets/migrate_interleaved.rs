#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    precopy::fuzzing::migrate_interleaved(data);
});
