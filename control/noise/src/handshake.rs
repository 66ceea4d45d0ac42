//! The Noise `IK` handshake of ts2021: one message each way, both with empty payloads, the
//! server's static key known to the client in advance (`<- s`).
//!
//! The two roles are written out step by step rather than driven by a generic pattern
//! interpreter: there is exactly one pattern, and the straight-line code is what the tests and
//! a reader check against the specification.

use weft_keys::{PrivateKey, PublicKey};
use zeroize::Zeroizing;

use crate::primitives::{dh, hash, hkdf2, nonce_be, open, public_key, seal, Secret};
use crate::transport::{CipherState, Transport};
use crate::{
    prologue, Error, INITIATION_LEN, MSG_ERROR, MSG_INITIATION, MSG_RESPONSE, RESPONSE_LEN,
};

/// The Noise protocol name; 33 bytes, so the initial hash is its BLAKE2s digest.
const PROTOCOL_NAME: &[u8] = b"Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// Noise's symmetric state: handshake hash, chaining key, current cipher key. Every
/// handshake encryption uses nonce 0, because each is preceded by a fresh `MixKey`.
struct Symmetric {
    h: [u8; 32],
    ck: Secret,
    k: Secret,
}

impl Symmetric {
    fn new(version: u16, server_static: &[u8; 32]) -> Self {
        let h = hash(&[PROTOCOL_NAME]);
        let mut s = Self {
            h,
            ck: Secret(h),
            k: Secret::default(),
        };
        s.mix_hash(&prologue(version));
        s.mix_hash(server_static);
        s
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.h = hash(&[&self.h, data]);
    }

    fn mix_key(&mut self, dh_output: &Secret) {
        let (ck, k) = hkdf2(&self.ck.0, &dh_output.0);
        self.ck = ck;
        self.k = k;
    }

    fn encrypt_and_hash(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let mut buf = plaintext.to_vec();
        seal(&self.k, nonce_be(0), &self.h, &mut buf);
        self.mix_hash(&buf);
        buf
    }

    fn decrypt_and_hash(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut buf = ciphertext.to_vec();
        open(&self.k, nonce_be(0), &self.h, &mut buf)?;
        self.mix_hash(ciphertext);
        Ok(buf)
    }

    /// `Split`: the initiator's sending key first.
    fn split(&self) -> (Secret, Secret) {
        hkdf2(&self.ck.0, &[])
    }
}

fn array32(bytes: &[u8]) -> Result<[u8; 32], Error> {
    bytes.try_into().map_err(|_| Error::BadLength {
        what: "key",
        want: 32,
        got: bytes.len(),
    })
}

/// A client that sent its initiation and waits for the server's response.
pub struct ClientHandshake {
    symmetric: Symmetric,
    ephemeral: Zeroizing<[u8; 32]>,
    machine: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientHandshake(<secret>)")
    }
}

impl ClientHandshake {
    /// Builds the initiation (`-> e, es, s, ss`) from the client's machine key to the server
    /// whose Noise key is `server`, announcing protocol `version` (the client's capability
    /// version). `ephemeral` must be fresh randomness for every connection.
    ///
    /// # Errors
    /// [`Error::LowOrderKey`] if `server` is a low-order point.
    pub fn start(
        machine: &PrivateKey,
        server: &PublicKey,
        version: u16,
        ephemeral: &PrivateKey,
    ) -> Result<(Self, [u8; INITIATION_LEN]), Error> {
        let server = server.as_bytes();
        let mut s = Symmetric::new(version, server);
        let e = Zeroizing::new(*ephemeral.as_bytes());
        let e_pub = public_key(&e);
        s.mix_hash(&e_pub);
        s.mix_key(&dh(&e, server)?);
        let machine_pub = public_key(machine.as_bytes());
        let s_enc = s.encrypt_and_hash(&machine_pub);
        s.mix_key(&dh(machine.as_bytes(), server)?);
        let tag = s.encrypt_and_hash(&[]);

        let mut msg = [0u8; INITIATION_LEN];
        let parts: [&[u8]; 6] = [
            &version.to_be_bytes(),
            &[MSG_INITIATION],
            &96u16.to_be_bytes(),
            &e_pub,
            &s_enc,
            &tag,
        ];
        for (d, b) in msg.iter_mut().zip(parts.iter().flat_map(|p| p.iter())) {
            *d = *b;
        }
        Ok((
            Self {
                symmetric: s,
                ephemeral: e,
                machine: Zeroizing::new(*machine.as_bytes()),
            },
            msg,
        ))
    }

