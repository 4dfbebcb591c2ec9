#![no_main]
//! See `harp_core::fuzzing::wire`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| harp_core::fuzzing::wire(data));
