//! The DERP handshake payloads: the sealed ClientInfo and ServerInfo JSON and the mesh key.
//!
//! After the server's ServerKey frame the client proves it holds its node key by sealing a
//! small JSON object to the server's key with a NaCl box (X25519 + XSalsa20-Poly1305, the
//! `crypto_box` crate), and the server answers with a ServerInfo sealed the other way. The box
//! layout is Go's `nacl/box`: a 24-byte nonce, then the 16-byte tag and the ciphertext.
//!
//! Nonces are inputs (the state machines draw them from a seeded generator the shell seeds from
//! the OS), so this module does no I/O and reads no randomness itself.
//!
//! JSON field names follow the official client (`meshKey`, `version`, `CanAckPings`,
//! `IsProber`, `AppName`); reading matches names case-insensitively as Go's `encoding/json`
//! does, so old and new spellings both work. Unknown fields are ignored.

use std::fmt;

use crypto_box::aead::Aead;
use subtle::ConstantTimeEq;
use weft_keys::{PrivateKey, PublicKey};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::frame::{Frame, MAX_CLIENT_INFO_LEN, MAX_INFO_LEN, NONCE_LEN, PROTOCOL_VERSION};

/// Why a handshake payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The sealed payload is shorter than a nonce or longer than the side's limit.
    #[error("sealed payload of {len} bytes is out of bounds")]
    BadLength {
        /// Sealed length (nonce included).
        len: usize,
    },
    /// The box did not open: wrong key, or the bytes were altered.
    #[error("sealed payload does not open with this key pair")]
    Open,
    /// Sealing failed (only for messages too long for XSalsa20).
    #[error("sealing failed")]
    Seal,
    /// The opened bytes are not the expected JSON object.
    #[error("bad handshake JSON: {0}")]
    Json(String),
    /// The `meshKey` field is not 64 hex digits.
    #[error("invalid mesh key")]
    BadMeshKey,
}

/// The pre-shared key of the servers of one region (64 hex digits on the command line and in
/// ClientInfo). Compared in constant time; `Debug` never shows it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MeshKey([u8; 32]);

impl MeshKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex digits (either case).
    ///
    /// # Errors
    /// [`HandshakeError::BadMeshKey`] for anything else.
    pub fn from_hex(s: &str) -> Result<Self, HandshakeError> {
        let mut b = [0u8; 32];
        if s.len() != 64 {
            return Err(HandshakeError::BadMeshKey);
        }
        hex::decode_to_slice(s, &mut b).map_err(|_| HandshakeError::BadMeshKey)?;
        Ok(Self(b))
    }

    /// Lowercase hex, the wire form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether this is the all-zero key (which means "none").
    pub fn is_zero(&self) -> bool {
        self.0.ct_eq(&[0u8; 32]).into()
    }

    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for MeshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeshKey(<redacted>)")
    }
}

/// What a client tells the server about itself in the ClientInfo frame.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The mesh key, for other servers of the region (omitted when absent).
    pub mesh_key: Option<MeshKey>,
    /// The client's protocol version (2 today; 0 when absent).
    pub version: u32,
    /// Whether the client answers pings.
    pub can_ack_pings: bool,
    /// Whether the client is a prober.
    pub is_prober: bool,
    /// An opaque application name, for statistics.
    pub app_name: Option<String>,
}

impl PartialEq for ClientInfo {
    fn eq(&self, other: &Self) -> bool {
        let mesh = match (&self.mesh_key, &other.mesh_key) {
            (None, None) => true,
            (Some(a), Some(b)) => a.ct_eq(b),
            _ => false,
        };
        mesh && self.version == other.version
            && self.can_ack_pings == other.can_ack_pings
            && self.is_prober == other.is_prober
            && self.app_name == other.app_name
    }
}

/// What the server tells the client in the ServerInfo frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerInfo {
    /// The server's protocol version.
    pub version: u32,
    /// A send rate the client should keep to (bytes per second; 0 = no limit).
    pub token_bucket_bytes_per_second: u64,
    /// The burst of that rate limit.
    pub token_bucket_bytes_burst: u64,
}

