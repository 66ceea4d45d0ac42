//! The map-stream frame codec: layout, an independent zstd implementation (ruzstd, pure Rust,
//! like the Go decoder clients use) in both directions, and every error path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Read;

use weft_tailcfg::frame::{
    self, decode_all, encode, keep_alive_frame, FrameDecoder, FrameError, Limits,
};
use weft_tailcfg::{MapResponse, Node};

fn ruzstd_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut src = bytes;
    // One message may hold several zstd frames; decode them all, as Go's zstdframe does.
    while !src.is_empty() {
        let mut dec = ruzstd::decoding::StreamingDecoder::new(&mut src).unwrap();
        dec.read_to_end(&mut out).unwrap();
    }
    out
}

#[test]
fn keep_alive_layout() {
    let f = keep_alive_frame().unwrap();
    let len = u32::from_le_bytes(f[..4].try_into().unwrap()) as usize;
    assert_eq!(
        len,
        f.len() - 4,
        "little-endian length of the compressed bytes"
    );
    assert_eq!(
        &f[4..8],
        &[0x28, 0xb5, 0x2f, 0xfd],
        "a zstd frame magic follows the prefix"
    );
    assert_eq!(ruzstd_decode(&f[4..]), br#"{"KeepAlive":true}"#);
    let msgs = decode_all(&f, Limits::default()).unwrap();
    assert_eq!(msgs, vec![MapResponse::keep_alive()]);
}

#[test]
fn independent_decoder_reads_our_frames_and_we_read_its() {
    let msg = MapResponse {
        node: Some(Node {
            id: 1,
            name: "a.tail.example.".into(),
            ..Node::default()
        }),
        peers: (2..200)
            .map(|id| Node {
                id,
                ..Node::default()
            })
            .collect(),
        ..MapResponse::default()
    };
    let mut buf = Vec::new();
    encode(&msg, &mut buf).unwrap();
    let json = ruzstd_decode(&buf[4..]);
    assert_eq!(serde_json::from_slice::<MapResponse>(&json).unwrap(), msg);

    // A frame compressed by ruzstd, split into two zstd frames inside one message.
    let json = serde_json::to_vec(&msg).unwrap();
    let (a, b) = json.split_at(json.len() / 2);
    let mut payload =
        ruzstd::encoding::compress_to_vec(a, ruzstd::encoding::CompressionLevel::Fastest);
    payload.extend(ruzstd::encoding::compress_to_vec(
        b,
        ruzstd::encoding::CompressionLevel::Fastest,
    ));
    let mut framed = (payload.len() as u32).to_le_bytes().to_vec();
    framed.extend(&payload);
    assert_eq!(decode_all(&framed, Limits::default()).unwrap(), vec![msg]);
}

#[test]
fn byte_at_a_time_and_truncation() {
    let mut stream = Vec::new();
    for id in 1..4 {
        encode(
            &MapResponse {
                seq: id,
                ..MapResponse::default()
            },
            &mut stream,
        )
        .unwrap();
    }
    stream.extend(keep_alive_frame().unwrap());
    let mut dec = FrameDecoder::default();
    let mut got = Vec::new();
    for b in &stream {
        dec.push(std::slice::from_ref(b));
        while let Some(m) = dec.next_response().unwrap() {
            got.push(m);
        }
    }
    dec.finish().unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(got[2].seq, 3);
    assert!(got[3].keep_alive);

    for cut in [1, 3, 4, 5, stream.len() - 1] {
        match decode_all(&stream[..cut], Limits::default()) {
            Err(FrameError::Truncated { have, need }) => assert!(have < need, "{have} {need}"),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

#[test]
fn limits_and_bad_payloads() {
    // An announced length over the limit is refused before any payload arrives.
    let mut dec = FrameDecoder::new(Limits {
        max_frame: 100,
        max_decoded: 1000,
    });
    dec.push(&101u32.to_le_bytes());
    assert!(matches!(
        dec.next_json(),
        Err(FrameError::FrameTooLarge { len: 101, max: 100 })
    ));
    // u32::MAX with the default limit.
    assert!(matches!(
        decode_all(&u32::MAX.to_le_bytes(), Limits::default()),
        Err(FrameError::FrameTooLarge { .. })
    ));
    // Not zstd.
    let mut bad = 5u32.to_le_bytes().to_vec();
    bad.extend(b"hello");
    assert!(matches!(
        decode_all(&bad, Limits::default()),
        Err(FrameError::Decompress(_))
    ));
    // Zero-length payload: not a zstd frame, so not a message.
    assert!(decode_all(&0u32.to_le_bytes(), Limits::default()).is_err());
    // A small frame that inflates past the decoded limit (a "zip bomb").
    let mut bomb = Vec::new();
    frame::encode_json(&vec![b' '; 1 << 20], &mut bomb).unwrap();
    assert!(bomb.len() < 1000);
    let limits = Limits {
        max_frame: 1 << 20,
        max_decoded: 64 << 10,
    };
    assert!(matches!(
        decode_all(&bomb, limits),
        Err(FrameError::DecodedTooLarge { max: 65536 })
    ));
    // Valid zstd, invalid JSON.
    let mut not_json = Vec::new();
    frame::encode_json(b"{\"Peers\":", &mut not_json).unwrap();
    assert!(matches!(
        decode_all(&not_json, Limits::default()),
        Err(FrameError::Json(_))
    ));
}
