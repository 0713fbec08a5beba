#![no_main]
//! `cargo fuzz run ui_params`: see `weir_fuzz::ui_params` for what it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::ui_params(data));
