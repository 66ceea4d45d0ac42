use super::*;
use proptest::prelude::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

// Responses from upstream net/stun/stun_test.go (real servers and a pion server).
#[test]
fn upstream_response_vectors() {
    let cases: [(&str, &str, &str, &str); 10] = [
        (
            "google-1",
            "0101000c2112a4422360b11e3ec68ffa93e08007002000080001c7866957856f",
            "2360b11e3ec68ffa93e08007",
            "72.69.33.45:59028",
        ),
        (
            "google-2",
            "0101000c2112a442f9f121cbde7d7c75923ce271002000080001c7876957856f",
            "f9f121cbde7d7c75923ce271",
            "72.69.33.45:59029",
        ),
        (
            "stun-sipgate-net-10000",
            "010100442112a442482eb64715e8b28eaead644400010008 0001e4ab4845212d\
             000400080001 2710d90a4498000500080001 2711d9747a8a\
             802000080001c5b96957856f802200105 66f766964612e6f726720302e393600",
            "482eb64715e8b28eaead6444",
            "72.69.33.45:58539",
        ),
        (
            "stun-powervoip-com-3478",
            "010100242112a4427e57966829f444609d1deaa6000100080001e9d34845212d\
             0004000800010d964d48a9d40005000800010d974d48a9d5",
            "7e57966829f444609d1deaa6",
            "72.69.33.45:59859",
        ),
        (
            "in-process-pion-server",
            "010100242112a442ebc2d36ef471217c4f3e308e8022000a656e64706f696e7465720000\
             002000080001ce665e12a443802800 04b699bb02010100242112a442",
            "ebc2d36ef471217c4f3e308e",
            "127.0.0.1:61300",
        ),
        (
            "stuntman-server-ipv6",
            "010100482112a44206f56685d28af3e69ce341e20001001400 0290ce260200d1b4cfc10038b231fffeef96f6\
             802b001400020d962604a880000200d10000000000c57001\
             00200014000 2b1dc0710a493b23aa785ea38c219620cd714",
            "06f56685d28af3e69ce341e2",
            "[2602:d1:b4cf:c100:38b2:31ff:feef:96f6]:37070",
        ),
        (
            "software-a",
            "010100142112a442ebc2d36ef471217c4f3e308e8022000161000000002000080001ce665e12a443",
            "ebc2d36ef471217c4f3e308e",
            "127.0.0.1:61300",
        ),
        (
            "software-abc",
            "010100142112a442ebc2d36ef471217c4f3e308e8022000361626300002000080001ce665e12a443",
            "ebc2d36ef471217c4f3e308e",
            "127.0.0.1:61300",
        ),
        (
            "no-4in6",
            "010100182112a4424fd5d202dcb37d31fc773306002000140002cd3d2112a4424fd5d202dcb382ce2dc3fcc7",
            "4fd5d202dcb37d31fc773306",
            "209.180.207.193:60463",
        ),
        // The same as google-1, built by this module's encoder.
        (
            "weft-encoder",
            "0101000c2112a4422360b11e3ec68ffa93e08007002000080001c7866957856f",
            "2360b11e3ec68ffa93e08007",
            "72.69.33.45:59028",
        ),
    ];
    for (name, data, tx, addr) in cases {
        let (got_tx, got_addr) = parse_response(&h(data)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(hex::encode(got_tx.0), tx, "{name}");
        assert_eq!(got_addr, addr.parse::<SocketAddr>().unwrap(), "{name}");
    }
    let tx = TxId(h("2360b11e3ec68ffa93e08007").try_into().unwrap());
    assert_eq!(
        binding_response(tx, "72.69.33.45:59028".parse().unwrap()).as_bytes(),
        &h(cases[0].1)[..]
    );
}

// upstream TestIs.
#[test]
fn is_stun_cases() {
    let cookie = MAGIC_COOKIE;
    let with = |first: u8, tail: usize| {
        let mut v = vec![first, 0, 0, 0];
        v.extend_from_slice(&cookie);
        v.extend(std::iter::repeat_n(0, tail));
        v
    };
    assert!(!is_stun(&[]));
    assert!(!is_stun(&[0; 20]));
    assert!(!is_stun(&with(0, 11)));
    assert!(is_stun(&with(0, 12)));
    assert!(is_stun(&with(0, 15)));
    assert!(!is_stun(&with(0xf0, 12)));
    assert!(!is_stun(&with(0x40, 12)));
    assert!(is_stun(&with(0x20, 12)));
}

#[test]
fn request_layout_and_round_trip() {
    let tx = TxId([0xab; 12]);
    let req = binding_request(tx);
    assert_eq!(&req[..4], &[0x00, 0x01, 0x00, 0x14]);
    assert_eq!(&req[4..8], &MAGIC_COOKIE);
    assert_eq!(&req[20..32], b"\x80\x22\x00\x08tailnode");
    assert_eq!(&req[32..36], &[0x80, 0x28, 0x00, 0x04]);
    assert_eq!(req.len(), 40);
    let fp = crc32fast::hash(&req[..32]) ^ 0x5354_554e;
    assert_eq!(&req[36..], &fp.to_be_bytes());
    assert_eq!(parse_binding_request(&req), Ok(tx));
}

#[test]
fn requests_the_server_refuses() {
    let req = binding_request(TxId([1; 12]));
    let mut bad_fp = req;
    bad_fp[39] ^= 1;
    assert_eq!(
        parse_binding_request(&bad_fp),
        Err(StunError::WrongFingerprint)
    );
    let mut other_sw = req;
    other_sw[24] = b'T';
    assert_eq!(
        parse_binding_request(&other_sw),
        Err(StunError::WrongSoftware)
    );
    // Without the fingerprint attribute.
    let mut no_fp = req[..32].to_vec();
    no_fp[3] = 12;
    assert_eq!(parse_binding_request(&no_fp), Err(StunError::NoFingerprint));
    let mut not_req = req;
    not_req[1] = 0x11;
    assert_eq!(
        parse_binding_request(&not_req),
        Err(StunError::NotBindingRequest)
    );
    assert_eq!(
        parse_binding_request(&req[..39]),
        Err(StunError::MalformedAttrs)
    );
    assert_eq!(parse_binding_request(&req[..10]), Err(StunError::NotStun));
    // A response is not a request, and vice versa.
    let resp = binding_response(TxId([1; 12]), "10.0.0.1:1".parse().unwrap());
    assert_eq!(
        parse_binding_request(resp.as_bytes()),
        Err(StunError::NotBindingRequest)
    );
    assert_eq!(parse_response(&req), Err(StunError::NotSuccessResponse));
}

#[test]
fn response_edge_cases() {
    let tx = TxId([9; 12]);
    let resp = binding_response(tx, "[2001:db8::1]:3478".parse().unwrap());
    assert_eq!(resp.as_bytes().len(), 44);
    // Declared length beyond the packet.
    let mut short = resp.as_bytes().to_vec();
    short.truncate(40);
    assert_eq!(parse_response(&short), Err(StunError::MalformedAttrs));
    // No address attribute at all.
    let empty = [
        0x01, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
    ];
    assert_eq!(parse_response(&empty), Err(StunError::MalformedAttrs));
    // An unknown address family.
    let mut fam = binding_response(tx, "1.2.3.4:5".parse().unwrap())
        .as_bytes()
        .to_vec();
    fam[25] = 3;
    assert_eq!(parse_response(&fam), Err(StunError::MalformedAttrs));
}

proptest! {
    #[test]
    fn responses_round_trip(tx in any::<[u8; 12]>(), v4 in any::<bool>(), ip4 in any::<[u8; 4]>(), ip6 in any::<[u8; 16]>(), port in any::<u16>()) {
        let ip = if v4 { IpAddr::from(ip4) } else { IpAddr::from(Ipv6Addr::from(ip6)) };
        let addr = SocketAddr::new(ip, port);
        let resp = binding_response(TxId(tx), addr);
        let (got_tx, got) = parse_response(resp.as_bytes()).unwrap();
        prop_assert_eq!(got_tx, TxId(tx));
        // A v4-mapped IPv6 source comes back as IPv4.
        let want = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, |v4| SocketAddr::new(v4.into(), port)),
            IpAddr::V4(_) => addr,
        };
        prop_assert_eq!(got, want);
    }

    #[test]
    fn requests_round_trip(tx in any::<[u8; 12]>()) {
        prop_assert_eq!(parse_binding_request(&binding_request(TxId(tx))), Ok(TxId(tx)));
    }

    #[test]
    fn parsers_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..80), cookie in any::<bool>()) {
        if cookie && bytes.len() >= 8 {
            bytes[0] &= 0x3f;
            bytes[4..8].copy_from_slice(&MAGIC_COOKIE);
        }
        let _ = parse_binding_request(&bytes);
        let _ = parse_response(&bytes);
    }
}

// The pion server response of upstream's vectors ends in a FINGERPRINT computed by another
// implementation: CRC-32 of the 48 bytes before it, XOR 0x5354554e.
#[test]
fn fingerprint_matches_pion() {
    let msg = h(
        "010100242112a442ebc2d36ef471217c4f3e308e8022000a656e64706f696e7465720000\
         002000080001ce665e12a443802800 04b699bb02",
    );
    assert_eq!(msg.len(), 56);
    assert_eq!(fingerprint(&msg[..48]), 0xb699_bb02);
}