fn json_str(s: &str) -> String {
    // Serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// Parses `bytes` as a JSON object and yields its fields with lowercased names.
fn json_fields(bytes: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, HandshakeError> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(m)) => Ok(m
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect()),
        Ok(_) => Err(HandshakeError::Json("not an object".into())),
        Err(e) => Err(HandshakeError::Json(e.to_string())),
    }
}

fn field_u64(v: &serde_json::Value, name: &str) -> Result<u64, HandshakeError> {
    match v {
        serde_json::Value::Null => Ok(0),
        v => v
            .as_u64()
            .ok_or_else(|| HandshakeError::Json(format!("{name}: not an unsigned integer"))),
    }
}

fn field_bool(v: &serde_json::Value, name: &str) -> Result<bool, HandshakeError> {
    match v {
        serde_json::Value::Null => Ok(false),
        v => v
            .as_bool()
            .ok_or_else(|| HandshakeError::Json(format!("{name}: not a boolean"))),
    }
}

impl ClientInfo {
    /// The JSON the official client sends (field names and omissions as in `derp_client.go`).
    pub fn to_json(&self) -> String {
        let mut parts = Vec::new();
        if let Some(k) = self.mesh_key.as_ref().filter(|k| !k.is_zero()) {
            parts.push(format!("\"meshKey\":\"{}\"", k.to_hex()));
        }
        if self.version != 0 {
            parts.push(format!("\"version\":{}", self.version));
        }
        parts.push(format!("\"CanAckPings\":{}", self.can_ack_pings));
        if self.is_prober {
            parts.push("\"IsProber\":true".into());
        }
        if let Some(name) = self.app_name.as_deref().filter(|n| !n.is_empty()) {
            parts.push(format!("\"AppName\":{}", json_str(name)));
        }
        format!("{{{}}}", parts.join(","))
    }

