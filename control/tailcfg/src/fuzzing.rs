//! Invariants checked on arbitrary input by the corpus replay test (`tests/corpus.rs`), and by a
//! fuzzer if one is pointed at these functions. Not part of the stable API.
//!
//! Each check feeds bytes to one parser and returns whether the input was accepted; a broken
//! invariant (a value that does not survive being written and read back, or a streaming decode
//! that disagrees with a one-shot decode) is a [`Violation`]. Panics are bugs by definition.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::frame::{decode_all, encode, FrameDecoder, Limits};
use crate::{
    ChallengePublic, DerpMap, DiscoPublic, MachinePublic, MapRequest, MapResponse, Node,
    NodePublic, RegisterRequest, RegisterResponse,
};

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

/// What a parser made of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The input parsed.
    Accepted,
    /// The input was refused with this (typed) error, shown as text.
    Rejected(String),
}

/// Limits small enough that corpus inputs reach them.
pub const FUZZ_LIMITS: Limits = Limits {
    max_frame: 1 << 20,
    max_decoded: 4 << 20,
};

fn key_round_trip<K>(
    text: &str,
    parse: fn(&str) -> Result<K, crate::KeyTextError>,
) -> Result<bool, Violation>
where
    K: ToString + PartialEq + Debug,
{
    match parse(text) {
        Err(_) => Ok(false),
        Ok(k) => {
            let written = k.to_string();
            if !written.eq_ignore_ascii_case(text) {
                return Err(Violation(format!(
                    "key {text:?} written back as {written:?}"
                )));
            }
            match parse(&written) {
                Ok(again) if again == k => Ok(true),
                other => Err(Violation(format!("key {written:?} re-parsed as {other:?}"))),
            }
        }
    }
}

/// Parses `data` as key text under every prefixed key type.
///
/// # Errors
/// A key that does not survive being written and read back.
pub fn check_key_text(data: &[u8]) -> Result<Outcome, Violation> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(Outcome::Rejected("not UTF-8".into()));
    };
    let accepted = [
        key_round_trip(text, NodePublic::parse)?,
        key_round_trip(text, MachinePublic::parse)?,
        key_round_trip(text, DiscoPublic::parse)?,
        key_round_trip(text, ChallengePublic::parse)?,
    ];
    match accepted.iter().filter(|a| **a).count() {
        0 => Ok(Outcome::Rejected(
            NodePublic::parse(text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        )),
        1 => Ok(Outcome::Accepted),
        n => Err(Violation(format!("{text:?} parsed as {n} key types"))),
    }
}

/// Decodes `data` as a map stream, one-shot and byte-chunked, and re-encodes what decoded.
///
/// # Errors
/// When the two decodes disagree or a decoded message does not survive re-encoding.
pub fn check_frames(data: &[u8]) -> Result<Outcome, Violation> {
    let whole = decode_all(data, FUZZ_LIMITS);
    let mut dec = FrameDecoder::new(FUZZ_LIMITS);
    let mut chunked = Vec::new();
    let mut chunk_err = None;
    'outer: for piece in data.chunks(7) {
        dec.push(piece);
        loop {
            match dec.next_response() {
                Ok(Some(m)) => chunked.push(m),
                Ok(None) => break,
                Err(e) => {
                    chunk_err = Some(e.to_string());
                    break 'outer;
                }
            }
        }
    }
    if chunk_err.is_none() {
        chunk_err = dec.finish().err().map(|e| e.to_string());
    }
    match (whole, chunk_err) {
        (Ok(msgs), None) => {
            if msgs != chunked {
                return Err(Violation(
                    "chunked decode differs from one-shot decode".into(),
                ));
            }
            let mut again = Vec::new();
            for m in &msgs {
                encode(m, &mut again).map_err(|e| Violation(format!("re-encode: {e}")))?;
            }
            let back = decode_all(&again, Limits::default())
                .map_err(|e| Violation(format!("re-decode: {e}")))?;
            if back != msgs {
                return Err(Violation("messages changed through re-encoding".into()));
            }
            Ok(Outcome::Accepted)
        }
        (Err(e), Some(_)) => Ok(Outcome::Rejected(e.to_string())),
        (Ok(_), Some(e)) => Err(Violation(format!("only the chunked decode failed: {e}"))),
        (Err(e), None) => Err(Violation(format!("only the one-shot decode failed: {e}"))),
    }
}

fn json_round_trip<T>(data: &[u8]) -> Result<Option<String>, Violation>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    match serde_json::from_slice::<T>(data) {
        Err(e) => Ok(Some(e.to_string())),
        Ok(v) => {
            let text = serde_json::to_vec(&v).map_err(|e| Violation(format!("write back: {e}")))?;
            let again: T =
                serde_json::from_slice(&text).map_err(|e| Violation(format!("read back: {e}")))?;
            if again != v {
                return Err(Violation(format!(
                    "value changed through JSON: {v:?} vs {again:?}"
                )));
            }
            Ok(None)
        }
    }
}

/// The message types [`check_json_as`] knows, by the names corpus files use.
pub const JSON_KINDS: &[&str] = &[
    "mapresponse",
    "maprequest",
    "registerrequest",
    "registerresponse",
    "node",
    "derpmap",
];

/// Parses `data` as the message type named `kind` (one of [`JSON_KINDS`]).
///
/// # Errors
/// A parsed value that does not survive being written and read back, or an unknown `kind`.
pub fn check_json_as(kind: &str, data: &[u8]) -> Result<Outcome, Violation> {
    let err = match kind {
        "mapresponse" => json_round_trip::<MapResponse>(data)?,
        "maprequest" => json_round_trip::<MapRequest>(data)?,
        "registerrequest" => json_round_trip::<RegisterRequest>(data)?,
        "registerresponse" => json_round_trip::<RegisterResponse>(data)?,
        "node" => json_round_trip::<Node>(data)?,
        "derpmap" => json_round_trip::<DerpMap>(data)?,
        other => return Err(Violation(format!("unknown JSON kind {other:?}"))),
    };
    Ok(err.map_or(Outcome::Accepted, Outcome::Rejected))
}

/// Parses `data` as every message type ([`check_json_as`] for each of [`JSON_KINDS`]).
///
/// # Errors
/// The first violation.
pub fn check_json(data: &[u8]) -> Result<(), Violation> {
    for kind in JSON_KINDS {
        check_json_as(kind, data)?;
    }
    Ok(())
}
