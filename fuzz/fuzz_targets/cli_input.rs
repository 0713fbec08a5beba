#![no_main]
//! `cargo fuzz run cli_input`: see `weir_fuzz::cli_input` for what it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::cli_input(data));
