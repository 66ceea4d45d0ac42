//! Published test vectors for the primitives, so that the handshake tests are not circular.
//! Sources: RFC 7748 §6.1 (X25519), RFC 8439 §2.8.2 (ChaCha20-Poly1305), RFC 7693 Appendix A
//! (BLAKE2s-256 of "abc") and the BLAKE2 reference's empty-input digest.

use super::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

fn arr32(s: &str) -> [u8; 32] {
    h(s).try_into().unwrap()
}

#[test]
fn x25519_rfc7748_section_6_1() {
    let alice = arr32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let bob = arr32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let alice_pub = public_key(&alice);
    let bob_pub = public_key(&bob);
    assert_eq!(
        alice_pub.to_vec(),
        h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
    assert_eq!(
        bob_pub.to_vec(),
        h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    );
    let shared = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(dh(&alice, &bob_pub).unwrap().0.to_vec(), shared);
    assert_eq!(dh(&bob, &alice_pub).unwrap().0.to_vec(), shared);
}

#[test]
fn x25519_rejects_low_order_points() {
    // The all-zero point (order 1) gives an all-zero shared secret.
    assert!(dh(&[1; 32], &[0; 32]).is_none());
    // u = 1 (order 1 in the Montgomery form's twist handling) also yields zero.
    let mut one = [0u8; 32];
    one[0] = 1;
    assert!(dh(&[1; 32], &one).is_none());
}

#[test]
fn blake2s_rfc7693() {
    assert_eq!(
        hash(&[b"abc"]).to_vec(),
        h("508C5E8C327C14E2E1A72BA34EEB452F37458B209ED63A294D999B4C86675982")
    );
    assert_eq!(
        hash(&[b"a", b"bc"]).to_vec(),
        h("508C5E8C327C14E2E1A72BA34EEB452F37458B209ED63A294D999B4C86675982")
    );
    assert_eq!(
        hash(&[]).to_vec(),
        h("69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9")
    );
}

#[test]
fn chacha20poly1305_rfc8439_section_2_8_2() {
    let key = h("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce: [u8; 12] = h("070000004041424344454647").try_into().unwrap();
    let aad = h("50515253c0c1c2c3c4c5c6c7");
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let expected = h(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6
        3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36
        92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc
        3ff4def08e4b7a9de576d26586cec64b6116",
    );
    let tag = h("1ae10b594f09e26a7e902ecbd0600691");
    let k = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &key).unwrap(),
    );
    let mut buf = plaintext.to_vec();
    let t = k
        .seal_in_place_separate_tag(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from(&aad),
            &mut buf,
        )
        .unwrap();
    assert_eq!(buf, expected);
    assert_eq!(t.as_ref(), &tag[..]);
}

#[test]
fn aead_round_trip_and_tamper() {
    let key = AeadKey::new(&[7; 32]);
    let mut buf = *b"sixteen byte msg\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    let tag = key.seal(5, b"ad", &mut buf[..16]);
    buf[16..].copy_from_slice(&tag);
    let mut tampered = buf;
    tampered[3] ^= 1;
    assert_eq!(key.open(5, b"ad", &mut tampered), Err(AuthFailed));
    let mut wrong_counter = buf;
    assert_eq!(key.open(6, b"ad", &mut wrong_counter), Err(AuthFailed));
    assert_eq!(key.open(5, b"ad", &mut buf), Ok(16));
    assert_eq!(&buf[..16], b"sixteen byte msg");
}

#[test]
fn xchacha_cookie_round_trip() {
    let sealed = xseal_cookie(&[3; 32], &[9; 24], &[1; 16], b"mac1");
    assert_eq!(
        xopen_cookie(&[3; 32], &[9; 24], &sealed, b"mac1"),
        Ok([1; 16])
    );
    assert_eq!(
        xopen_cookie(&[3; 32], &[9; 24], &sealed, b"mac2"),
        Err(AuthFailed)
    );
}

#[test]
fn tai64n_layout() {
    let t = tai64n(std::time::Duration::new(1, 0x0fff_ffff));
    assert_eq!(&t[..8], &0x4000_0000_0000_000b_u64.to_be_bytes());
    assert_eq!(&t[8..], &0x0f00_0000_u32.to_be_bytes());
}
