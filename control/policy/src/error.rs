//! Errors: every refusal of a policy names where in the file it happened and why.
//!
//! Positions are 1-based lines and 1-based byte columns, the convention `serde_json` uses, so
//! a syntax error and a validation error point the same way.

use std::fmt;

use crate::hujson::HujsonError;

/// A line and column in the policy file (1-based; the column counts bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column in bytes, from 1.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text` (past the end: the end of the text).
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        Self {
            line,
            column: before.len() - line_start + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a policy was refused. The policy in force (if any) should stay in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The HuJSON layer is malformed (an unclosed comment).
    #[error(transparent)]
    Hujson(#[from] HujsonError),
    /// Not valid JSON after stripping, or a field of the wrong type or an unknown key.
    #[error("{at}: {message}")]
    Syntax {
        /// Where the parser stopped.
        at: Position,
        /// The parser's message.
        message: String,
    },
    /// An entry is well-formed JSON but not a valid policy entry.
    #[error("{at}: {path} {entry:?}: {kind}")]
    Invalid {
        /// Where the entry is.
        at: Position,
        /// Its place in the document, such as `acls[2].dst[0]`.
        path: String,
        /// The entry as written (for a key: the key).
        entry: String,
        /// What is wrong with it.
        kind: Invalid,
    },
    /// A test of the `tests` section failed; the policy is refused as a whole.
    #[error("{at}: test {index} (src {src:?}) failed: {}", failures.join("; "))]
    TestFailed {
        /// Where the test is.
        at: Position,
        /// Index of the test in `tests`.
        index: usize,
        /// The test's source alias.
        src: String,
        /// One line per failed assertion.
        failures: Vec<String>,
    },
}

/// What is wrong with one policy entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// An ACL action other than `accept` (the only action Tailscale has).
    #[error("action is not supported (only \"accept\")")]
    Action,
    /// Not a user, group, tag, host, IP, CIDR, `*` or known autogroup.
    #[error("not a valid alias: {0}")]
    Alias(&'static str),
    /// `group:x` used but not defined in `groups`.
    #[error("group not defined in groups")]
    UndefinedGroup,
    /// `tag:x` used but not defined in `tagOwners`.
    #[error("tag not defined in tagOwners")]
    UndefinedTag,
    /// A name that is neither a host defined in `hosts` nor any other alias.
    #[error("host not defined in hosts")]
    UndefinedHost,
    /// A group lists another group. Tailscale does not nest groups, which also rules out
    /// cycles; the entry that names a group (possibly its own) is refused.
    #[error("groups cannot contain groups (would allow cycles)")]
    NestedGroup,
    /// A `groups` member that is not a user.
    #[error("group members must be users (name@domain)")]
    GroupMember,
    /// A `tagOwners` owner that is not a user, group, tag or `autogroup:member`.
    #[error("tag owners must be users, groups or tags")]
    TagOwner,
    /// A `hosts` value that is not an IP address or a masked CIDR.
    #[error("host value must be an IP address or CIDR")]
    HostValue,
    /// A `hosts` name that looks like another alias kind.
    #[error("host name must not contain '@' or ':'")]
    HostName,
    /// A `group:`/`tag:` key of the wrong form.
    #[error("key must start with {0:?}")]
    KeyPrefix(&'static str),
    /// A destination without `:ports`, or an unparsable port list.
    #[error("bad ports: {0}")]
    Ports(&'static str),
    /// A protocol that is neither a known name nor a number 1–255.
    #[error("unknown protocol (use a name such as tcp, udp, icmp or a number 1-255)")]
    Proto,
    /// Specific ports with a protocol that has none (only TCP, UDP and SCTP have ports).
    #[error("this protocol has no ports; use \"*\"")]
    ProtoPorts,
    /// An alias that cannot stand in this place (`autogroup:self` as a source, …).
    #[error("not allowed here: {0}")]
    Placement(&'static str),
    /// `autogroup:self` as a destination with a source that is not users, groups,
    /// `autogroup:member` or `*`.
    #[error("autogroup:self can only be used with users, groups, autogroup:member or *")]
    SelfWithSource,
    /// An `autoApprovers.routes` key that is not a masked CIDR.
    #[error("route must be a masked CIDR")]
    Route,
}
