//! Where a DERP server is: `https://host[:port]` (the normal case) or `http://host[:port]`
//! (plain HTTP, tests and labs only), optionally with a certificate pin in the fragment.
//!
//! A DERP map node becomes `https://<HostName>:<DERPPort>` and, when its `CertName` is a
//! `sha256-raw:<hex>` pin, `#sha256-raw:<hex>`: the fragment is never sent, so it is a natural
//! place to carry the pin on a command line (`--mesh-with`). A path is accepted only if it is
//! empty, `/` or `/derp`: the client always asks for `/derp`.

use std::fmt;

/// Scheme of a [`DerpUrl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// TLS (port 443 by default).
    Https,
    /// Plain HTTP (port 80 by default); test mode.
    Http,
}

/// A parsed DERP server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerpUrl {
    /// TLS or not.
    pub scheme: Scheme,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// A `sha256-raw:<hex>` certificate pin given as the URL's fragment.
    pub pin: Option<String>,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Neither `https://` nor `http://`.
    #[error("{0:?}: the scheme must be https:// or http://")]
    Scheme(String),
    /// Empty host, bad brackets or a bad port.
    #[error("{0:?}: bad host or port")]
    HostPort(String),
    /// A path other than `/derp`.
    #[error("{0:?}: the only path a DERP URL may have is /derp")]
    Path(String),
    /// A fragment that is not `sha256-raw:` and 64 hex digits.
    #[error("{0:?}: the fragment must be a sha256-raw:<64 hex digits> pin")]
    Pin(String),
}

impl DerpUrl {
    /// Parses `https://host[:port][/derp][#sha256-raw:<hex>]` (or `http://`).
    ///
    /// # Errors
    /// [`UrlError`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let bad = |f: fn(String) -> UrlError| f(text.to_owned());
        let (scheme, rest) = if let Some(r) = text.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = text.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return Err(bad(UrlError::Scheme));
        };
        let (rest, pin) = match rest.split_once('#') {
            Some((r, frag)) => {
                if !is_pin(frag) {
                    return Err(bad(UrlError::Pin));
                }
                (r, Some(frag.to_ascii_lowercase()))
            }
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !matches!(path, "" | "/" | "/derp") {
            return Err(bad(UrlError::Path));
        }
        let default_port = match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        };
        let (host, port) =
            split_host_port(authority, default_port).ok_or(bad(UrlError::HostPort))?;
        Ok(Self {
            scheme,
            host,
            port,
            pin,
        })
    }

    /// Whether the connection uses TLS.
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Https
    }

    /// The `Host` header value: host (bracketed if IPv6) and the port unless it is the
    /// scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = match self.scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for DerpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{host}:{}", self.port)?;
        if let Some(pin) = &self.pin {
            write!(f, "#{pin}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for DerpUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, UrlError> {
        Self::parse(s)
    }
}

/// Whether `s` is `sha256-raw:` followed by 64 hex digits.
pub(crate) fn is_pin(s: &str) -> bool {
    s.strip_prefix("sha256-raw:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn split_host_port(a: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(r) = a.strip_prefix('[') {
        let (h, after) = r.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (h, port)
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return None, // an IPv6 literal needs brackets
            None => (a, None),
        }
    };
    if host.is_empty() || host.contains(['@', ' ', '/', '?']) {
        return None;
    }
    let port = match port {
        Some(p) => p.parse().ok().filter(|p| *p != 0)?,
        None => default_port,
    };
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_in_use() {
        let u = DerpUrl::parse("https://derp.example:3340").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (Scheme::Https, "derp.example", 3340)
        );
        assert_eq!(u.host_header(), "derp.example:3340");
        let u = DerpUrl::parse("http://127.0.0.1/derp").unwrap();
        assert_eq!(
            (u.scheme, u.port, u.host_header()),
            (Scheme::Http, 80, "127.0.0.1".into())
        );
        let pin = format!("sha256-raw:{}", "Ab".repeat(32));
        let u = DerpUrl::parse(&format!("https://[::1]:443/#{pin}")).unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.pin, Some(pin.to_ascii_lowercase()));
        assert_eq!(u.host_header(), "[::1]");
        assert_eq!(DerpUrl::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn refuses_the_rest() {
        for bad in [
            "ftp://x",
            "x:1",
            "https://",
            "https://:1",
            "https://h:0",
            "https://h:99999",
            "https://::1",
            "https://h/other",
            "https://h#sha256-raw:12",
            "https://h#pin",
            "https://u@h",
        ] {
            assert!(DerpUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
