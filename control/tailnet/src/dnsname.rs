//! MagicDNS labels: a node's hostname made into a valid, unique DNS label.
//!
//! The sanitizing rules follow the official client's (protocol reference §10.2) so that a
//! node named by weft gets the label an official control server would give it: strip one
//! `.local`/`.localdomain`/`.lan`, keep `[a-z0-9-]` (lower-cased; space, `.`, `@`, `_`
//! become `-`), trim non-alphanumerics at both ends, at most 63 bytes, `node` when nothing is
//! left. Collisions get `-1`, `-2`, … in registration order (the first holder keeps the base).

/// The label for `hostname`.
pub fn sanitize(hostname: &str) -> String {
    let mut h = hostname.trim();
    for suffix in [".localdomain", ".local", ".lan"] {
        if let Some(s) = h.strip_suffix(suffix) {
            h = s;
            break;
        }
    }
    let mut out = String::with_capacity(h.len().min(63));
    for c in h.chars() {
        let c = match c {
            ' ' | '.' | '@' | '_' => '-',
            c if c.is_ascii_alphanumeric() || c == '-' => c.to_ascii_lowercase(),
            _ => continue,
        };
        out.push(c);
    }
    let trimmed = out.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut label: String = trimmed.chars().take(63).collect();
    while label.ends_with('-') {
        label.pop();
    }
    if label.is_empty() {
        "node".to_owned()
    } else {
        label
    }
}

/// `base` if `taken` does not hold it, else the first free `base-N`.
pub fn unique(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_owned();
    }
    (1u32..)
        .map(|n| {
            let suffix = format!("-{n}");
            let keep = 63usize.saturating_sub(suffix.len());
            let mut stem: String = base.chars().take(keep).collect();
            while stem.ends_with('-') {
                stem.pop();
            }
            format!("{stem}{suffix}")
        })
        .find(|c| !taken(c))
        .unwrap_or_else(|| base.to_owned())
}

/// Whether `label` is a valid DNS label (1–63 bytes, alphanumeric at both ends, interior
/// `[A-Za-z0-9-]`).
pub fn valid_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert_eq!(sanitize("My Laptop.local"), "my-laptop");
        assert_eq!(sanitize("db_01.example.com"), "db-01-example-com");
        assert_eq!(sanitize("--x--"), "x");
        assert_eq!(sanitize("Ünïcode"), "ncode");
        assert_eq!(sanitize("..."), "node");
        assert_eq!(sanitize(&"a".repeat(80)).len(), 63);
        let taken = ["web", "web-1"];
        assert_eq!(unique("web", |s| taken.contains(&s)), "web-2");
        assert_eq!(unique("db", |s| taken.contains(&s)), "db");
    }

    proptest! {
        #[test]
        fn sanitized_labels_are_valid(s in ".{0,100}") {
            let l = sanitize(&s);
            prop_assert!(valid_label(&l), "{:?} -> {:?}", s, l);
            let u = unique(&l, |c| c == l);
            prop_assert!(valid_label(&u), "{:?}", u);
        }
    }
}
