//! The ts2021 handshake and records: both roles against each other, against `snow` (an
//! independent Noise implementation) wherever ts2021 is standard Noise, and against tampering.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use proptest::prelude::*;
use weft_controlbase::{
    accept, early_payload, early_payload_len, error_message, prologue, Accepted, ClientHandshake,
    Error, RecordReader, Transport, INITIATION_LEN, MAX_PLAINTEXT_SIZE, RESPONSE_LEN,
};
use weft_keys::PrivateKey;

const NOISE: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

fn key(b: u8) -> PrivateKey {
    // Any 32 bytes are a valid X25519 private key (clamped when used).
    PrivateKey::from_bytes([b; 32])
}

/// An established connection: the client's transport, the server's, and what the server
/// learned (machine key, version).
fn pair(version: u16) -> (Transport, Transport, weft_keys::PublicKey, u16) {
    let (machine, server) = (key(1), key(2));
    let (hs, init) =
        ClientHandshake::start(&machine, &server.public_key(), version, &key(3)).unwrap();
    let Accepted {
        response,
        machine,
        version,
        transport,
    } = accept(&server, &init, &key(4)).unwrap();
    (hs.finish(&response).unwrap(), transport, machine, version)
}

#[test]
fn client_and_server_agree() {
    let (mut client, mut server, machine, version) = pair(145);
    assert_eq!(machine, key(1).public_key());
    assert_eq!(version, 145);
    assert_eq!(client.handshake_hash(), server.handshake_hash());
    // Both directions, several records, an empty write and a write that needs three records.
    for msg in [&b"hello"[..], b"", &vec![0xab; 2 * MAX_PLAINTEXT_SIZE + 5]] {
        let mut wire = Vec::new();
        client.seal(msg, &mut wire).unwrap();
        let mut reader = RecordReader::new();
        reader.push(&wire);
        let mut got = Vec::new();
        while let Some(p) = reader.next(&mut server).unwrap() {
            got.extend_from_slice(&p);
        }
        assert_eq!(got, msg);
        assert_eq!(reader.buffered(), 0);
        let mut back = Vec::new();
        server.seal(msg, &mut back).unwrap();
        reader.push(&back);
        let mut got = Vec::new();
        while let Some(p) = reader.next(&mut client).unwrap() {
            got.extend_from_slice(&p);
        }
        assert_eq!(got, msg);
    }
    // A write of 2 * max + 5 bytes is three records.
    let mut wire = Vec::new();
    client
        .seal(&vec![0; 2 * MAX_PLAINTEXT_SIZE + 5], &mut wire)
        .unwrap();
    assert_eq!(
        wire.iter().filter(|_| true).count(),
        3 * 19 + 2 * MAX_PLAINTEXT_SIZE + 5
    );
    assert_eq!(wire[0], 4);
}

#[test]
fn messages_have_the_documented_layout() {
    let (hs, init) =
        ClientHandshake::start(&key(1), &key(2).public_key(), 0x1234, &key(3)).unwrap();
    assert_eq!(init.len(), INITIATION_LEN);
    assert_eq!(&init[..5], &[0x12, 0x34, 0x01, 0x00, 96]);
    // The ephemeral key travels in the clear.
    assert_eq!(&init[5..37], key(3).public_key().as_bytes());
    let acc = accept(&key(2), &init, &key(4)).unwrap();
    assert_eq!(acc.response.len(), RESPONSE_LEN);
    assert_eq!(&acc.response[..3], &[0x02, 0x00, 48]);
    assert_eq!(&acc.response[3..35], key(4).public_key().as_bytes());
    hs.finish(&acc.response).unwrap();
}

#[test]
fn a_client_with_the_wrong_server_key_is_refused() {
    let (_, init) = ClientHandshake::start(&key(1), &key(9).public_key(), 145, &key(3)).unwrap();
    assert_eq!(accept(&key(2), &init, &key(4)).unwrap_err(), Error::Decrypt);
}

#[test]
fn a_server_error_message_reaches_the_client() {
    let (hs, _) = ClientHandshake::start(&key(1), &key(2).public_key(), 145, &key(3)).unwrap();
    let err = hs.finish(&error_message("client too old")).unwrap_err();
    assert_eq!(err, Error::ServerError("client too old".into()));
    // Cut to 65535 bytes on a character boundary.
    let long = "é".repeat(40_000);
    let msg = error_message(&long);
    assert_eq!(msg.len(), 3 + 65534);
}

#[test]
fn one_bad_record_breaks_the_read_side() {
    let (mut client, mut server, ..) = pair(145);
    let mut wire = Vec::new();
    client.seal(b"first", &mut wire).unwrap();
    client.seal(b"second", &mut wire).unwrap();
    let last = wire.len() - 1;
    wire[last] ^= 1;
    let mut reader = RecordReader::new();
    reader.push(&wire);
    assert_eq!(reader.next(&mut server).unwrap().unwrap(), b"first");
    assert_eq!(reader.next(&mut server).unwrap_err(), Error::Decrypt);
    // Even a genuine record is refused afterwards.
    let mut more = Vec::new();
    client.seal(b"third", &mut more).unwrap();
    assert_eq!(server.open(&more).unwrap_err(), Error::Broken);
}

#[test]
fn early_payload_round_trips() {
    let json = br#"{"nodeKeyChallenge":"chalpub:00"}"#;
    let p = early_payload(json).unwrap();
    let head: [u8; 9] = p[..9].try_into().unwrap();
    assert_eq!(early_payload_len(&head), Some(Ok(json.len())));
    assert_eq!(&p[9..], json);
    // An HTTP/2 preface is not an early payload.
    assert_eq!(early_payload_len(b"PRI * HTT"), None);
    let mut big = head;
    big[5..].copy_from_slice(&(11u32 << 20).to_be_bytes());
    assert_eq!(early_payload_len(&big), Some(Err(11 << 20)));
}

