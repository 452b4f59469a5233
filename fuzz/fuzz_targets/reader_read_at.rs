//! A small image in a memory store with damaged and missing chunks: reads return the right bytes
//! or fail exactly when they touch a damaged chunk, and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_reader::testing::fuzz(data));
