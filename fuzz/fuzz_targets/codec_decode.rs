#![no_main]
//! `cargo fuzz run codec_decode`: see `weir_fuzz::codec_decode` for what it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::codec_decode(data));
