//! Takes arbitrary bytes as an HTTP chunk request's path, range and body length: routes and
//! spans keep their promises.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_chunk_store::serve::check_request(data));
