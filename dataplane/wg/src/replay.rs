//! The receive-side replay window for transport data counters.
//!
//! Why a window and not a single "highest seen" counter: UDP reorders, and the sender's per-core
//! encryption queues reorder further, so a strictly increasing check would drop honest packets.
//! WireGuard therefore accepts any counter that is new and not too far behind the highest one,
//! and rejects everything else *after* authentication (an unauthenticated packet must never move
//! the window, or an attacker could slide it forward and blind us to the real traffic).
//!
//! The algorithm is the one of the Linux kernel's `counter_validate` (`receive.c`), itself
//! RFC 6479: a ring of 64-bit words instead of one long shifted bitmap. Advancing the window never
//! shifts bits; it only zeroes the words the new highest counter skipped over (at most the whole
//! ring), so every packet costs O(1) and nothing is allocated. We keep the kernel's exact sizes and
//! bookkeeping so that its self-test vectors (`selftest/counter.c`) apply unchanged:
//!
//! * the ring holds [`BITS_TOTAL`] = 8192 bits in 128 words;
//! * one word is "redundant": the word holding the newest counter is only partly in use, so the
//!   window that is guaranteed to be represented without aliasing is 8192 - 64 = [`WINDOW_SIZE`];
//! * state is `next` = highest accepted counter + 1 (0 when nothing was accepted), and bit `c`
//!   of the ring stands for counter `c - 1`, exactly as the kernel stores `their_counter + 1`.
//!
//! Invariants that make the bitmap trustworthy:
//!
//! * bits for `next - WINDOW_SIZE ..= next` live in 128 consecutive words, hence distinct ring
//!   slots (8128 = 127 * 64), so no two counters that can still be accepted share a bit;
//! * no bit above `next` is ever set in the current word, and every word the window moves into is
//!   zeroed first, so a fresh counter ahead of the window always finds its bit clear;
//! * a counter is accepted when `counter + WINDOW_SIZE >= highest accepted` (so the oldest
//!   acceptable counter is exactly `WINDOW_SIZE` behind the highest), it is below
//!   [`REJECT_AFTER_MESSAGES`], and its bit is clear.
//!
//! None of the arithmetic can overflow: counters at or above [`REJECT_AFTER_MESSAGES`] are refused
//! before anything is added to them, and `REJECT_AFTER_MESSAGES + WINDOW_SIZE < u64::MAX`.

use std::fmt;

/// Bits in one ring word.
const WORD_BITS: u64 = u64::BITS as u64;

/// Words in the ring (a power of two, so a slot is a mask away).
const WORDS: usize = 128;

/// Total bits in the ring (the kernel's `COUNTER_BITS_TOTAL`).
pub const BITS_TOTAL: u64 = WORDS as u64 * WORD_BITS;

/// Number of counters behind the highest seen that are still accepted (the kernel's
/// `COUNTER_WINDOW_SIZE`, 8128 on 64-bit).
pub const WINDOW_SIZE: u64 = BITS_TOTAL - WORD_BITS;

/// Counters at or above this are never accepted (the kernel's `REJECT_AFTER_MESSAGES`).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - WINDOW_SIZE - 1;

/// Anti-replay state for one receiving key: which counters were already accepted.
///
/// Create one per session key, [`check`](Self::check) a counter before spending time on
/// decryption, and [`accept`](Self::accept) it once the packet authenticated.
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest accepted counter + 1, or 0 when nothing was accepted yet.
    next: u64,
    /// Bit `c % 64` of word `(c / 64) % 128` is set when counter `c - 1` was accepted.
    ring: [u64; WORDS],
}

impl ReplayWindow {
    /// A window that has accepted nothing yet.
    pub fn new() -> Self {
        Self {
            next: 0,
            ring: [0; WORDS],
        }
    }

    /// Would `counter` be accepted? Does not change state. Used before decryption to skip
    /// hopeless packets.
    pub fn check(&self, counter: u64) -> bool {
        let Some(c) = self.position(counter) else {
            return false;
        };
        if c > self.next {
            // Ahead of the window: `accept` would zero the words in between, and the current
            // word has no bit above `next` set.
            return true;
        }
        self.ring
            .get(slot(c))
            .is_some_and(|word| word & bit(c) == 0)
    }

