//! The record layer after the handshake: type `0x04`, a big-endian 16-bit ciphertext length,
//! then ChaCha20-Poly1305 ciphertext without associated data, under a per-direction counter
//! placed big-endian in the nonce. Writes longer than [`MAX_PLAINTEXT_SIZE`] become several
//! records; an empty write is one empty record. Any failure breaks that direction for good.

use crate::handshake::be16;
use crate::primitives::{nonce_be, open, seal, Secret};
use crate::{Error, MAX_CIPHERTEXT_SIZE, MAX_PLAINTEXT_SIZE, MSG_RECORD};

/// One direction's key and counter.
pub(crate) struct CipherState {
    key: Secret,
    counter: u64,
    broken: bool,
}

impl CipherState {
    pub(crate) fn new(key: Secret) -> Self {
        Self {
            key,
            counter: 0,
            broken: false,
        }
    }

    fn next_nonce(&mut self) -> Result<[u8; 12], Error> {
        if self.broken {
            return Err(Error::Broken);
        }
        // The last counter value is never used: the connection ends first.
        if self.counter == u64::MAX {
            self.broken = true;
            return Err(Error::NonceExhausted);
        }
        let n = nonce_be(self.counter);
        self.counter += 1;
        Ok(n)
    }
}

/// Both directions of an established ts2021 connection.
pub struct Transport {
    send: CipherState,
    recv: CipherState,
    handshake_hash: [u8; 32],
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("sent", &self.send.counter)
            .field("received", &self.recv.counter)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub(crate) fn new(send: CipherState, recv: CipherState, handshake_hash: [u8; 32]) -> Self {
        Self {
            send,
            recv,
            handshake_hash,
        }
    }

    /// The handshake hash, identical on both sides (for channel binding).
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.handshake_hash
    }

    /// Encrypts `plaintext` into records appended to `out`.
    ///
    /// # Errors
    /// [`Error::NonceExhausted`] / [`Error::Broken`]: nothing more can be sent.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let mut chunks = plaintext.chunks(MAX_PLAINTEXT_SIZE);
        let first = chunks.next().unwrap_or_default();
        for chunk in std::iter::once(first).chain(chunks) {
            let nonce = self.send.next_nonce()?;
            let mut buf = chunk.to_vec();
            seal(&self.send.key, nonce, &[], &mut buf);
            out.push(MSG_RECORD);
            out.extend_from_slice(&u16::try_from(buf.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(&buf);
        }
        Ok(())
    }

    /// Decrypts one whole record (header included).
    ///
    /// # Errors
    /// [`Error::BadHeader`], [`Error::RecordTooLarge`], [`Error::BadLength`] for a malformed
    /// record, [`Error::Decrypt`] if it does not authenticate; after any error the receive
    /// direction stays broken ([`Error::Broken`]).
    pub fn open(&mut self, record: &[u8]) -> Result<Vec<u8>, Error> {
        let result = self.open_inner(record);
        if result.is_err() {
            self.recv.broken = true;
        }
        result
    }

    fn open_inner(&mut self, record: &[u8]) -> Result<Vec<u8>, Error> {
        if self.recv.broken {
            return Err(Error::Broken);
        }
        let len = record_len(record)?.ok_or(Error::BadLength {
            what: "record",
            want: 3,
            got: record.len(),
        })?;
        if record.len() != 3 + len {
            return Err(Error::BadLength {
                what: "record",
                want: 3 + len,
                got: record.len(),
            });
        }
        let nonce = self.recv.next_nonce()?;
        let mut buf = record.get(3..).unwrap_or_default().to_vec();
        open(&self.recv.key, nonce, &[], &mut buf)?;
        Ok(buf)
    }
}

/// The ciphertext length announced by a record header; `None` until 3 bytes are there.
fn record_len(bytes: &[u8]) -> Result<Option<usize>, Error> {
    let Some(&kind) = bytes.first() else {
        return Ok(None);
    };
    if bytes.len() < 3 {
        return Ok(None);
    }
    let len = be16(bytes.get(1..).unwrap_or_default());
    if kind != MSG_RECORD {
        return Err(Error::BadHeader {
            what: "record",
            kind,
            len,
        });
    }
    if len > MAX_CIPHERTEXT_SIZE {
        return Err(Error::RecordTooLarge(len));
    }
    Ok(Some(len))
}

/// Reassembles records from a byte stream that arrives in arbitrary pieces.
#[derive(Debug, Default)]
pub struct RecordReader {
    buf: Vec<u8>,
}

impl RecordReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a complete record.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next record's plaintext, if a whole record has arrived.
    ///
    /// # Errors
    /// As [`Transport::open`]; the connection's read side is then over.
    pub fn next(&mut self, transport: &mut Transport) -> Result<Option<Vec<u8>>, Error> {
        let len = match record_len(&self.buf) {
            Ok(Some(len)) => len,
            Ok(None) => return Ok(None),
            Err(e) => {
                transport.recv.broken = true;
                return Err(e);
            }
        };
        if self.buf.len() < 3 + len {
            return Ok(None);
        }
        let rest = self.buf.split_off(3 + len);
        let record = std::mem::replace(&mut self.buf, rest);
        transport.open(&record).map(Some)
    }
}
