use std::sync::Arc;

use super::*;
use crate::export::MemoryExport;
use crate::protocol::OPTION_REPLY_MAGIC;
use crate::testing::{go_data, meta_data};

fn exports(names: &[&str]) -> Exports {
    names
        .iter()
        .map(|n| {
            let export: Arc<dyn Export> = Arc::new(MemoryExport::new(vec![1u8; 1000]));
            ((*n).to_owned(), export)
        })
        .collect()
}

/// The reply types in `bytes`, a run of option replies.
fn reply_types(mut bytes: &[u8]) -> Vec<u32> {
    let mut types = Vec::new();
    while bytes.len() >= 20 {
        assert_eq!(bytes[..8], OPTION_REPLY_MAGIC.to_be_bytes());
        types.push(u32::from_be_bytes(bytes[12..16].try_into().unwrap()));
        let length = u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as usize;
        bytes = &bytes[20 + length..];
    }
    assert!(bytes.is_empty(), "trailing bytes");
    types
}

#[test]
fn list_names_every_export_then_acks() {
    let exports = exports(&["a", "b", "c"]);
    let mut n = Negotiation::new(&exports, 3);
    let out = n.handle(OPT_LIST, &[]);
    assert_eq!(
        reply_types(&out.reply),
        [REP_SERVER, REP_SERVER, REP_SERVER, REP_ACK]
    );
    assert!(matches!(out.next, Next::Option));
    let out = n.handle(OPT_LIST, &[1]);
    assert_eq!(reply_types(&out.reply), [REP_ERR_INVALID]);
}

#[test]
fn unknown_options_are_unsupported_and_negotiation_goes_on() {
    let exports = exports(&["a"]);
    let mut n = Negotiation::new(&exports, 3);
    for option in [0, 4, 5, 11, 12, 9999] {
        let out = n.handle(option, b"whatever");
        assert_eq!(reply_types(&out.reply), [REP_ERR_UNSUP], "option {option}");
        assert!(matches!(out.next, Next::Option));
    }
    assert!(matches!(
        n.handle(OPT_GO, &go_data("a", &[])).next,
        Next::Transmission(_)
    ));
}

#[test]
fn info_describes_and_go_enters_transmission() {
    let exports = exports(&["disk"]);
    let mut n = Negotiation::new(&exports, 3);
    let out = n.handle(
        OPT_INFO,
        &go_data("disk", &[INFO_NAME, INFO_DESCRIPTION, 3]),
    );
    assert_eq!(
        reply_types(&out.reply),
        [REP_INFO, REP_INFO, REP_INFO, REP_INFO, REP_ACK]
    );
    assert!(matches!(out.next, Next::Option));
    let out = n.handle(OPT_GO, &go_data("nope", &[]));
    assert_eq!(reply_types(&out.reply), [REP_ERR_UNKNOWN]);
    let out = n.handle(OPT_GO, b"\0\0\0\x09disk");
    assert_eq!(reply_types(&out.reply), [REP_ERR_INVALID]);
    let out = n.handle(OPT_GO, &go_data("disk", &[]));
    let Next::Transmission(chosen) = out.next else {
        panic!("GO must enter transmission");
    };
    assert_eq!(chosen.name, "disk");
    assert!(!chosen.structured && !chosen.block_status);
}

#[test]
fn the_empty_name_is_the_only_export() {
    let one = exports(&["disk"]);
    let mut n = Negotiation::new(&one, 3);
    assert!(
        matches!(n.handle(OPT_GO, &go_data("", &[])).next, Next::Transmission(c) if c.name == "disk")
    );
    let two = exports(&["a", "b"]);
    let mut n = Negotiation::new(&two, 3);
    assert_eq!(
        reply_types(&n.handle(OPT_GO, &go_data("", &[])).reply),
        [REP_ERR_UNKNOWN]
    );
}

#[test]
fn block_status_needs_structured_replies_and_the_same_export() {
    let exports = exports(&["a", "b"]);
    let mut n = Negotiation::new(&exports, 3);
    let set = meta_data("a", &["base:allocation"]);
    assert_eq!(
        reply_types(&n.handle(OPT_SET_META_CONTEXT, &set).reply),
        [REP_ERR_INVALID]
    );
    assert_eq!(
        reply_types(&n.handle(OPT_STRUCTURED_REPLY, &[]).reply),
        [REP_ACK]
    );
    assert_eq!(
        reply_types(&n.handle(OPT_STRUCTURED_REPLY, &[]).reply),
        [REP_ERR_INVALID]
    );
    assert_eq!(
        reply_types(&n.handle(OPT_SET_META_CONTEXT, &set).reply),
        [REP_META_CONTEXT, REP_ACK]
    );
    // Listing: everything, the namespace wildcard, or nothing for unknown namespaces.
    for (queries, expected) in [
        (&[][..], &[REP_META_CONTEXT, REP_ACK][..]),
        (&["base:"][..], &[REP_META_CONTEXT, REP_ACK][..]),
        (&["qemu:dirty-bitmap:x"][..], &[REP_ACK][..]),
        (&["nocolon"][..], &[REP_ERR_INVALID][..]),
    ] {
        let out = n.handle(OPT_LIST_META_CONTEXT, &meta_data("a", queries));
        assert_eq!(reply_types(&out.reply), expected, "{queries:?}");
    }
    let Next::Transmission(chosen) = n.handle(OPT_GO, &go_data("b", &[])).next else {
        panic!("GO must enter transmission");
    };
    assert!(
        chosen.structured && !chosen.block_status,
        "selected for a, not b"
    );
    let mut n = Negotiation::new(&exports, 3);
    n.handle(OPT_STRUCTURED_REPLY, &[]);
    n.handle(OPT_SET_META_CONTEXT, &set);
    let Next::Transmission(chosen) = n.handle(OPT_GO, &go_data("a", &[])).next else {
        panic!("GO must enter transmission");
    };
    assert!(chosen.block_status);
}

#[test]
fn export_name_for_a_missing_export_closes() {
    let exports = exports(&["a"]);
    let mut n = Negotiation::new(&exports, 3);
    let out = n.handle(OPT_EXPORT_NAME, b"zzz");
    assert!(out.reply.is_empty());
    assert!(matches!(out.next, Next::Close));
    let out = n.handle(OPT_EXPORT_NAME, b"a");
    assert_eq!(out.reply.len(), 10, "no zeroes negotiated");
    assert!(matches!(out.next, Next::Transmission(_)));
}

#[test]
fn shutdown_refuses_options_but_abort_is_acked() {
    let exports = exports(&["a"]);
    let mut n = Negotiation::new(&exports, 3);
    n.shut_down();
    assert_eq!(
        reply_types(&n.handle(OPT_GO, &go_data("a", &[])).reply),
        [REP_ERR_SHUTDOWN]
    );
    let out = n.handle(OPT_ABORT, &[]);
    assert_eq!(reply_types(&out.reply), [REP_ACK]);
    assert!(matches!(out.next, Next::Close));
}
