//! An NBD session fed arbitrary client bytes (after a valid handshake when the first byte is
//! odd): the server answers or closes, and never panics or hangs; the pure parsers on the same
//! bytes round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_nbd::testing::fuzz_session(data));
