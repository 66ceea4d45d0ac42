//! HuJSON ("human JSON": JSON with `//` and `/* */` comments and trailing commas) to standard
//! JSON, byte for byte in place.
//!
//! # Why a hand-written stripper
//! A policy error must name the line and column in the file the administrator edits. The
//! stripper therefore never moves a byte: every comment byte becomes a space (a newline inside
//! a comment stays a newline), and a trailing comma becomes a space. The output has exactly
//! the length of the input and every byte keeps its offset, so `serde_json`'s line and column,
//! and every position [`Locator`](crate::locate::Locator) computes on the output, are positions
//! in the original file. A general parser (`json5`, a HuJSON crate) would re-serialize and lose
//! that mapping, and HuJSON needs nothing beyond these two rules.
//!
//! # Guarantees
//! * Any input gives `Ok` or a [`HujsonError`]; nothing panics.
//! * Valid JSON without comments and trailing commas is returned unchanged.
//! * The output has the input's length and the same bytes at every offset outside comments
//!   and trailing commas, so line numbers and columns are preserved. The output is valid UTF-8
//!   (whole multi-byte characters inside comments become spaces).
//! * A leading UTF-8 byte-order mark becomes spaces (JSON parsers refuse it).
//! * Inside strings nothing is touched (`"//"` stays); escapes are followed so `"\""` does
//!   not end a string early.

use crate::error::Position;

/// Why a HuJSON text could not be turned into JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HujsonError {
    /// A `/*` comment is never closed; the position is that of the `/*`.
    #[error("{at}: unterminated /* comment")]
    UnterminatedComment {
        /// Where the comment starts.
        at: Position,
    },
}

