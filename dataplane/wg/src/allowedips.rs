//! Cryptokey routing: which peer owns an inner IP address.
//!
//! WireGuard uses one table both ways. On send, the destination address picks the peer to
//! encrypt for; on receive, the decrypted packet's source address must map back to the peer whose
//! key decrypted it, or the packet is dropped. The table therefore has to answer a longest-prefix
//! match on every packet, so lookups here allocate nothing and cost at most one node visit per
//! prefix bit.
//!
//! The structure follows the Linux kernel's `allowedips.c` in spirit: a path-compressed binary
//! trie per address family, where each node carries a masked prefix, and nodes that only exist to
//! fork two subtrees carry no value. The differences are for safety in safe Rust, not semantics:
//!
//! * nodes live in a `Vec` arena addressed by `u32` indices (half the size of pointers and no
//!   `unsafe`), with a free list; an index equal to `NIL` means "no child", and because it is
//!   out of the arena's range, following it with `get` simply ends a walk;
//! * both families use the same code on a `u128` key, IPv4 addresses being left-aligned in the
//!   top 32 bits, so bit `i` of a prefix is always bit `127 - i` of the key.
//!
//! Semantics kept from the kernel and `wg`: host bits are masked off on insert; inserting an
//! existing prefix changes its owner (that is how a prefix moves between peers); IPv4 and IPv6 are
//! separate tables, so an IPv4-mapped IPv6 address never matches an IPv4 prefix.
//!
//! Invariants (checked by the tests after every operation):
//!
//! * a child's prefix extends its parent's, is strictly longer, and its bit at the parent's
//!   length selects which side it hangs on;
//! * a node without a value has exactly two children. Removal restores this by splicing out
//!   valueless nodes left with one child and deleting childless ones, so the number of live nodes
//!   stays below twice the number of prefixes whatever the history of inserts and removes, and
//!   peers churning cannot make the table grow without bound.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllowedIpsError {
    /// The prefix length is longer than the address (over 32 for IPv4, over 128 for IPv6).
    #[error("prefix length {0} is too long for the address family")]
    PrefixTooLong(u8),
    /// The table already holds the most nodes its `u32` indices can address (about four
    /// billion; memory runs out long before).
    #[error("the allowed-IPs table is full")]
    TableFull,
}

/// "No node": out of range for every arena, so walks end on it.
const NIL: u32 = u32::MAX;

/// Most nodes one arena may hold (indices `0..NIL`).
const MAX_NODES: usize = NIL as usize;

/// One trie node: a masked prefix, maybe an owner, and two subtrees.
#[derive(Debug, Clone)]
struct Node<T> {
    /// The prefix, left-aligned, every bit from `cidr` on zero.
    key: u128,
    /// Prefix length in bits.
    cidr: u8,
    /// Subtrees for bit `cidr` of the key being 0 and 1.
    children: [u32; 2],
    /// The owner, or `None` for a node that only forks two subtrees.
    value: Option<T>,
}

impl<T> Node<T> {
    fn new(key: u128, cidr: u8, value: Option<T>) -> Self {
        Self {
            key,
            cidr,
            children: [NIL, NIL],
            value,
        }
    }

    fn child(&self, one: bool) -> u32 {
        let [zero_side, one_side] = self.children;
        if one {
            one_side
        } else {
            zero_side
        }
    }

    fn set_child(&mut self, one: bool, index: u32) {
        let [zero_side, one_side] = &mut self.children;
        if one {
            *one_side = index;
        } else {
            *zero_side = index;
        }
    }
}

/// Where a node hangs: the root slot, or one side of a parent.
#[derive(Debug, Clone, Copy)]
enum Link {
    Root,
    Child(u32, bool),
}

/// The trie of one address family.
#[derive(Debug, Clone)]
struct Trie<T> {
    nodes: Vec<Node<T>>,
    /// Arena slots not in the trie, for reuse.
    free: Vec<u32>,
    root: u32,
    /// Number of nodes with a value.
    len: usize,
}

/// `key` with every bit from `cidr` on cleared.
fn mask(key: u128, cidr: u8) -> u128 {
    let keep = u128::MAX
        .checked_shl(128u32.saturating_sub(u32::from(cidr)))
        .unwrap_or(0);
    key & keep
}

/// Bit `i` of `key`, counting from the most significant; false past the end.
fn bit(key: u128, i: u8) -> bool {
    key.checked_shl(u32::from(i)).is_some_and(|k| k >> 127 == 1)
}

/// Number of leading bits `a` and `b` share.
fn common_len(a: u128, b: u128) -> u8 {
    // At most 128, so it fits.
    (a ^ b).leading_zeros() as u8
}

impl<T> Trie<T> {
    fn new() -> Self {
        Self {
            nodes: Vec::new(),
            free: Vec::new(),
            root: NIL,
            len: 0,
        }
    }

