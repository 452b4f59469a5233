//! Opens arbitrary bytes as a casync index and checks every lookup invariant.
#![no_main]

use cairn_index::testing::{Parser, check_index_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check_index_bytes(Parser::Casync, data));