    /// Accepts `counter` (after the packet authenticated): returns true and records it, or false
    /// if it is a replay, too old, or >= [`REJECT_AFTER_MESSAGES`]. Never panics for any `u64`.
    pub fn accept(&mut self, counter: u64) -> bool {
        let Some(c) = self.position(counter) else {
            return false;
        };
        if c > self.next {
            let current = self.next / WORD_BITS;
            let target = c / WORD_BITS;
            // Zero every word strictly after the current one up to the target's; past a full
            // turn of the ring every word is stale anyway.
            let skipped = (target - current).min(WORDS as u64);
            for i in 1..=skipped {
                if let Some(word) = self.ring.get_mut(slot_of_word(current + i)) {
                    *word = 0;
                }
            }
            self.next = c;
        }
        let Some(word) = self.ring.get_mut(slot(c)) else {
            return false;
        };
        let mask = bit(c);
        if *word & mask != 0 {
            return false;
        }
        *word |= mask;
        true
    }

    /// Highest counter accepted so far plus one (0 when none) — for diagnostics.
    pub fn next_expected(&self) -> u64 {
        self.next
    }

    /// The ring position (`counter + 1`, as the kernel stores it) if `counter` is neither beyond
    /// the limit nor behind the window; says nothing about whether it was already seen.
    fn position(&self, counter: u64) -> Option<u64> {
        if counter >= REJECT_AFTER_MESSAGES {
            return None;
        }
        let c = counter + 1;
        if c + WINDOW_SIZE < self.next {
            return None;
        }
        Some(c)
    }
}

/// Ring slot holding position `c`.
fn slot(c: u64) -> usize {
    slot_of_word(c / WORD_BITS)
}

/// Ring slot of the `word`-th 64-bit word of the (unbounded) counter space.
fn slot_of_word(word: u64) -> usize {
    // The mask keeps the value below WORDS, so the cast is lossless.
    (word & (WORDS as u64 - 1)) as usize
}

