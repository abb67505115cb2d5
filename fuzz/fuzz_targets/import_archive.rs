#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ciofs::fuzzing::import_archive(data));
