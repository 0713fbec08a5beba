#![no_main]
//! `cargo fuzz run protocol_messages`: see `weir_fuzz::protocol_messages` for what it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::protocol_messages(data));
