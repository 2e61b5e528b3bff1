#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| precopy::fuzzing::apply_stream(data));
