//! Capability versions: which clients weft serves.
//!
//! Every client sends its `CapabilityVersion` (an integer Tailscale bumps whenever the client
//! learns something new) in `RegisterRequest.Version` and `MapRequest.Version`. A server must not
//! send a client anything it cannot understand, and the simplest safe policy is a floor: weft
//! serves version 113 (Tailscale 1.80) and newer, Headscale's choice of "the last ten minor
//! releases". From 113 on, weft can count on zstd map frames, delta maps and
//! `PeersChangedPatch`, `PacketFilters`, `HomeDERP`, `CapMap`, `DERPMap.HomeParams`, nil
//! `AllowedIPs` meaning "same as Addresses", and EarlyNoise. Older clients get a clear refusal
//! (HTTP 400 on `/machine/register` and `/machine/map`). Newer clients than weft knows are served
//! with what weft knows: the protocol only ever adds to what a newer client understands.

/// A client's capability version, as on the wire.
pub type CapabilityVersion = i64;

/// The oldest capability version weft serves: 113, Tailscale 1.80.
pub const MIN_SUPPORTED: CapabilityVersion = 113;

/// The newest capability version weft knows about: 145 (Tailscale's `CurrentCapabilityVersion`
/// when this crate was written). Newer clients are served too.
pub const NEWEST_KNOWN: CapabilityVersion = 145;

/// Capability versions at which features a server relies on appeared.
pub mod feature {
    use super::CapabilityVersion;

    /// `EarlyNoise` (the challenge sent before HTTP/2 on ts2021).
    pub const EARLY_NOISE: CapabilityVersion = 49;
    /// `MapResponse.PacketFilters` (named filters).
    pub const PACKET_FILTERS: CapabilityVersion = 81;
    /// `Node.HomeDERP` instead of the legacy `DERP` string.
    pub const HOME_DERP: CapabilityVersion = 111;
    /// Nil `Node.AllowedIPs` means the same as `Addresses`.
    pub const NIL_ALLOWED_IPS: CapabilityVersion = 112;
    /// `DERPRegion.NoMeasureNoHome`.
    pub const NO_MEASURE_NO_HOME: CapabilityVersion = 115;
    /// `DNSConfig` resolvers' `UseWithExitNode`.
    pub const RESOLVER_USE_WITH_EXIT_NODE: CapabilityVersion = 125;
    /// HTTP 429 with `Retry-After` on `/machine/register`.
    pub const REGISTER_429: CapabilityVersion = 137;
}

/// Tailscale releases and the capability version each sends (from Headscale's generated table),
/// oldest first. Used for messages that name a release.
pub const RELEASES: &[(&str, CapabilityVersion)] = &[
    ("1.80", 113),
    ("1.82", 115),
    ("1.84", 116),
    ("1.86", 123),
    ("1.88", 125),
    ("1.90", 130),
    ("1.92", 131),
    ("1.94", 131),
    ("1.96", 133),
    ("1.98", 138),
];

/// Why a client's capability version is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapVerError {
    /// The client is older than [`MIN_SUPPORTED`].
    #[error(
        "client capability version {got} is too old: this server needs {min} \
         (Tailscale 1.80) or newer; please update the client"
    )]
    TooOld {
        /// The version the client sent.
        got: CapabilityVersion,
        /// [`MIN_SUPPORTED`].
        min: CapabilityVersion,
    },
}

/// How weft will serve a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// A version weft knows: served fully.
    Known(CapabilityVersion),
    /// Newer than [`NEWEST_KNOWN`]: served with what weft knows.
    Newer(CapabilityVersion),
}

/// Decides whether to serve a client that sent capability version `version`.
///
/// # Errors
/// [`CapVerError::TooOld`] below [`MIN_SUPPORTED`].
pub fn check(version: CapabilityVersion) -> Result<Serve, CapVerError> {
    if version < MIN_SUPPORTED {
        Err(CapVerError::TooOld {
            got: version,
            min: MIN_SUPPORTED,
        })
    } else if version > NEWEST_KNOWN {
        Ok(Serve::Newer(version))
    } else {
        Ok(Serve::Known(version))
    }
}

/// The newest Tailscale release whose capability version is at most `version`, if any.
pub fn release_for(version: CapabilityVersion) -> Option<&'static str> {
    RELEASES
        .iter()
        .rev()
        .find(|(_, v)| *v <= version)
        .map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_and_ceiling() {
        assert_eq!(check(112), Err(CapVerError::TooOld { got: 112, min: 113 }));
        assert_eq!(check(0), Err(CapVerError::TooOld { got: 0, min: 113 }));
        assert_eq!(check(-1), Err(CapVerError::TooOld { got: -1, min: 113 }));
        assert_eq!(check(113), Ok(Serve::Known(113)));
        assert_eq!(check(133), Ok(Serve::Known(133)));
        assert_eq!(check(145), Ok(Serve::Known(145)));
        assert_eq!(check(146), Ok(Serve::Newer(146)));
        let msg = check(100).unwrap_err().to_string();
        assert!(msg.contains("100") && msg.contains("113"), "{msg}");
    }

    #[test]
    fn releases_are_ordered_and_served() {
        assert!(RELEASES.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(RELEASES.iter().all(|(_, v)| check(*v).is_ok()));
        assert_eq!(release_for(133), Some("1.96"));
        assert_eq!(release_for(124), Some("1.86"));
        assert_eq!(release_for(112), None);
    }
}