fn snow_builder(version: u16) -> snow::Builder<'static> {
    snow::Builder::new(NOISE.parse().unwrap())
        .prologue(Box::leak(prologue(version).into_boxed_slice()))
        .unwrap()
}

/// snow as the client, weft as the server: the handshake interoperates, and so does the first
/// record each way (nonce 0 is the same in either byte order); the second record does not,
/// because ts2021 puts the counter big-endian — the one deviation from Noise.
#[test]
fn snow_client_and_weft_server_interoperate() {
    let (machine, server) = (key(1), key(2));
    let mut snow_client = snow_builder(130)
        .local_private_key(machine.as_bytes())
        .unwrap()
        .remote_public_key(server.public_key().as_bytes())
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut payload = [0u8; 96];
    assert_eq!(snow_client.write_message(&[], &mut payload).unwrap(), 96);
    let mut init = vec![0x00, 130, 0x01, 0x00, 96];
    init.extend_from_slice(&payload);
    let acc = accept(&server, &init, &key(4)).unwrap();
    assert_eq!(acc.machine, machine.public_key());
    let mut out = [0u8; 64];
    assert_eq!(
        snow_client
            .read_message(&acc.response[3..], &mut out)
            .unwrap(),
        0
    );
    assert_eq!(
        snow_client.get_handshake_hash(),
        &acc.transport.handshake_hash()
    );
    let mut snow_t = snow_client.into_transport_mode().unwrap();
    let mut weft_t = acc.transport;

    // weft → snow, first record.
    let mut wire = Vec::new();
    weft_t.seal(b"from weft", &mut wire).unwrap();
    let n = snow_t.read_message(&wire[3..], &mut out).unwrap();
    assert_eq!(&out[..n], b"from weft");
    // snow → weft, first record.
    let mut ct = [0u8; 64];
    let n = snow_t.write_message(b"from snow", &mut ct).unwrap();
    let mut rec = vec![0x04, 0x00, n as u8];
    rec.extend_from_slice(&ct[..n]);
    assert_eq!(weft_t.open(&rec).unwrap(), b"from snow");
    // Second record: little-endian nonce 1 ≠ big-endian nonce 1.
    let n = snow_t.write_message(b"again", &mut ct).unwrap();
    let mut rec = vec![0x04, 0x00, n as u8];
    rec.extend_from_slice(&ct[..n]);
    assert_eq!(weft_t.open(&rec).unwrap_err(), Error::Decrypt);
}

/// weft as the client, snow as the server.
#[test]
fn weft_client_and_snow_server_interoperate() {
    let (machine, server) = (key(1), key(2));
    let mut snow_server = snow_builder(145)
        .local_private_key(server.as_bytes())
        .unwrap()
        .build_responder()
        .unwrap();
    let (hs, init) = ClientHandshake::start(&machine, &server.public_key(), 145, &key(3)).unwrap();
    let mut out = [0u8; 64];
    assert_eq!(snow_server.read_message(&init[5..], &mut out).unwrap(), 0);
    assert_eq!(
        snow_server.get_remote_static().unwrap(),
        machine.public_key().as_bytes()
    );
    let mut resp = vec![0x02, 0x00, 48];
    let mut payload = [0u8; 48];
    assert_eq!(snow_server.write_message(&[], &mut payload).unwrap(), 48);
    resp.extend_from_slice(&payload);
    let mut client = hs.finish(&resp).unwrap();
    let mut snow_t = snow_server.into_transport_mode().unwrap();
    let mut wire = Vec::new();
    client.seal(b"GET /", &mut wire).unwrap();
    let n = snow_t.read_message(&wire[3..], &mut out).unwrap();
    assert_eq!(&out[..n], b"GET /");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any single bit flipped anywhere in the initiation is refused.
    #[test]
    fn tampered_initiations_are_refused(bit in 0usize..INITIATION_LEN * 8) {
        let (_, mut init) = ClientHandshake::start(&key(1), &key(2).public_key(), 145, &key(3)).unwrap();
        init[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(accept(&key(2), &init, &key(4)).is_err());
    }

    /// Any single bit flipped anywhere in the response is refused by the client.
    #[test]
    fn tampered_responses_are_refused(bit in 0usize..RESPONSE_LEN * 8) {
        let (hs, init) = ClientHandshake::start(&key(1), &key(2).public_key(), 145, &key(3)).unwrap();
        let mut acc = accept(&key(2), &init, &key(4)).unwrap();
        acc.response[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(hs.finish(&acc.response).is_err());
    }

    /// Records arrive in arbitrary pieces and come out whole and in order.
    #[test]
    fn records_survive_any_chunking(
        msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..5000), 1..6),
        cuts in proptest::collection::vec(1usize..3000, 1..20),
    ) {
        let (mut client, mut server, ..) = pair(145);
        let mut wire = Vec::new();
        for m in &msgs {
            client.seal(m, &mut wire).unwrap();
        }
        let mut reader = RecordReader::new();
        let mut got = Vec::new();
        let mut rest = &wire[..];
        for cut in cuts.iter().cycle().take(wire.len() + 1) {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*cut).min(rest.len()));
            rest = tail;
            reader.push(piece);
            while let Some(p) = reader.next(&mut server).unwrap() {
                got.extend_from_slice(&p);
            }
        }
        prop_assert_eq!(got, msgs.concat());
    }
}
