//! Operation sequences on the cache (fetches that succeed, fail, panic or are cancelled), checked
//! step by step against the reference model the property tests use.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // libFuzzer's hook aborts on any panic; the injected ones are caught by the cache.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.contains(cairn_cache::model::INJECTED_PANIC));
            if !injected {
                previous(info);
            }
        }));
    },
    |data: &[u8]| cairn_cache::model::fuzz(data)
);
