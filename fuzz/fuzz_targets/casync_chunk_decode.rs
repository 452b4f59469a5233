//! Decodes arbitrary bytes as a casync chunk file (zstd, xz, gzip) under a size limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_chunk_store::codec_checks::check_casync_chunk_bytes(data));
