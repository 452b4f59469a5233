//! Parses arbitrary bytes as a PBS key file; one that parses writes out and parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_chunk_store::codec_checks::check_key_file_bytes(data));