/// Strips comments and trailing commas from `text` (see the module doc).
///
/// # Errors
/// [`HujsonError::UnterminatedComment`] when a block comment has no `*/`. Any other syntax
/// error is left for the JSON parser to report at its (unchanged) position.
pub fn to_json(text: &str) -> Result<String, HujsonError> {
    let src = text.as_bytes();
    let mut out = src.to_vec();
    // A leading UTF-8 byte-order mark (some editors write one) becomes three spaces.
    if let Some(bom) = out.get_mut(..3).filter(|b| *b == [0xef, 0xbb, 0xbf]) {
        bom.fill(b' ');
    }
    // Offset of the last comma outside strings and comments with only whitespace and
    // comments after it so far.
    let mut pending_comma: Option<usize> = None;
    let mut i = 0;
    while let Some(&b) = src.get(i) {
        match b {
            b'"' => {
                pending_comma = None;
                i = skip_string(src, i);
            }
            b'/' if src.get(i + 1) == Some(&b'/') => {
                let end = src
                    .iter()
                    .skip(i)
                    .position(|&c| c == b'\n')
                    .map_or(src.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if src.get(i + 1) == Some(&b'*') => {
                let end = src
                    .get(i + 2..)
                    .and_then(|rest| rest.windows(2).position(|w| w == b"*/"))
                    .map(|p| i + 2 + p + 2)
                    .ok_or(HujsonError::UnterminatedComment {
                        at: Position::of_offset(text, i),
                    })?;
                blank(&mut out, i, end);
                i = end;
            }
            b',' => {
                pending_comma = Some(i);
                i += 1;
            }
            b']' | b'}' => {
                if let Some(c) = pending_comma.take() {
                    if let Some(slot) = out.get_mut(c) {
                        *slot = b' ';
                    }
                }
                i += 1;
            }
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            _ => {
                pending_comma = None;
                i += 1;
            }
        }
    }
    // Only ASCII bytes were written over whole comments or commas, so this cannot fail; the
    // lossy conversion keeps the function total anyway.
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Offset just past the string starting at `start` (a `"`), or the end of input if it is not
/// closed (the JSON parser reports that).
fn skip_string(src: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(&b) = src.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    src.len()
}

/// Replaces `out[from..to]` by spaces, keeping newlines.
fn blank(out: &mut [u8], from: usize, to: usize) {
    for b in out.iter_mut().take(to).skip(from) {
        if *b != b'\n' {
            *b = b' ';
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_comments_and_trailing_commas() {
        let text = "{\n  // a comment, with a comma,\n  \"a\": [1, 2, /* x */],\n  \"b\": \"//not\", /* multi\nline */\n}\n";
        let json = to_json(text).unwrap();
        assert_eq!(json.len(), text.len());
        assert_eq!(json.lines().count(), text.lines().count());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["a"], serde_json::json!([1, 2]));
        assert_eq!(v["b"], "//not");
    }

    #[test]
    fn escaped_quotes_and_slashes_in_strings() {
        let text = r#"{"a": "x\"//y", "b": "\\", /* c */ "d": "/*"}"#;
        let v: serde_json::Value = serde_json::from_str(&to_json(text).unwrap()).unwrap();
        assert_eq!(v["a"], "x\"//y");
        assert_eq!(v["b"], "\\");
        assert_eq!(v["d"], "/*");
    }

    #[test]
    fn comma_before_comment_then_bracket_is_trailing() {
        let text = "[1, // one\n 2, // two\n]";
        let v: serde_json::Value = serde_json::from_str(&to_json(text).unwrap()).unwrap();
        assert_eq!(v, serde_json::json!([1, 2]));
    }

    #[test]
    fn double_comma_is_left_for_the_parser() {
        let text = "[1,,]";
        let json = to_json(text).unwrap();
        let err = serde_json::from_str::<serde_json::Value>(&json).unwrap_err();
        assert_eq!((err.line(), err.column()), (1, 5));
    }

    #[test]
    fn unterminated_comment_names_its_line() {
        let err = to_json("{\n\n  /* open\n}").unwrap_err();
        assert_eq!(
            err,
            HujsonError::UnterminatedComment {
                at: Position { line: 3, column: 3 }
            }
        );
        assert_eq!(err.to_string(), "line 3, column 3: unterminated /* comment");
    }

    #[test]
    fn parse_error_positions_survive_comments() {
        let text = "{\n /* long\n comment */ \"a\": 1,\n  // c\n  \"b\": ?\n}";
        let err = serde_json::from_str::<serde_json::Value>(&to_json(text).unwrap()).unwrap_err();
        assert_eq!((err.line(), err.column()), (5, 8));
    }

    #[test]
    fn byte_order_mark_is_blanked() {
        let json = to_json("\u{feff}{\"a\": 1}").unwrap();
        assert_eq!(json, "   {\"a\": 1}");
    }

    #[test]
    fn multibyte_characters_in_comments() {
        let text = "{\"a\": 1 // héllo wörld ✓\n}";
        let json = to_json(text).unwrap();
        assert_eq!(json.len(), text.len());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["a"], 1);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_keeps_length_and_lines(s in "\\PC{0,200}") {
            if let Ok(j) = to_json(&s) {
                proptest::prop_assert_eq!(j.len(), s.len());
                let nl = |t: &str| t.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i).collect::<Vec<_>>();
                proptest::prop_assert_eq!(nl(&j), nl(&s));
            }
        }

        #[test]
        fn plain_json_is_unchanged(v in json_value()) {
            let text = serde_json::to_string_pretty(&v).unwrap();
            proptest::prop_assert_eq!(to_json(&text).unwrap(), text.clone());
            let compact = serde_json::to_string(&v).unwrap();
            proptest::prop_assert_eq!(to_json(&compact).unwrap(), compact);
        }

        #[test]
        fn commented_json_parses_to_the_same_value(v in json_value(), comment in "[a-z ,/]{0,20}") {
            let text = serde_json::to_string_pretty(&v).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            // A block comment before and a line comment after every line, and a trailing comma
            // before every closing bracket that ends a non-empty container.
            let mut commented = String::new();
            for (i, line) in lines.iter().enumerate() {
                commented.push_str(&format!("/*{comment}*/"));
                commented.push_str(line);
                let closes_next = lines.get(i + 1).is_some_and(|n| {
                    let n = n.trim_start();
                    n.starts_with(']') || n.starts_with('}')
                });
                let t = line.trim_end();
                if closes_next && !t.ends_with('[') && !t.ends_with('{') {
                    commented.push(',');
                }
                commented.push_str(" //");
                commented.push_str(&comment);
                commented.push('\n');
            }
            let stripped = to_json(&commented).unwrap();
            proptest::prop_assert_eq!(stripped.lines().count(), commented.lines().count());
            let back: serde_json::Value = serde_json::from_str(&stripped).unwrap();
            proptest::prop_assert_eq!(back, v);
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i32>().prop_map(serde_json::Value::from),
            "[a-z/*\",\\\\ ]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z/*]{1,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
