//! Invariants checked on arbitrary bytes, shared by the corpus replay test
//! (`tests/corpus.rs`) and any future cargo-fuzz target.
//!
//! Not part of the API: hidden from the docs, may change at any time.

use crate::request::{challenge_response, parse_head, MAX_HEAD};
use crate::verify::parse_admit_response;

/// The shell's parsers on arbitrary bytes, none of which may panic:
/// * the first request head: a complete head lies within the input and ends at a newline,
///   parsing the head's bytes alone gives the same head, a DERP upgrade is a GET of `/derp`
///   asking for `derp`, and an incomplete head longer than [`MAX_HEAD`] is refused rather than
///   left pending;
/// * the captive-portal challenge echo: an answer is `response ` plus at most 64 characters,
///   none of them whitespace or a control character (it goes into a header);
/// * the admission answer parser.
///
/// # Errors
/// A description of the broken invariant.
pub fn check_request_head(data: &[u8]) -> Result<(), String> {
    match parse_head(data) {
        Ok(Some(h)) => {
            if h.len == 0 || h.len > data.len() {
                return Err(format!("head length {} of {} bytes", h.len, data.len()));
            }
            if data.get(h.len - 1) != Some(&b'\n') {
                return Err("head does not end at a newline".into());
            }
            let again = parse_head(data.get(..h.len).unwrap_or_default());
            if again.as_ref().ok().and_then(|x| x.as_ref()) != Some(&h) {
                return Err(format!("reparse of the head alone differs: {again:?}"));
            }
            if h.is_derp_upgrade()
                && !(h.method == "GET"
                    && h.path.starts_with("/derp")
                    && h.upgrade.as_deref() == Some("derp"))
            {
                return Err("DERP upgrade without GET /derp + Upgrade: derp".into());
            }
        }
        Ok(None) if data.len() > MAX_HEAD => {
            return Err("an oversize partial head is still pending".into());
        }
        _ => {}
    }
    if let Some(answer) = challenge_response(data) {
        let Some(echo) = answer.strip_prefix("response ") else {
            return Err(format!("challenge answer {answer:?} lacks its prefix"));
        };
        if echo.is_empty()
            || echo.len() > 64
            || echo
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!("unsafe challenge answer {answer:?}"));
        }
    }
    let _ = parse_admit_response(data);
    Ok(())
}
