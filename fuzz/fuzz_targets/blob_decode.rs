//! Decodes arbitrary bytes as a PBS DataBlob under a size limit; round-trips the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_chunk_store::codec_checks::check_blob_bytes(data));
