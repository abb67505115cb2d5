#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ciofs::fuzzing::object_json(data));