    fn live_nodes(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// How many more nodes can be allocated.
    fn room(&self) -> usize {
        self.free.len() + MAX_NODES.saturating_sub(self.nodes.len())
    }

    fn get_link(&self, link: Link) -> u32 {
        match link {
            Link::Root => self.root,
            Link::Child(parent, one) => self
                .nodes
                .get(parent as usize)
                .map_or(NIL, |node| node.child(one)),
        }
    }

    fn set_link(&mut self, link: Link, index: u32) {
        match link {
            Link::Root => self.root = index,
            Link::Child(parent, one) => {
                if let Some(node) = self.nodes.get_mut(parent as usize) {
                    node.set_child(one, index);
                }
            }
        }
    }

    fn alloc(&mut self, node: Node<T>) -> Result<u32, AllowedIpsError> {
        if let Some(index) = self.free.pop() {
            if let Some(slot) = self.nodes.get_mut(index as usize) {
                *slot = node;
                return Ok(index);
            }
        }
        let index = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&index| index != NIL)
            .ok_or(AllowedIpsError::TableFull)?;
        self.nodes.push(node);
        Ok(index)
    }

    fn release(&mut self, index: u32) {
        if let Some(node) = self.nodes.get_mut(index as usize) {
            // Drop the owner now rather than when the slot is reused.
            node.value = None;
            node.children = [NIL, NIL];
            self.free.push(index);
        }
    }

    /// Inserts a masked prefix.
    fn insert(&mut self, key: u128, cidr: u8, value: T) -> Result<(), AllowedIpsError> {
        // A fork needs two new nodes; check up front so a failure changes nothing.
        if self.room() < 2 {
            return Err(AllowedIpsError::TableFull);
        }
        let mut link = Link::Root;
        loop {
            let current = self.get_link(link);
            let Some(node) = self.nodes.get_mut(current as usize) else {
                let leaf = self.alloc(Node::new(key, cidr, Some(value)))?;
                self.set_link(link, leaf);
                self.len += 1;
                return Ok(());
            };
            let common = common_len(node.key, key).min(node.cidr).min(cidr);
            if common == node.cidr {
                if node.cidr == cidr {
                    // Same prefix: new owner.
                    if node.value.replace(value).is_none() {
                        self.len += 1;
                    }
                    return Ok(());
                }
                // The node's prefix contains ours: descend.
                link = Link::Child(current, bit(key, node.cidr));
                continue;
            }
            let node_key = node.key;
            let above = if common == cidr {
                // Our prefix contains the node's: it hangs below the new one.
                let mut above = Node::new(key, cidr, Some(value));
                above.set_child(bit(node_key, cidr), current);
                self.alloc(above)?
            } else {
                // They diverge at bit `common`: a valueless fork holds both.
                let leaf = self.alloc(Node::new(key, cidr, Some(value)))?;
                let mut fork = Node::new(mask(key, common), common, None);
                fork.set_child(bit(key, common), leaf);
                fork.set_child(bit(node_key, common), current);
                self.alloc(fork)?
            };
            self.set_link(link, above);
            self.len += 1;
            return Ok(());
        }
    }

    /// Longest-prefix match.
    fn lookup(&self, key: u128) -> Option<&T> {
        let mut best = None;
        let mut current = self.root;
        while let Some(node) = self.nodes.get(current as usize) {
            if mask(key, node.cidr) != node.key {
                break;
            }
            if let Some(value) = &node.value {
                best = Some(value);
            }
            current = node.child(bit(key, node.cidr));
        }
        best
    }

    /// Removes exactly the masked prefix `key/cidr`.
    fn remove(&mut self, key: u128, cidr: u8) -> Option<T> {
        let mut parent_link = None;
        let mut link = Link::Root;
        let value = loop {
            let current = self.get_link(link);
            let node = self.nodes.get_mut(current as usize)?;
            if node.cidr > cidr || mask(key, node.cidr) != node.key {
                return None;
            }
            if node.cidr == cidr {
                break node.value.take()?;
            }
            parent_link = Some(link);
            link = Link::Child(current, bit(key, node.cidr));
        };
        self.len -= 1;
        if self.prune(link) {
            if let Some(parent_link) = parent_link {
                self.prune(parent_link);
            }
        }
        if self.len == 0 {
            // Nothing left: give the whole arena back rather than keep a free list.
            self.clear();
        }
        Some(value)
    }

    /// Restores the invariant at the valueless-or-not node hanging at `link`: a valueless node
    /// with one child is replaced by the child, one with none is deleted. Returns whether a node
    /// was deleted outright, in which case its parent may now need pruning.
    fn prune(&mut self, link: Link) -> bool {
        let current = self.get_link(link);
        let Some(node) = self.nodes.get(current as usize) else {
            return false;
        };
        if node.value.is_some() {
            return false;
        }
        let [zero_side, one_side] = node.children;
        let (replacement, deleted) = match (zero_side != NIL, one_side != NIL) {
            (true, true) => return false,
            (true, false) => (zero_side, false),
            (false, true) => (one_side, false),
            (false, false) => (NIL, true),
        };
        self.set_link(link, replacement);
        self.release(current);
        deleted
    }

    fn clear(&mut self) {
        self.nodes.clear();
        self.free.clear();
        self.root = NIL;
        self.len = 0;
    }

