use proptest::prelude::*;

use super::*;

proptest! {
    #[test]
    fn request_headers_round_trip(flags: u16, command: u16, cookie: u64, offset: u64, length: u32) {
        let request = Request { flags, command, cookie, offset, length };
        prop_assert_eq!(Request::parse(&request.encode()), Ok(request));
    }

    #[test]
    fn info_requests_round_trip(name in "[a-z.0-9-]{0,40}", requests in proptest::collection::vec(any::<u16>(), 0..8)) {
        let data = crate::testing::go_data(&name, &requests);
        let parsed = parse_info_request(&data).expect("well formed");
        prop_assert_eq!(parsed.name, name.as_bytes());
        prop_assert_eq!(parsed.requests, requests);
        // Any cut or extra byte makes it malformed.
        for cut in 0..data.len() {
            prop_assert!(parse_info_request(&data[..cut]).is_none());
        }
        let mut longer = data.clone();
        longer.push(0);
        prop_assert!(parse_info_request(&longer).is_none());
    }

    #[test]
    fn meta_requests_round_trip(name in "[a-z]{0,12}", queries in proptest::collection::vec("[a-z:]{0,20}", 0..5)) {
        let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
        let data = crate::testing::meta_data(&name, &refs);
        let parsed = parse_meta_context_request(&data).expect("well formed");
        prop_assert_eq!(parsed.name, name.as_bytes());
        let expected: Vec<Vec<u8>> = queries.iter().map(|q| q.as_bytes().to_vec()).collect();
        prop_assert_eq!(parsed.queries, expected);
        for cut in 0..data.len() {
            prop_assert!(parse_meta_context_request(&data[..cut]).is_none());
        }
    }

    #[test]
    fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = parse_info_request(&data);
        let _ = parse_meta_context_request(&data);
    }

    #[test]
    fn truncation_keeps_characters_whole(text in "\\PC{0,50}", limit in 0usize..80) {
        let cut = truncated(&text, limit);
        prop_assert!(cut.len() <= limit);
        prop_assert!(text.starts_with(cut));
    }
}

#[test]
fn the_greeting_is_the_newstyle_one() {
    let greeting = greeting();
    assert_eq!(&greeting[..8], b"NBDMAGIC");
    assert_eq!(&greeting[8..16], b"IHAVEOPT");
    assert_eq!(greeting[16..], [0, 3]);
}

#[test]
fn client_flags_beyond_the_offer_are_refused() {
    assert_eq!(parse_client_flags([0, 0, 0, 3]), Ok(3));
    assert_eq!(
        parse_client_flags([0, 0, 0, 4]),
        Err(ProtocolError::ClientFlags { flags: 4 })
    );
}

#[test]
fn option_headers_are_checked() {
    let mut header = [0u8; OPTION_HEADER_LENGTH];
    header[..8].copy_from_slice(b"IHAVEOPT");
    header[8..12].copy_from_slice(&7u32.to_be_bytes());
    header[12..].copy_from_slice(&MAX_OPTION_LENGTH.to_be_bytes());
    assert_eq!(parse_option_header(header), Ok((7, MAX_OPTION_LENGTH)));
    header[12..].copy_from_slice(&(MAX_OPTION_LENGTH + 1).to_be_bytes());
    assert!(matches!(
        parse_option_header(header),
        Err(ProtocolError::OptionTooLong { option: 7, .. })
    ));
    header[0] = b'X';
    assert!(matches!(
        parse_option_header(header),
        Err(ProtocolError::OptionMagic { .. })
    ));
}

#[test]
fn replies_have_the_documented_layout() {
    let simple = simple_reply(0x0102_0304_0506_0708, Some(Errno::Perm));
    assert_eq!(simple[..4], 0x6744_6698u32.to_be_bytes());
    assert_eq!(simple[4..8], 1u32.to_be_bytes());
    assert_eq!(simple[8..], 0x0102_0304_0506_0708u64.to_be_bytes());
    let error = structured_error(9, Errno::Inval, "no");
    assert_eq!(error.len(), 20 + 6 + 2);
    assert_eq!(error[4..6], REPLY_FLAG_DONE.to_be_bytes());
    assert_eq!(error[6..8], REPLY_TYPE_ERROR.to_be_bytes());
    assert_eq!(error[16..20], 8u32.to_be_bytes());
    assert_eq!(error[20..24], 22u32.to_be_bytes());
    let status = structured_block_status(1, 1, &[(4096, 3), (512, 0)]);
    assert_eq!(status[16..20], 20u32.to_be_bytes());
    let hole = structured_hole(1, 4096, 8192, false);
    assert_eq!(hole[4..6], [0, 0]);
    assert_eq!(hole[16..20], 12u32.to_be_bytes());
    let data = structured_data_header(1, 0, 100, true);
    assert_eq!(data[16..20], 108u32.to_be_bytes());
    assert_eq!(info_block_size().len(), 14);
    assert_eq!(info_export(1, 2).len(), 12);
    assert_eq!(export_name_reply(1, 2, false).len(), 134);
    assert_eq!(export_name_reply(1, 2, true).len(), 10);
}
