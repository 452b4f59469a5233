//! Decrypts arbitrary bytes as an encrypted PBS blob under a size limit; encrypts the input and
//! decrypts it back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_chunk_store::codec_checks::check_encrypted_blob_bytes(data));
