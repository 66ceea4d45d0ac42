//! Admission through a verify URL, as Tailscale's derper does with `--verify-client-url`.
//!
//! Before a client is accepted the relay POSTs `{"NodePublic":"nodekey:<hex>","Source":"<ip>"}`
//! (tailcfg's `DERPAdmitClientRequest`) to the URL and admits the client only when the answer is
//! 200 with `{"Allow":true}` (`DERPAdmitClientResponse`). Everything else — another status, a
//! body that does not parse, a refused connection, no answer within [`VERIFY_TIMEOUT`] —
//! denies: a relay that cannot ask its coordination server fails closed. Mesh peers (who present
//! the region's mesh key) are never asked about.
//!
//! Only `http://` URLs are supported: the coordination server's `/verify` is reached on a
//! trusted network (or loopback) in the lab.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use weft_keys::PublicKey;

/// How long one admission check may take before it counts as a denial.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer body read.
const MAX_BODY: usize = 64 << 10;

/// Why an admission check failed (each one denies the client).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The URL is not a usable `http://host[:port]/path` URL.
    #[error("verify URL {0:?} is not an http:// URL with a host")]
    BadUrl(String),
    /// No answer in time.
    #[error("no answer within {VERIFY_TIMEOUT:?}")]
    Timeout,
    /// Connecting or the HTTP exchange failed.
    #[error("request failed: {0}")]
    Http(String),
    /// The server answered with another status than 200.
    #[error("status {0}")]
    Status(u16),
    /// The body is not a `DERPAdmitClientResponse`.
    #[error("bad answer: {0}")]
    Body(#[from] serde_json::Error),
    /// `Allow` is not a boolean.
    #[error("bad answer: Allow is not a boolean")]
    NotBool,
}

#[derive(serde::Serialize)]
struct AdmitRequest {
    #[serde(rename = "NodePublic")]
    node_public: String,
    #[serde(rename = "Source")]
    source: String,
}

/// The request body for `key` connecting from `source`, as upstream encodes it (the key in its
/// `nodekey:` text form, the address as text, empty when unknown).
pub fn admit_request_body(key: &PublicKey, source: Option<IpAddr>) -> String {
    let req = AdmitRequest {
        node_public: format!("nodekey:{}", key.to_hex()),
        source: source
            .map(|a| a.to_canonical().to_string())
            .unwrap_or_default(),
    };
    serde_json::to_string(&req).unwrap_or_default()
}

/// Whether an answer body admits the client: a JSON object whose `Allow` member (matched
/// without regard to case, as Go's decoder does) is `true`; a missing member denies.
///
/// # Errors
/// [`VerifyError::Body`] when the body is not a JSON object or `Allow` is not a boolean.
pub fn parse_admit_response(body: &[u8]) -> Result<bool, VerifyError> {
    let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)?;
    let mut allow = false;
    for (k, v) in &obj {
        if k.eq_ignore_ascii_case("allow") {
            allow = match v {
                serde_json::Value::Bool(b) => *b,
                _ => return Err(VerifyError::NotBool),
            };
        }
    }
    Ok(allow)
}

/// A configured verify URL.
#[derive(Debug, Clone)]
pub struct Verifier {
    uri: Uri,
    authority: String,
}

impl Verifier {
    /// Checks the URL.
    ///
    /// # Errors
    /// [`VerifyError::BadUrl`] for anything but `http://host[:port][/path]`.
    pub fn new(url: &str) -> Result<Self, VerifyError> {
        let bad = || VerifyError::BadUrl(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?;
        let authority = format!("{}:{}", host, uri.port_u16().unwrap_or(80));
        Ok(Self { uri, authority })
    }

    /// Asks whether `key` may connect; `Ok(false)` is a denial by the URL.
    ///
    /// # Errors
    /// Any [`VerifyError`]; the caller denies the client.
    pub async fn admit(
        &self,
        key: &PublicKey,
        source: Option<IpAddr>,
    ) -> Result<bool, VerifyError> {
        match tokio::time::timeout(VERIFY_TIMEOUT, self.ask(key, source)).await {
            Ok(r) => r,
            Err(_) => Err(VerifyError::Timeout),
        }
    }

    async fn ask(&self, key: &PublicKey, source: Option<IpAddr>) -> Result<bool, VerifyError> {
        let http = |e: &dyn std::fmt::Display| VerifyError::Http(e.to_string());
        let tcp = tokio::net::TcpStream::connect(self.authority.as_str())
            .await
            .map_err(|e| http(&e))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| http(&e))?;
        let conn = tokio::spawn(conn);
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, self.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(admit_request_body(key, source))))
            .map_err(|e| http(&e))?;
        let resp = send.send_request(req).await.map_err(|e| http(&e))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| http(&*e))?
            .to_bytes();
        conn.abort();
        if status != 200 {
            return Err(VerifyError::Status(status));
        }
        parse_admit_response(&body)
    }
}
