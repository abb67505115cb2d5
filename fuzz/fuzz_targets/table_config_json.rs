#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ciofs::fuzzing::table_config_json(data));