    /// Every valued node, in pre-order with the 0 side first: ascending by address, a shorter
    /// prefix before the longer ones it contains.
    fn iter(&self) -> TrieIter<'_, T> {
        let mut stack = Vec::new();
        if self.root != NIL {
            stack.push(self.root);
        }
        TrieIter { trie: self, stack }
    }
}

/// Depth-first walk over a `Trie`.
struct TrieIter<'a, T> {
    trie: &'a Trie<T>,
    stack: Vec<u32>,
}

impl<'a, T> Iterator for TrieIter<'a, T> {
    type Item = (u128, u8, &'a T);

    fn next(&mut self) -> Option<Self::Item> {
        while let Some(index) = self.stack.pop() {
            let Some(node) = self.trie.nodes.get(index as usize) else {
                continue;
            };
            for child in [node.child(true), node.child(false)] {
                if child != NIL {
                    self.stack.push(child);
                }
            }
            if let Some(value) = &node.value {
                return Some((node.key, node.cidr, value));
            }
        }
        None
    }
}

/// Address family of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    fn address(self, key: u128) -> IpAddr {
        match self {
            // The low 96 bits of an IPv4 key are zero, so the shift keeps all of it.
            Family::V4 => IpAddr::V4(Ipv4Addr::from((key >> 96) as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(key)),
        }
    }
}

/// Family and left-aligned key of an address.
fn split(addr: IpAddr) -> (Family, u128) {
    match addr {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4)) << 96),
        IpAddr::V6(v6) => (Family::V6, u128::from(v6)),
    }
}

/// The cryptokey routing table: IPv4 and IPv6 prefixes, each owned by one peer value `T`.
///
/// `T` is whatever identifies a peer to the caller (an index, a key, an `Arc`); it is compared
/// with `==` by the by-value operations.
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: Trie<T>,
    v6: Trie<T>,
}

impl<T> AllowedIps<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            v4: Trie::new(),
            v6: Trie::new(),
        }
    }

    fn trie(&self, family: Family) -> &Trie<T> {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    fn trie_mut(&mut self, family: Family) -> &mut Trie<T> {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    /// Inserts `addr/cidr` (host bits are masked off first, as `wg` does) for `value`; an
    /// existing identical prefix changes owner (that is how a prefix moves between peers).
    pub fn insert(&mut self, addr: IpAddr, cidr: u8, value: T) -> Result<(), AllowedIpsError> {
        let (family, key) = split(addr);
        if cidr > family.bits() {
            return Err(AllowedIpsError::PrefixTooLong(cidr));
        }
        self.trie_mut(family).insert(mask(key, cidr), cidr, value)
    }

    /// Removes exactly `addr/cidr` (masked); returns its value. A prefix length too long for the
    /// family matches nothing.
    pub fn remove(&mut self, addr: IpAddr, cidr: u8) -> Option<T> {
        let (family, key) = split(addr);
        if cidr > family.bits() {
            return None;
        }
        self.trie_mut(family).remove(mask(key, cidr), cidr)
    }

    /// Longest-prefix match: the owner of the most specific prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        let (family, key) = split(addr);
        self.trie(family).lookup(key)
    }

    /// Every `(prefix, length, value)`: IPv4 first, then IPv6, each ascending by address with a
    /// shorter prefix before the longer ones it contains.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, u8, &T)> + '_ {
        let v4 = self
            .v4
            .iter()
            .map(|(key, cidr, value)| (Family::V4.address(key), cidr, value));
        let v6 = self
            .v6
            .iter()
            .map(|(key, cidr, value)| (Family::V6.address(key), cidr, value));
        v4.chain(v6)
    }

    /// Removes every prefix.
    pub fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
    }

    /// Number of prefixes in both families.
    pub fn len(&self) -> usize {
        self.v4.len + self.v6.len
    }

    /// Whether the table holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of trie nodes in use, forks included; for tests that removal frees memory.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        self.v4.live_nodes() + self.v6.live_nodes()
    }
}

impl<T: PartialEq> AllowedIps<T> {
    /// Removes every prefix owned by `value` (peer removal, `replace_allowed_ips`).
    pub fn remove_by_value(&mut self, value: &T) {
        for family in [Family::V4, Family::V6] {
            let owned: Vec<(u128, u8)> = self
                .trie(family)
                .iter()
                .filter(|&(_, _, owner)| owner == value)
                .map(|(key, cidr, _)| (key, cidr))
                .collect();
            let trie = self.trie_mut(family);
            for (key, cidr) in owned {
                trie.remove(key, cidr);
            }
        }
    }

    /// The prefixes owned by `value`, in the order of [`iter`](Self::iter) (for the UAPI `get`,
    /// which lists a peer's allowed IPs).
    pub fn prefixes_of(&self, value: &T) -> Vec<(IpAddr, u8)> {
        self.iter()
            .filter(|&(_, _, owner)| owner == value)
            .map(|(addr, cidr, _)| (addr, cidr))
            .collect()
    }
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