/// Mask of position `c` inside its word.
fn bit(c: u64) -> u64 {
    1 << (c % WORD_BITS)
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The 128 ring words are noise in logs; how far the window got is what helps.
        f.debug_struct("ReplayWindow")
            .field("next_expected", &self.next)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// The kernel self-test's `T_LIM`.
    const LIM: u64 = WINDOW_SIZE + 1;
    const RAM: u64 = REJECT_AFTER_MESSAGES;

    #[test]
    fn constants_match_the_kernel() {
        assert_eq!(BITS_TOTAL, 8192);
        assert_eq!(WINDOW_SIZE, 8128);
        assert_eq!(REJECT_AFTER_MESSAGES, u64::MAX - 8128 - 1);
    }

    /// Runs `(counter, accepted?)` steps in order on one window; names the failing step 1-based,
    /// like the kernel's numbering.
    fn run(window: &mut ReplayWindow, steps: &[(u64, bool)], what: &str) {
        for (i, &(counter, expected)) in steps.iter().enumerate() {
            assert_eq!(
                window.check(counter),
                expected,
                "{what}: check, step {} (counter {counter})",
                i + 1
            );
            assert_eq!(
                window.accept(counter),
                expected,
                "{what}: accept, step {} (counter {counter})",
                i + 1
            );
        }
    }

    /// The 34 numbered checks of the kernel's `selftest/counter.c`, in order, on one window.
    #[test]
    fn kernel_selftest_sequence() {
        let steps = [
            (0, true),
            (1, true),
            (1, false),
            (9, true),
            (8, true),
            (7, true),
            (7, false),
            (LIM, true),
            (LIM - 1, true),
            (LIM - 1, false),
            (LIM - 2, true),
            (2, true),
            (2, false),
            (LIM + 16, true),
            (3, false),
            (LIM + 16, false),
            (LIM * 4, true),
            // Exactly WINDOW_SIZE behind the highest: the oldest acceptable counter.
            (LIM * 4 - (LIM - 1), true),
            (10, false),
            // One and two behind the oldest acceptable counter.
            (LIM * 4 - LIM, false),
            (LIM * 4 - (LIM + 1), false),
            (LIM * 4 - (LIM - 2), true),
            // Same counter as step 18, seen already.
            (LIM * 4 + 1 - LIM, false),
            (0, false),
            (RAM, false),
            (RAM - 1, true),
            (RAM, false),
            (RAM - 1, false),
            (RAM - 2, true),
            (RAM + 1, false),
            (RAM + 2, false),
            (RAM - 2, false),
            (RAM - 3, true),
            (0, false),
        ];
        assert_eq!(steps.len(), 34);
        let mut window = ReplayWindow::new();
        run(&mut window, &steps, "kernel sequence");
        assert_eq!(window.next_expected(), RAM);
    }

    /// Counters 1..=WINDOW_SIZE, then 0 (exactly at the window edge) once.
    #[test]
    fn kernel_ascending_then_zero() {
        let mut steps: Vec<(u64, bool)> = (1..=WINDOW_SIZE).map(|i| (i, true)).collect();
        steps.extend([(0, true), (0, false)]);
        run(&mut ReplayWindow::new(), &steps, "1..=W then 0");
    }

    /// Counters 2..=WINDOW_SIZE+1, then 1 (at the edge) accepted and 0 (past it) refused.
    #[test]
    fn kernel_ascending_from_two() {
        let mut steps: Vec<(u64, bool)> = (2..=WINDOW_SIZE + 1).map(|i| (i, true)).collect();
        steps.extend([(1, true), (0, false)]);
        run(&mut ReplayWindow::new(), &steps, "2..=W+1 then 1, 0");
    }

    /// WINDOW_SIZE down to 0: every one of them fits.
    #[test]
    fn kernel_descending_to_zero() {
        let steps: Vec<(u64, bool)> = (0..=WINDOW_SIZE).rev().map(|i| (i, true)).collect();
        run(&mut ReplayWindow::new(), &steps, "W..=0");
    }

    /// WINDOW_SIZE+1 down to 1, then 0 is one past the edge.
    #[test]
    fn kernel_descending_to_one() {
        let mut steps: Vec<(u64, bool)> = (1..=WINDOW_SIZE + 1).rev().map(|i| (i, true)).collect();
        steps.push((0, false));
        run(&mut ReplayWindow::new(), &steps, "W+1..=1 then 0");
    }

    /// WINDOW_SIZE down to 1, then WINDOW_SIZE+1 moves the window so 0 falls out.
    #[test]
    fn kernel_descending_then_advance() {
        let mut steps: Vec<(u64, bool)> = (1..=WINDOW_SIZE).rev().map(|i| (i, true)).collect();
        steps.extend([(WINDOW_SIZE + 1, true), (0, false)]);
        run(&mut ReplayWindow::new(), &steps, "W..=1, W+1, 0");
    }

    /// WINDOW_SIZE down to 1, then 0 (still in), then WINDOW_SIZE+1.
    #[test]
    fn kernel_descending_zero_then_advance() {
        let mut steps: Vec<(u64, bool)> = (1..=WINDOW_SIZE).rev().map(|i| (i, true)).collect();
        steps.extend([(0, true), (WINDOW_SIZE + 1, true)]);
        run(&mut ReplayWindow::new(), &steps, "W..=1, 0, W+1");
    }

    #[test]
    fn next_expected_tracks_the_highest() {
        let mut window = ReplayWindow::default();
        assert_eq!(window.next_expected(), 0);
        assert!(window.accept(5));
        assert_eq!(window.next_expected(), 6);
        assert!(window.accept(3));
        assert_eq!(window.next_expected(), 6);
        assert!(!window.accept(5));
        assert_eq!(window.next_expected(), 6);
        assert!(!window.accept(u64::MAX));
        assert_eq!(window.next_expected(), 6);
    }

    #[test]
    fn check_does_not_record() {
        let mut window = ReplayWindow::new();
        assert!(window.check(7));
        assert!(window.check(7));
        assert_eq!(window.next_expected(), 0);
        assert!(window.accept(7));
        assert!(!window.check(7));
    }

    /// Jumps of up to and beyond a full ring must not leave stale bits behind where the ring
    /// wraps: before each jump every bit of the ring is set.
    #[test]
    fn long_jumps_clear_stale_bits() {
        let mut window = ReplayWindow::new();
        for jump in [
            1,
            63,
            64,
            65,
            WINDOW_SIZE,
            BITS_TOTAL - 1,
            BITS_TOTAL,
            BITS_TOTAL + 1,
            BITS_TOTAL * 3,
            WINDOW_SIZE * 7 + 63,
        ] {
            let start = window.next_expected();
            for c in start..start + BITS_TOTAL {
                assert!(window.accept(c), "fill before jump {jump}, counter {c}");
            }
            let base = window.next_expected() - 1 + jump;
            for c in base..base + BITS_TOTAL {
                assert!(window.check(c), "jump {jump}, counter {c}");
                assert!(window.accept(c), "jump {jump}, counter {c}");
            }
            assert!(!window.accept(base + BITS_TOTAL - 1 - WINDOW_SIZE));
        }
    }

    #[test]
    fn extreme_counters_never_panic() {
        let mut window = ReplayWindow::new();
        for c in [u64::MAX, u64::MAX - 1, RAM + 1, RAM] {
            assert!(!window.check(c));
            assert!(!window.accept(c));
        }
        assert!(window.accept(RAM - 1));
        for c in [0, 1, RAM - 1 - WINDOW_SIZE - 1, u64::MAX] {
            assert!(!window.check(c));
            assert!(!window.accept(c));
        }
        assert!(window.accept(RAM - 1 - WINDOW_SIZE));
    }

    /// The obvious implementation: remember everything, compare with the highest.
    #[derive(Default)]
    struct Model {
        seen: BTreeSet<u64>,
        max: Option<u64>,
    }

    impl Model {
        fn check(&self, counter: u64) -> bool {
            if counter >= RAM || self.seen.contains(&counter) {
                return false;
            }
            // Step 18 vs 20 of counter.c: WINDOW_SIZE behind the highest is still in.
            self.max.is_none_or(|max| counter + WINDOW_SIZE >= max)
        }

        fn accept(&mut self, counter: u64) -> bool {
            if !self.check(counter) {
                return false;
            }
            self.seen.insert(counter);
            self.max = Some(self.max.map_or(counter, |max| max.max(counter)));
            true
        }
    }

    /// A counter chosen relative to the highest accepted one when the step runs.
    #[derive(Clone, Debug)]
    enum Step {
        /// Highest + d.
        Ahead(u64),
        /// Highest - d.
        Behind(u64),
        /// Around the window's trailing edge: highest - WINDOW_SIZE + d.
        Edge(i8),
        /// A whole number of rings ahead, plus a little, to exercise wrap-around clearing.
        Rings(u8, u8),
        /// A counter picked before (likely a replay).
        Replay(prop::sample::Index),
        /// Near REJECT_AFTER_MESSAGES: RAM - 4 + d.
        NearLimit(u8),
        /// Anywhere.
        Anywhere(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u64..130).prop_map(Step::Ahead),
            6 => (0u64..200).prop_map(Step::Behind),
            2 => (WINDOW_SIZE - 70..WINDOW_SIZE + 70).prop_map(Step::Behind),
            4 => (-3i8..=3).prop_map(Step::Edge),
            1 => (0u8..4, 0u8..=255).prop_map(|(r, d)| Step::Rings(r, d)),
            4 => any::<prop::sample::Index>().prop_map(Step::Replay),
            1 => (0u8..8).prop_map(Step::NearLimit),
            1 => any::<u64>().prop_map(Step::Anywhere),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn agrees_with_model(steps in prop::collection::vec(step(), 1..400)) {
            let mut window = ReplayWindow::new();
            let mut model = Model::default();
            let mut history: Vec<u64> = Vec::new();
            for step in steps {
                let max = model.max.unwrap_or(0);
                let counter = match step {
                    Step::Ahead(d) => max.saturating_add(d),
                    Step::Behind(d) => max.saturating_sub(d),
                    Step::Edge(d) => max
                        .saturating_sub(WINDOW_SIZE)
                        .saturating_add_signed(i64::from(d)),
                    Step::Rings(r, d) => max
                        .saturating_add(u64::from(r) * BITS_TOTAL)
                        .saturating_add(u64::from(d)),
                    Step::Replay(i) if !history.is_empty() => *i.get(&history),
                    Step::Replay(_) => 0,
                    Step::NearLimit(d) => RAM - 4 + u64::from(d),
                    Step::Anywhere(c) => c,
                };
                history.push(counter);
                let expected = model.accept(counter);
                prop_assert_eq!(window.check(counter), expected, "check {}", counter);
                prop_assert_eq!(window.accept(counter), expected, "accept {}", counter);
                prop_assert_eq!(window.next_expected(), model.max.map_or(0, |m| m + 1));
            }
        }
    }
}
