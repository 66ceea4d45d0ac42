//! The first HTTP request head of a connection, read before hyper sees the connection.
//!
//! Why not leave it all to hyper: a DERP client that already knows the server's key sends
//! `Derp-Fast-Start: 1` and expects DERP frames at once, with no HTTP response at all, which an
//! HTTP server library cannot express. So the shell reads the first request head itself; a
//! fast-start DERP request is served directly, anything else is handed to hyper together with
//! the bytes already read ([`Rewind`]). The parse uses `httparse`; this module only picks the
//! few headers DERP cares about, and the captive-portal challenge check.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest request head read before giving up on a connection.
pub const MAX_HEAD: usize = 16 << 10;

/// What the shell needs to know about a request head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// Method.
    pub method: String,
    /// Path (with any query).
    pub path: String,
    /// The `Upgrade` header, lowercased.
    pub upgrade: Option<String>,
    /// `Derp-Fast-Start: 1`.
    pub fast_start: bool,
    /// An `Ideal-Node` header was sent (the client's first-choice node is another).
    pub not_ideal: bool,
    /// Length of the head including the blank line.
    pub len: usize,
}

impl Head {
    /// Whether this asks for the DERP protocol over an HTTP upgrade.
    pub fn is_derp_upgrade(&self) -> bool {
        self.method == "GET"
            && self.path.split('?').next() == Some("/derp")
            && self.upgrade.as_deref() == Some("derp")
    }
}

/// Parses a request head at the start of `buf`: `Ok(None)` while incomplete.
///
/// # Errors
/// When the bytes are not an HTTP/1.x request head (or the head is longer than [`MAX_HEAD`]).
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if buf.len() > MAX_HEAD => {
            return Err(httparse::Error::TooManyHeaders)
        }
        httparse::Status::Partial => return Ok(None),
    };
    let mut head = Head {
        method: req.method.unwrap_or_default().to_owned(),
        path: req.path.unwrap_or_default().to_owned(),
        len,
        ..Head::default()
    };
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_owned();
        if h.name.eq_ignore_ascii_case("upgrade") {
            head.upgrade = Some(value.to_ascii_lowercase());
        } else if h.name.eq_ignore_ascii_case("derp-fast-start") {
            head.fast_start = value == "1";
        } else if h.name.eq_ignore_ascii_case("ideal-node") {
            head.not_ideal = !value.is_empty();
        }
    }
    Ok(Some(head))
}

/// The captive-portal answer for an `X-Tailscale-Challenge` value: `response <v>` when the
/// value is 1–64 characters of `[A-Za-z0-9._:-]`, nothing otherwise (as upstream).
pub fn challenge_response(challenge: &[u8]) -> Option<String> {
    let ok = !challenge.is_empty()
        && challenge.len() <= 64
        && challenge
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if !ok {
        return None;
    }
    Some(format!("response {}", String::from_utf8_lossy(challenge)))
}

/// A stream that first yields bytes already read from it.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    /// `prefix` is read before `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.prefix.get(this.pos..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn derp_upgrade_heads() {
        let req: &[u8] =
            b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\
              Derp-Fast-Start: 1\r\nIdeal-Node: 1a\r\n\r\nrest";
        let h = parse_head(req).unwrap().unwrap();
        assert!(h.is_derp_upgrade());
        assert!(h.fast_start && h.not_ideal);
        assert_eq!(h.len, req.len() - 4);
        let h = parse_head(b"GET /derp HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.is_derp_upgrade());
        assert_eq!(parse_head(b"GET /derp HTTP/1.1\r\nUpg").unwrap(), None);
        assert!(parse_head(b"\x16\x03\x01\x02\x00").is_err());
    }

    #[test]
    fn challenges() {
        assert_eq!(
            challenge_response(b"ts_derp1.example:3340").as_deref(),
            Some("response ts_derp1.example:3340")
        );
        assert_eq!(challenge_response(b""), None);
        assert_eq!(challenge_response(b"a b"), None);
        assert_eq!(challenge_response(&[b'a'; 65]), None);
        assert!(challenge_response(&[b'a'; 64]).is_some());
    }

    proptest! {
        #[test]
        fn parse_head_never_panics_and_len_is_in_bounds(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some(h)) = parse_head(&buf) {
                prop_assert!(h.len <= buf.len());
                prop_assert_eq!(buf[h.len - 1], b'\n');
            }
        }

        #[test]
        fn challenge_echoes_exactly_the_allowed_values(v in "[A-Za-z0-9._:-]{1,64}", junk in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(challenge_response(v.as_bytes()), Some(format!("response {v}")));
            let allowed = !junk.is_empty() && junk.len() <= 64 && junk.iter().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(b));
            prop_assert_eq!(challenge_response(&junk).is_some(), allowed);
        }
    }
}
