//! Where each value of a JSON document is, by path (`acls[2].dst[0]`).
//!
//! `serde_json` gives typed values without positions. Validation happens on the typed values,
//! so to name the line of a bad entry this module walks the (already stripped and parsed)
//! JSON text once more and records the offset of every value under its path. The walker
//! trusts nothing: on text that is not JSON it stops and records what it has.

use std::collections::BTreeMap;

use crate::error::Position;

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg {
    /// An object member.
    Key(String),
    /// An array element.
    Index(usize),
}

/// A path into a document.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Path(pub Vec<Seg>);

impl Path {
    /// This path extended by a key.
    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_owned()));
        p
    }

    /// This path extended by an index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if n == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// Offsets of values (and of object keys) in a JSON text.
#[derive(Debug, Clone, Default)]
pub struct Locator {
    values: BTreeMap<Path, usize>,
    keys: BTreeMap<Path, usize>,
    text: String,
}

impl Locator {
    /// Walks `json` (standard JSON, as [`crate::hujson::to_json`] returns).
    pub fn new(json: &str) -> Self {
        let mut l = Self {
            text: json.to_owned(),
            ..Self::default()
        };
        let mut w = Walker {
            s: json.as_bytes(),
            i: 0,
            depth: 0,
        };
        w.value(&Path::default(), &mut l);
        l
    }

    /// The position of the value at `path`, or of its nearest recorded ancestor.
    pub fn value(&self, path: &Path) -> Position {
        self.find(&self.values, path)
    }

    /// The position of the key that ends `path` (an object member's name), falling back to
    /// the value's position.
    pub fn key(&self, path: &Path) -> Position {
        match self.keys.get(path) {
            Some(&o) => Position::of_offset(&self.text, o),
            None => self.value(path),
        }
    }

    fn find(&self, map: &BTreeMap<Path, usize>, path: &Path) -> Position {
        let mut p = path.clone();
        loop {
            if let Some(&o) = map.get(&p) {
                return Position::of_offset(&self.text, o);
            }
            if p.0.pop().is_none() {
                return Position { line: 1, column: 1 };
            }
        }
    }
}

/// Deep enough for any policy, shallow enough that hostile nesting cannot exhaust the stack
/// (serde_json refuses depth over 128 before this runs; this is a second guard).
const MAX_DEPTH: usize = 128;

struct Walker<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Walker<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn value(&mut self, path: &Path, l: &mut Locator) -> Option<()> {
        self.ws();
        l.values.insert(path.clone(), self.i);
        match *self.s.get(self.i)? {
            b'{' => {
                self.enter()?;
                self.i += 1;
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    self.depth -= 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    let key_at = self.i;
                    let key = self.string()?;
                    let p = path.key(&key);
                    l.keys.insert(p.clone(), key_at);
                    self.ws();
                    (self.s.get(self.i) == Some(&b':')).then_some(())?;
                    self.i += 1;
                    self.value(&p, l)?;
                    self.ws();
                    match self.s.get(self.i)? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            self.depth -= 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.enter()?;
                self.i += 1;
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    self.depth -= 1;
                    return Some(());
                }
                let mut n = 0;
                loop {
                    self.value(&path.index(n), l)?;
                    n += 1;
                    self.ws();
                    match self.s.get(self.i)? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            self.depth -= 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => self.string().map(|_| ()),
            _ => {
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|b| !matches!(b, b',' | b']' | b'}') && !b.is_ascii_whitespace())
                {
                    self.i += 1;
                }
                Some(())
            }
        }
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// Reads a string at the cursor and decodes it with serde_json (escapes included).
    fn string(&mut self) -> Option<String> {
        let start = self.i;
        (self.s.get(self.i) == Some(&b'"')).then_some(())?;
        self.i += 1;
        loop {
            match *self.s.get(self.i)? {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    break;
                }
                _ => self.i += 1,
            }
        }
        serde_json::from_slice(self.s.get(start..self.i)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_positions() {
        let text =
            "{\n  \"acls\": [\n    {\"src\": [\"a\", \"b\"]},\n    {\"dst\": [\"x:1\"]}\n  ]\n}";
        let l = Locator::new(text);
        let p = Path::default().key("acls").index(0).key("src").index(1);
        assert_eq!(p.to_string(), "acls[0].src[1]");
        assert_eq!(
            l.value(&p),
            Position {
                line: 3,
                column: 19
            }
        );
        let p = Path::default().key("acls").index(1).key("dst").index(0);
        assert_eq!(
            l.value(&p),
            Position {
                line: 4,
                column: 14
            }
        );
        assert_eq!(
            l.key(&Path::default().key("acls")),
            Position { line: 2, column: 3 }
        );
        // Unknown paths fall back to the nearest ancestor.
        let p = Path::default().key("acls").index(1).key("dst").index(7);
        assert_eq!(
            l.value(&p),
            Position {
                line: 4,
                column: 13
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,120}") {
            let l = Locator::new(&s);
            let _ = l.value(&Path::default().key("a").index(3));
        }
    }
}