    /// Takes the server's response (`<- e, ee, se`) and gives the transport: the client sends
    /// with the first split key and receives with the second.
    ///
    /// # Errors
    /// [`Error::ServerError`] if the server sent an error message; [`Error::BadLength`] /
    /// [`Error::BadHeader`] for a malformed response; [`Error::Decrypt`] if it does not
    /// authenticate (wrong server key); [`Error::LowOrderKey`].
    pub fn finish(mut self, response: &[u8]) -> Result<Transport, Error> {
        if response.first() == Some(&MSG_ERROR) {
            return Err(Error::ServerError(error_text(response)));
        }
        if response.len() != RESPONSE_LEN {
            return Err(Error::BadLength {
                what: "handshake response",
                want: RESPONSE_LEN,
                got: response.len(),
            });
        }
        let (header, rest) = response.split_at(3);
        let (re, tag) = rest.split_at(32);
        check_header(header, MSG_RESPONSE, 48, "handshake response")?;
        let re = array32(re)?;
        let s = &mut self.symmetric;
        s.mix_hash(&re);
        s.mix_key(&dh(&self.ephemeral, &re)?);
        s.mix_key(&dh(&self.machine, &re)?);
        s.decrypt_and_hash(tag)?;
        let (k1, k2) = s.split();
        Ok(Transport::new(
            CipherState::new(k1),
            CipherState::new(k2),
            s.h,
        ))
    }
}

/// What the server learns from a valid initiation.
#[derive(Debug)]
pub struct Accepted {
    /// The 51-byte response to send (before any record).
    pub response: [u8; RESPONSE_LEN],
    /// The client's machine public key: every request on this connection is this machine's.
    pub machine: PublicKey,
    /// The protocol version the client announced (its capability version).
    pub version: u16,
    /// The transport: the server sends with the second split key and receives with the first.
    pub transport: Transport,
}

/// The server's side: checks the client's initiation against the server's Noise key `server`
/// and answers it. `ephemeral` must be fresh randomness for every connection.
///
/// # Errors
/// [`Error::BadLength`] / [`Error::BadHeader`] for a malformed initiation,
/// [`Error::Decrypt`] if it does not authenticate (the client used another server key), and
/// [`Error::LowOrderKey`].
pub fn accept(
    server: &PrivateKey,
    initiation: &[u8],
    ephemeral: &PrivateKey,
) -> Result<Accepted, Error> {
    if initiation.len() != INITIATION_LEN {
        return Err(Error::BadLength {
            what: "handshake initiation",
            want: INITIATION_LEN,
            got: initiation.len(),
        });
    }
    let (version, rest) = initiation.split_at(2);
    let (header, rest) = rest.split_at(3);
    let (re, rest) = rest.split_at(32);
    let (s_enc, tag) = rest.split_at(48);
    check_header(header, MSG_INITIATION, 96, "handshake initiation")?;
    let version = u16::try_from(be16(version)).unwrap_or(0);
    let server_pub = public_key(server.as_bytes());
    let mut s = Symmetric::new(version, &server_pub);
    let re = array32(re)?;
    s.mix_hash(&re);
    s.mix_key(&dh(server.as_bytes(), &re)?);
    let machine = array32(&s.decrypt_and_hash(s_enc)?)?;
    s.mix_key(&dh(server.as_bytes(), &machine)?);
    s.decrypt_and_hash(tag)?;

    let e = Zeroizing::new(*ephemeral.as_bytes());
    let e_pub = public_key(&e);
    s.mix_hash(&e_pub);
    s.mix_key(&dh(&e, &re)?);
    s.mix_key(&dh(&e, &machine)?);
    let tag = s.encrypt_and_hash(&[]);
    let mut response = [0u8; RESPONSE_LEN];
    let parts: [&[u8]; 4] = [&[MSG_RESPONSE], &48u16.to_be_bytes(), &e_pub, &tag];
    for (d, b) in response.iter_mut().zip(parts.iter().flat_map(|p| p.iter())) {
        *d = *b;
    }
    let (k1, k2) = s.split();
    Ok(Accepted {
        response,
        machine: PublicKey::from_bytes(machine),
        version,
        transport: Transport::new(CipherState::new(k2), CipherState::new(k1), s.h),
    })
}

/// The error message a server sends instead of a response: type, length, UTF-8 text (cut to
/// 65535 bytes at a character boundary).
pub fn error_message(text: &str) -> Vec<u8> {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let body = text.get(..end).unwrap_or_default();
    let mut out = Vec::with_capacity(3 + body.len());
    out.push(MSG_ERROR);
    out.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

fn error_text(msg: &[u8]) -> String {
    let len = be16(msg.get(1..).unwrap_or_default());
    let body = msg.get(3..).unwrap_or_default();
    String::from_utf8_lossy(body.get(..len.min(body.len())).unwrap_or_default()).into_owned()
}

fn check_header(header: &[u8], kind: u8, len: u16, what: &'static str) -> Result<(), Error> {
    let got_kind = header.first().copied().unwrap_or(0);
    let got_len = be16(header.get(1..).unwrap_or_default());
    if got_kind != kind || got_len != usize::from(len) {
        return Err(Error::BadHeader {
            what,
            kind: got_kind,
            len: got_len,
        });
    }
    Ok(())
}

/// The big-endian `u16` at the start of `b` (0 if it is shorter).
pub(crate) fn be16(b: &[u8]) -> usize {
    match b {
        [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => 0,
    }
}