    /// Parses the JSON, matching field names case-insensitively.
    ///
    /// # Errors
    /// [`HandshakeError::Json`] for malformed JSON or mistyped fields,
    /// [`HandshakeError::BadMeshKey`] for a mesh key that is not 64 hex digits.
    pub fn from_json(bytes: &[u8]) -> Result<Self, HandshakeError> {
        let mut info = Self::default();
        for (name, v) in json_fields(bytes)? {
            match name.as_str() {
                "meshkey" => match &v {
                    serde_json::Value::Null => {}
                    serde_json::Value::String(s) if s.is_empty() => {}
                    serde_json::Value::String(s) => {
                        let k = MeshKey::from_hex(s)?;
                        info.mesh_key = (!k.is_zero()).then_some(k);
                    }
                    _ => return Err(HandshakeError::BadMeshKey),
                },
                "version" => {
                    let v = field_u64(&v, "version")?;
                    info.version = u32::try_from(v)
                        .map_err(|_| HandshakeError::Json("version: out of range".into()))?;
                }
                "canackpings" => info.can_ack_pings = field_bool(&v, "CanAckPings")?,
                "isprober" => info.is_prober = field_bool(&v, "IsProber")?,
                "appname" => {
                    info.app_name = match v {
                        serde_json::Value::Null => None,
                        serde_json::Value::String(s) => Some(s),
                        _ => return Err(HandshakeError::Json("AppName: not a string".into())),
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }
}

impl ServerInfo {
    /// The ServerInfo weft's server sends: this protocol version, no rate limit.
    pub const fn current() -> Self {
        Self {
            version: PROTOCOL_VERSION,
            token_bucket_bytes_per_second: 0,
            token_bucket_bytes_burst: 0,
        }
    }

    /// The JSON the official server sends (zero fields omitted).
    pub fn to_json(&self) -> String {
        let mut parts = Vec::new();
        if self.version != 0 {
            parts.push(format!("\"version\":{}", self.version));
        }
        if self.token_bucket_bytes_per_second != 0 {
            parts.push(format!(
                "\"TokenBucketBytesPerSecond\":{}",
                self.token_bucket_bytes_per_second
            ));
        }
        if self.token_bucket_bytes_burst != 0 {
            parts.push(format!(
                "\"TokenBucketBytesBurst\":{}",
                self.token_bucket_bytes_burst
            ));
        }
        format!("{{{}}}", parts.join(","))
    }

    /// Parses the JSON, matching field names case-insensitively.
    ///
    /// # Errors
    /// [`HandshakeError::Json`] for malformed JSON or mistyped fields.
    pub fn from_json(bytes: &[u8]) -> Result<Self, HandshakeError> {
        let mut info = Self::default();
        for (name, v) in json_fields(bytes)? {
            match name.as_str() {
                "version" => {
                    info.version = u32::try_from(field_u64(&v, "version")?)
                        .map_err(|_| HandshakeError::Json("version: out of range".into()))?;
                }
                "tokenbucketbytespersecond" => {
                    info.token_bucket_bytes_per_second =
                        field_u64(&v, "TokenBucketBytesPerSecond")?;
                }
                "tokenbucketbytesburst" => {
                    info.token_bucket_bytes_burst = field_u64(&v, "TokenBucketBytesBurst")?;
                }
                _ => {}
            }
        }
        Ok(info)
    }
}

fn salsa_box(private: &PrivateKey, peer: &PublicKey) -> crypto_box::SalsaBox {
    let secret = crypto_box::SecretKey::from_bytes(*private.as_bytes());
    crypto_box::SalsaBox::new(
        &crypto_box::PublicKey::from_bytes(*peer.as_bytes()),
        &secret,
    )
}

/// Seals `msg` from `private` to `peer`: returns the nonce followed by the box (tag + ciphertext).
///
/// # Errors
/// [`HandshakeError::Seal`] only for messages too long for the cipher.
pub fn seal(
    private: &PrivateKey,
    peer: &PublicKey,
    nonce: [u8; NONCE_LEN],
    msg: &[u8],
) -> Result<Vec<u8>, HandshakeError> {
    let b = salsa_box(private, peer);
    let ct = b
        .encrypt(&crypto_box::Nonce::from(nonce), msg)
        .map_err(|_| HandshakeError::Seal)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens a `nonce ‖ box` sealed by `peer` to `private`.
///
/// # Errors
/// [`HandshakeError::BadLength`] when shorter than a nonce, [`HandshakeError::Open`] when the box
/// does not authenticate.
pub fn open(
    private: &PrivateKey,
    peer: &PublicKey,
    sealed: &[u8],
) -> Result<Vec<u8>, HandshakeError> {
    let Some((nonce, boxed)) = sealed.split_first_chunk::<NONCE_LEN>() else {
        return Err(HandshakeError::BadLength { len: sealed.len() });
    };
    salsa_box(private, peer)
        .decrypt(&crypto_box::Nonce::from(*nonce), boxed)
        .map_err(|_| HandshakeError::Open)
}

/// Builds the ClientInfo frame (client key, then `info` sealed to the server) into `out`.
///
/// # Errors
/// [`HandshakeError::Seal`] (not expected for ClientInfo sizes).
pub fn write_client_info(
    client: &PrivateKey,
    server: &PublicKey,
    info: &ClientInfo,
    nonce: [u8; NONCE_LEN],
    out: &mut Vec<u8>,
) -> Result<(), HandshakeError> {
    let sealed = seal(client, server, nonce, info.to_json().as_bytes())?;
    Frame::ClientInfo {
        key: client.public_key(),
        sealed: &sealed,
    }
    .encode_to_vec(out)
    .map_err(|_| HandshakeError::Seal)
}

/// Opens the sealed part of a ClientInfo frame sent by `client` to the server's `private` key.
///
/// # Errors
/// [`HandshakeError::BadLength`] above [`MAX_CLIENT_INFO_LEN`], then as [`open`] and
/// [`ClientInfo::from_json`].
pub fn open_client_info(
    server: &PrivateKey,
    client: &PublicKey,
    sealed: &[u8],
) -> Result<ClientInfo, HandshakeError> {
    if sealed.len() + crate::frame::KEY_LEN > MAX_CLIENT_INFO_LEN {
        return Err(HandshakeError::BadLength { len: sealed.len() });
    }
    ClientInfo::from_json(&open(server, client, sealed)?)
}

/// Builds the ServerInfo frame (`info` sealed to the client) into `out`.
///
/// # Errors
/// [`HandshakeError::Seal`] (not expected for ServerInfo sizes).
pub fn write_server_info(
    server: &PrivateKey,
    client: &PublicKey,
    info: &ServerInfo,
    nonce: [u8; NONCE_LEN],
    out: &mut Vec<u8>,
) -> Result<(), HandshakeError> {
    let sealed = seal(server, client, nonce, info.to_json().as_bytes())?;
    Frame::ServerInfo { sealed: &sealed }
        .encode_to_vec(out)
        .map_err(|_| HandshakeError::Seal)
}

/// Opens a ServerInfo frame's payload sent by `server` to the client's `private` key.
///
/// # Errors
/// [`HandshakeError::BadLength`] above nonce + [`MAX_INFO_LEN`], then as [`open`] and
/// [`ServerInfo::from_json`].
pub fn open_server_info(
    client: &PrivateKey,
    server: &PublicKey,
    sealed: &[u8],
) -> Result<ServerInfo, HandshakeError> {
    if sealed.len() > NONCE_LEN + MAX_INFO_LEN {
        return Err(HandshakeError::BadLength { len: sealed.len() });
    }
    ServerInfo::from_json(&open(client, server, sealed)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // golang.org/x/crypto nacl/box TestBox: keys of all 1s and 2s, message of 3s, nonce of 4s;
    // the expected box was made with the C NaCl. Go's box is what DERP seals with.
    #[test]
    fn nacl_box_vector() {
        let sk1 = PrivateKey::from_bytes([1; 32]);
        let sk2 = PrivateKey::from_bytes([2; 32]);
        let sealed = seal(&sk2, &sk1.public_key(), [4; 24], &[3; 64]).unwrap();
        assert_eq!(&sealed[..24], &[4; 24]);
        assert_eq!(
            hex::encode(&sealed[24..]),
            "78ea30b19d2341ebbdba54180f821eec265cf86312549bea8a37652a8bb94f07b78a73ed1708085e6ddd0e9\
             43bbdeb8755079a37eb31d86163ce241164a47629c0539f330b4914cd135b3855bc2a2dfc"
        );
        assert_eq!(open(&sk1, &sk2.public_key(), &sealed).unwrap(), vec![3; 64]);
    }

    #[test]
    fn client_info_json_shape() {
        let info = ClientInfo {
            mesh_key: None,
            version: 2,
            can_ack_pings: true,
            is_prober: false,
            app_name: None,
        };
        assert_eq!(info.to_json(), r#"{"version":2,"CanAckPings":true}"#);
        let mesh = ClientInfo {
            mesh_key: Some(MeshKey::from_bytes([0xab; 32])),
            is_prober: true,
            app_name: Some("weft \"x\"".into()),
            ..info.clone()
        };
        let json = mesh.to_json();
        assert!(json.starts_with(&format!("{{\"meshKey\":\"{}\"", "ab".repeat(32))));
        assert_eq!(ClientInfo::from_json(json.as_bytes()).unwrap(), mesh);
        assert_eq!(
            ClientInfo::from_json(info.to_json().as_bytes()).unwrap(),
            info
        );
    }

    // Cases of upstream derp_test.go TestClientInfoUnmarshal: either capitalisation works, bad
    // mesh key lengths are refused.
    #[test]
    fn client_info_unmarshal_cases() {
        const K: &str = "6d529e9d4ef632d22d4a4214cb49da8f1ba1b72697061fb24e312984c35ec8d8";
        assert_eq!(ClientInfo::from_json(b"{}").unwrap(), ClientInfo::default());
        for json in [
            format!(r#"{{"Version":5,"MeshKey":"{K}"}}"#),
            format!(r#"{{"version":5,"meshKey":"{K}"}}"#),
        ] {
            let got = ClientInfo::from_json(json.as_bytes()).unwrap();
            assert_eq!(got.version, 5);
            assert!(got.mesh_key.unwrap().ct_eq(&MeshKey::from_hex(K).unwrap()));
        }
        assert_eq!(
            ClientInfo::from_json(br#"{"version":5,"meshKey":"abcdefg"}"#),
            Err(HandshakeError::BadMeshKey)
        );
        let long = format!(r#"{{"version":5,"meshKey":"{}"}}"#, "f".repeat(68));
        assert_eq!(
            ClientInfo::from_json(long.as_bytes()),
            Err(HandshakeError::BadMeshKey)
        );
        assert!(ClientInfo::from_json(br#"{"version":"2"}"#).is_err());
        assert!(ClientInfo::from_json(b"[1]").is_err());
    }

    #[test]
    fn client_info_frame_opens_at_the_server() {
        let client = PrivateKey::from_bytes([9; 32]);
        let server = PrivateKey::from_bytes([10; 32]);
        let info = ClientInfo {
            version: 2,
            can_ack_pings: true,
            ..ClientInfo::default()
        };
        let mut out = Vec::new();
        write_client_info(&client, &server.public_key(), &info, [7; 24], &mut out).unwrap();
        let (f, _) = crate::frame::decode(&out, crate::frame::SERVER_MAX_FRAME_LEN)
            .unwrap()
            .unwrap();
        let Frame::ClientInfo { key, sealed } = f else {
            panic!("not client info: {f:?}");
        };
        assert_eq!(key, client.public_key());
        assert_eq!(open_client_info(&server, &key, sealed).unwrap(), info);
        // The wrong server key cannot open it.
        let other = PrivateKey::from_bytes([11; 32]);
        assert_eq!(
            open_client_info(&other, &key, sealed),
            Err(HandshakeError::Open)
        );
    }

    #[test]
    fn server_info_round_trip() {
        let client = PrivateKey::from_bytes([9; 32]);
        let server = PrivateKey::from_bytes([10; 32]);
        assert_eq!(ServerInfo::current().to_json(), r#"{"version":2}"#);
        let info = ServerInfo {
            version: 2,
            token_bucket_bytes_per_second: 1000,
            token_bucket_bytes_burst: 5000,
        };
        let mut out = Vec::new();
        write_server_info(&server, &client.public_key(), &info, [1; 24], &mut out).unwrap();
        let Frame::ServerInfo { sealed } =
            crate::frame::decode(&out, crate::frame::CLIENT_MAX_FRAME_LEN)
                .unwrap()
                .unwrap()
                .0
        else {
            panic!("not server info");
        };
        assert_eq!(
            open_server_info(&client, &server.public_key(), sealed).unwrap(),
            info
        );
    }

    #[test]
    fn mesh_key_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", MeshKey::from_bytes([1; 32])),
            "MeshKey(<redacted>)"
        );
    }

    proptest! {
        #[test]
        fn tampered_boxes_never_open(msg in prop::collection::vec(any::<u8>(), 0..64), flip in any::<usize>()) {
            let a = PrivateKey::from_bytes([3; 32]);
            let b = PrivateKey::from_bytes([4; 32]);
            let mut sealed = seal(&a, &b.public_key(), [5; 24], &msg).unwrap();
            prop_assert_eq!(open(&b, &a.public_key(), &sealed).unwrap(), msg);
            let i = flip % sealed.len();
            sealed[i] ^= 0x40;
            prop_assert_eq!(open(&b, &a.public_key(), &sealed), Err(HandshakeError::Open));
        }

        #[test]
        fn json_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
            let _ = ClientInfo::from_json(&bytes);
            let _ = ServerInfo::from_json(&bytes);
        }
    }
}
