//! Go's `time.Time` and `time.Duration` as they appear in the control protocol's JSON.
//!
//! Representation: [`Time`] wraps [`time::OffsetDateTime`] (the `time` crate, already used in the
//! workspace; no chrono). It was chosen over a hand-written seconds+nanos pair because it parses
//! and prints RFC 3339 with offsets and fractional seconds exactly as Go's `time.Time` JSON does,
//! and it keeps the offset a peer sent, so a value read and written back is unchanged.
//!
//! Go facts: a `time.Time` is written as RFC 3339 with as many fractional digits as needed (none
//! for whole seconds, trailing zeros trimmed), `Z` for UTC; the zero value is
//! `0001-01-01T00:00:00Z`, which is what `RegisterRequest.Expiry` carries when unset and what
//! `omitzero` fields leave out. `time.Duration` is an integer count of nanoseconds.
//!
//! This module reads no clock: callers pass times in.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time as TimeOfDay, UtcOffset};

/// Why a time text could not be parsed or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// The text is not an RFC 3339 timestamp.
    #[error("not an RFC 3339 time: {0}")]
    Parse(String),
    /// The time cannot be written as RFC 3339 (Go refuses years outside 0..=9999 too).
    #[error("time cannot be written as RFC 3339: {0}")]
    Format(String),
    /// A Unix time outside the representable range.
    #[error("unix time out of range")]
    OutOfRange,
}

/// A point in time as Go's `time.Time` encodes it in JSON. `Default` is Go's zero time.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Time(OffsetDateTime);

/// Go's zero time, 0001-01-01T00:00:00Z.
const GO_ZERO: OffsetDateTime = PrimitiveDateTime::new(
    match Date::from_calendar_date(1, Month::January, 1) {
        Ok(d) => d,
        Err(_) => Date::MIN,
    },
    TimeOfDay::MIDNIGHT,
)
.assume_offset(UtcOffset::UTC);

impl Time {
    /// Go's zero time (`0001-01-01T00:00:00Z`): "unset" in the protocol.
    pub const ZERO: Self = Self(GO_ZERO);

    /// Wraps a `time` crate value.
    pub const fn new(t: OffsetDateTime) -> Self {
        Self(t)
    }

    /// The wrapped value.
    pub const fn get(&self) -> OffsetDateTime {
        self.0
    }

    /// A UTC time from Unix seconds and nanoseconds (`nanos` below 1e9).
    ///
    /// # Errors
    /// [`TimeError::OutOfRange`] when the result is outside the years the `time` crate supports.
    pub fn from_unix(secs: i64, nanos: u32) -> Result<Self, TimeError> {
        let t = OffsetDateTime::from_unix_timestamp(secs).map_err(|_| TimeError::OutOfRange)?;
        let t = t
            .replace_nanosecond(nanos)
            .map_err(|_| TimeError::OutOfRange)?;
        Ok(Self(t))
    }

    /// Seconds since the Unix epoch (negative before 1970).
    pub fn unix_seconds(&self) -> i64 {
        self.0.unix_timestamp()
    }

    /// Whether this is Go's zero time. Like Go's `IsZero`, the instant counts, not the offset.
    pub fn is_zero(&self) -> bool {
        self.0 == GO_ZERO
    }

    /// Parses RFC 3339 as Go's `time.Time.UnmarshalJSON` does (fractional seconds optional).
    ///
    /// # Errors
    /// [`TimeError::Parse`] on anything else.
    pub fn parse(s: &str) -> Result<Self, TimeError> {
        OffsetDateTime::parse(s, &Rfc3339)
            .map(Self)
            .map_err(|e| TimeError::Parse(e.to_string()))
    }

    /// Formats like Go's `time.Time.MarshalJSON` (RFC 3339, trailing fractional zeros trimmed).
    ///
    /// # Errors
    /// [`TimeError::Format`] when the year is outside 0..=9999 or the offset has seconds.
    pub fn format(&self) -> Result<String, TimeError> {
        self.0
            .format(&Rfc3339)
            .map_err(|e| TimeError::Format(e.to_string()))
    }
}

impl Default for Time {
    fn default() -> Self {
        Self::ZERO
    }
}

impl From<OffsetDateTime> for Time {
    fn from(t: OffsetDateTime) -> Self {
        Self(t)
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.format() {
            Ok(s) => write!(f, "Time({s})"),
            Err(_) => write!(f, "Time({:?})", self.0),
        }
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.format().map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Go's `time.Duration` in JSON: a signed count of nanoseconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct GoDuration(pub i64);

impl GoDuration {
    /// Whether the duration is zero (what `omitempty` leaves out).
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_time_text() {
        assert_eq!(Time::ZERO.format().unwrap(), "0001-01-01T00:00:00Z");
        assert!(Time::parse("0001-01-01T00:00:00Z").unwrap().is_zero());
        assert!(Time::default().is_zero());
    }

    #[test]
    fn go_forms() {
        // Whole seconds print without a fraction; fractions lose trailing zeros; offsets are kept.
        let t = Time::from_unix(1_600_000_000, 0).unwrap();
        assert_eq!(t.format().unwrap(), "2020-09-13T12:26:40Z");
        let t = Time::from_unix(1_600_000_000, 120_000_000).unwrap();
        assert_eq!(t.format().unwrap(), "2020-09-13T12:26:40.12Z");
        let t = Time::parse("2020-09-13T14:26:40.000000001+02:00").unwrap();
        assert_eq!(t.unix_seconds(), 1_600_000_000);
        assert_eq!(t.format().unwrap(), "2020-09-13T14:26:40.000000001+02:00");
        // The Unix time 123 the client sends to log out.
        let t = Time::from_unix(123, 0).unwrap();
        assert_eq!(t.format().unwrap(), "1970-01-01T00:02:03Z");
    }

    #[test]
    fn bad_text_is_typed() {
        for bad in [
            "",
            "yesterday",
            "2020-13-01T00:00:00Z",
            "2020-01-01 00:00:00",
        ] {
            assert!(
                matches!(Time::parse(bad), Err(TimeError::Parse(_))),
                "{bad}"
            );
        }
    }
}
