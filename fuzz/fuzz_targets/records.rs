#![no_main]
//! See `harp_core::fuzzing::records`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| harp_core::fuzzing::records(data));
