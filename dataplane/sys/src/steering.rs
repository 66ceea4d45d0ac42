//! `SO_REUSEPORT` socket groups with classic-BPF receive steering by WireGuard receiver index.
//!
//! # Why
//!
//! The line-rate engine runs one shard per core, each with its own UDP socket bound to the same
//! listen port, and every peer is owned by exactly one shard: only the owner touches the peer's
//! sessions (send counter, replay window), so the hot path takes no locks. That only works if
//! each of the peer's incoming packets reaches the owner's socket in the first place. The kernel
//! would spread them by a hash of the 4-tuple, which knows nothing about owners; instead,
//! [`attach_index_steering`] gives the group a tiny classic-BPF program that reads the *receiver
//! index* the owner chose (owners allocate indices with `index % shards == owner`) and returns
//! the owner's position in the group. Messages without a receiver index (handshake initiations,
//! STUN, junk) are left to the kernel's hash; any shard can take those.
//!
//! # The group
//!
//! [`bind_udp_group`] binds the sockets in order; the kernel numbers the members of a reuseport
//! group in the order they joined, so socket `k` of the returned `Vec` is the one the program
//! selects by returning `k`. Two kernel behaviours the caller must know:
//!
//! * **Closing a member reorders the group.** The kernel removes a socket by moving the group's
//!   last socket into its slot, so after dropping socket `k` the old last socket answers to
//!   index `k`, and steering sends other shards' packets there. Keep every socket of the group
//!   open for its whole life; to change the shard count, build a new group.
//! * **`SO_REUSEPORT` before `bind(port 0)` may share someone else's port.** When picking a free
//!   port the kernel does not count sockets that could share it (`SO_REUSEPORT` on both, same
//!   user), so such a bind can land on the port of an unrelated reuseport group of the same user
//!   and silently join it (measured: 158 of 3 000 such binds here shared a port). The first
//!   socket of a group is therefore bound *without* `SO_REUSEPORT`, which also makes a taken
//!   port fail with `EADDRINUSE` instead of joining another program's group, and gets the option
//!   right after; the kernel creates the group when the second socket joins, with the first
//!   socket as member 0. The others set it before binding, as they must to join.
//!
//! # The program
//!
//! For UDP the kernel runs the program on the payload (it pulls the 8-byte UDP header first),
//! so offset 0 is the WireGuard message type. In pseudo-code, with `HASH` = `u32::MAX`:
//!
//! ```text
//! if len < 8                      return HASH   // too short for any WireGuard message
//! if payload[0] == 2                            // response: the receiver follows the sender
//!     if len < 12                 return HASH
//!     return u32::from_le_bytes(payload[8..12]) % shards
//! if payload[0] not in 3..=4      return HASH   // initiation (1), STUN, disco, junk
//! return u32::from_le_bytes(payload[4..8]) % shards
//! ```
//!
//! A return value at or beyond the group's size makes the kernel fall back to its 4-tuple hash.
//! `u32::MAX` is used rather than `shards` so that it stays out of range even if the group has
//! more sockets than shards. Classic BPF's word load is big-endian and it has no byte swap, so
//! the little-endian index is assembled from four byte loads through the `X` register; when
//! `shards` is a power of two (at most 64, so it divides 256) only the low byte matters, and the
//! program loads just that. The length check matters: a classic-BPF load past the end of the
//! packet ends the program with return value 0, which would send every short datagram of types
//! 2 to 4 to socket 0 rather than spreading them by hash. (The length the program sees is the
//! payload's, after the header pull: the tests check that a 7-byte type-4 datagram is hashed.)

use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd};

use socket2::SockRef;

use crate::socket::{bind_udp, bind_udp_family};
use crate::SysError;

/// Most sockets a [`bind_udp_group`] may hold and most shards [`attach_index_steering`] steers
/// to: far more than the cores a data plane shards over, and small enough that every power of
/// two up to it divides 256 (the steering program's low-byte shortcut relies on that).
pub const MAX_STEERING_SHARDS: usize = 64;

/// Returned by the program for "no receiver index here": out of range for any group, so the
/// kernel picks the socket by its 4-tuple hash.
const HASH_FALLBACK: u32 = u32::MAX;

/// The handshake response, whose receiver index (the initiator's sender index) follows the
/// responder's own sender index, at [`RESPONSE_INDEX_OFFSET`].
const RESPONSE_TYPE: u32 = 2;
/// WireGuard message types that carry a receiver index at [`INDEX_OFFSET`]: cookie reply (3)
/// and transport data (4).
const FIRST_INDEXED_TYPE: u32 = 3;
const LAST_INDEXED_TYPE: u32 = 4;
/// Where the little-endian receiver index starts in a cookie reply or transport message.
const INDEX_OFFSET: u32 = 4;
/// Where it starts in a response (after type, reserved bytes and the sender index).
const RESPONSE_INDEX_OFFSET: u32 = 8;
/// The shortest payload that holds a type and a receiver index.
const MIN_INDEXED_LEN: u32 = INDEX_OFFSET + 4;
/// The shortest response prefix that holds its receiver index.
const MIN_RESPONSE_LEN: u32 = RESPONSE_INDEX_OFFSET + 4;

/// A classic-BPF opcode (libc's copies of `linux/bpf_common.h` and `linux/filter.h`) as the
/// 16-bit `code` field; every opcode used here is below 0x100, so nothing is truncated.
#[allow(clippy::cast_possible_truncation)]
const fn op(code: u32) -> u16 {
    code as u16
}

const LD_LEN: u16 = op(libc::BPF_LD | libc::BPF_W | libc::BPF_LEN);
const LD_B_ABS: u16 = op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS);
const JGE_K: u16 = op(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K);
const JGT_K: u16 = op(libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K);
const JEQ_K: u16 = op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K);
const LSH_K: u16 = op(libc::BPF_ALU | libc::BPF_LSH | libc::BPF_K);
const OR_X: u16 = op(libc::BPF_ALU | libc::BPF_OR | libc::BPF_X);
const AND_K: u16 = op(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K);
const MOD_K: u16 = op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K);
const TAX: u16 = op(libc::BPF_MISC | libc::BPF_TAX);
const RET_A: u16 = op(libc::BPF_RET | libc::BPF_A);
const RET_K: u16 = op(libc::BPF_RET | libc::BPF_K);

/// Binds `count` UDP sockets to the same port as one `SO_REUSEPORT` group, for one shard each.
///
/// The sockets are made like [`bind_udp`]'s: dual-stack `[::]:port` with `IPV6_V6ONLY` off
/// (IPv4 peers appear v4-mapped), falling back to `0.0.0.0:port` when IPv6 is unusable (the
/// first socket decides; the others then use the same family, with no fallback of their own),
/// non-blocking, close-on-exec, and with `SO_MARK` set to `fwmark` if it is `Some` non-zero.
/// With `port == 0` the first socket gets a free port from the kernel and the others bind to it.
///
/// Socket `k` of the returned `Vec` is member `k` of the kernel's group, the one a steering
/// program selects by returning `k` (see [`attach_index_steering`]). Dropping any socket but
/// the last renumbers the group (the kernel moves the last member into the freed slot): keep
/// them all open together.
///
/// The first socket gets `SO_REUSEPORT` only after it is bound: when the kernel picks a port
/// for `bind(port 0)` it does not count sockets that could share it (`SO_REUSEPORT` on both,
/// same user), so a reuseport socket bound to port 0 can land on an unrelated group's port and
/// join it. Bound plainly first, the group gets a port nobody uses, and an explicit port that
/// is taken, even by another reuseport group of the same user, fails with `EADDRINUSE` instead
/// of being shared. (Other processes of the same user can still join the group later by
/// binding the port with `SO_REUSEPORT`; the kernel allows that by design.)
///
/// # Errors
///
/// [`SysError::BadConfig`] unless `1 <= count <= MAX_STEERING_SHARDS`. [`SysError::Io`] if a
/// socket cannot be created, configured or bound (`EADDRINUSE`: the port is taken; `EPERM`
/// setting the mark without `CAP_NET_ADMIN`); the sockets bound so far are closed.
pub fn bind_udp_group(
    port: u16,
    fwmark: Option<u32>,
    count: usize,
) -> Result<Vec<UdpSocket>, SysError> {
    if !(1..=MAX_STEERING_SHARDS).contains(&count) {
        return Err(SysError::BadConfig {
            reason: "a reuseport group needs 1 to 64 sockets",
        });
    }
    let first = bind_udp(port, fwmark)?;
    let local = first
        .local_addr()
        .map_err(|e| SysError::io("getsockname", e))?;
    SockRef::from(&first)
        .set_reuse_port(true)
        .map_err(|e| SysError::io("setsockopt SO_REUSEPORT", e))?;
    let mut group = Vec::with_capacity(count);
    group.push(first);
    while group.len() < count {
        group.push(bind_udp_family(
            local.is_ipv6(),
            local.port(),
            fwmark,
            true,
        )?);
    }
    Ok(group)
}

/// Steers the reuseport group `sock` belongs to by WireGuard receiver index: a response (type
/// 2), cookie reply (3) or transport data message (4) goes to member `receiver_index % shards`,
/// everything else to the member the kernel's 4-tuple hash picks.
///
/// Call it once on any one socket of a group from [`bind_udp_group`], after all its members
/// are bound; the program belongs to the group, and attaching again replaces it. `shards`
/// should be the group's size. With `shards == 1` there is nothing to steer and nothing is
/// attached.
///
/// The kernel runs the program on the UDP payload. In pseudo-code, with `HASH` = `u32::MAX`, a
/// value out of range for any group that makes the kernel fall back to its hash:
///
/// ```text
/// if len < 8                      return HASH   // too short for any WireGuard message
/// if payload[0] == 2                            // response: the receiver follows the sender
///     if len < 12                 return HASH
///     return u32::from_le_bytes(payload[8..12]) % shards
/// if payload[0] not in 3..=4      return HASH   // initiation (1), STUN, disco, junk
/// return u32::from_le_bytes(payload[4..8]) % shards
/// ```
///
/// # Errors
///
/// [`SysError::BadConfig`] unless `1 <= shards <= MAX_STEERING_SHARDS`. [`SysError::Io`] if the
/// kernel refuses the program: `EINVAL` if `sock` is not in a reuseport group (e.g. a
/// [`bind_udp`] socket), `ENOPROTOOPT` before Linux 4.5.
pub fn attach_index_steering(sock: impl AsFd, shards: u32) -> Result<(), SysError> {
    let in_range = usize::try_from(shards).is_ok_and(|s| (1..=MAX_STEERING_SHARDS).contains(&s));
    if !in_range {
        return Err(SysError::BadConfig {
            reason: "steering needs 1 to 64 shards",
        });
    }
    if shards == 1 {
        return Ok(());
    }
    let mut program = steering_program(shards);
    let len = u16::try_from(program.len()).map_err(|_| SysError::BadConfig {
        reason: "steering program too long",
    })?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_mut_ptr(),
    };
    // `size_of::<sock_fprog>()` is 16; it fits `socklen_t`.
    #[allow(clippy::cast_possible_truncation)]
    let optlen = std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t;
    let fd = sock.as_fd();
    // SAFETY: the option value points to `fprog`, a live `sock_fprog`, and `optlen` is its exact
    // size. `fprog.filter` points to `program`'s `len` initialised instructions, which outlive
    // the call (the kernel copies them before returning and keeps no pointer). `fd` is
    // borrowed, so it is open for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::from_ref(&fprog).cast(),
            optlen,
        )
    };
    if rc < 0 {
        return Err(SysError::last_os("setsockopt SO_ATTACH_REUSEPORT_CBPF"));
    }
    Ok(())
}

/// One classic-BPF instruction without a jump.
const fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// One classic-BPF conditional jump: `jt` / `jf` instructions forward if the test holds / fails.
const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Instructions that leave `u32::from_le_bytes(payload[offset..offset + 4]) % shards` in A and
/// return it (the caller has checked the length).
fn index_mod(offset: u32, shards: u32) -> Vec<libc::sock_filter> {
    if shards.is_power_of_two() {
        // shards divides 256, so the index's low byte (first, little-endian) decides.
        return vec![
            stmt(LD_B_ABS, offset),
            stmt(AND_K, shards - 1),
            stmt(RET_A, 0),
        ];
    }
    // A = b[offset + 3]; then three times: A <<= 8, X = A, A = next lower byte, A |= X.
    let mut body = vec![stmt(LD_B_ABS, offset + 3)];
    for byte in (offset..offset + 3).rev() {
        body.extend([
            stmt(LSH_K, 8),
            stmt(TAX, 0),
            stmt(LD_B_ABS, byte),
            stmt(OR_X, 0),
        ]);
    }
    body.extend([stmt(MOD_K, shards), stmt(RET_A, 0)]);
    body
}

/// The steering program for `shards` (1 to [`MAX_STEERING_SHARDS`]), described in the module
/// documentation: six checks, the cookie/transport body, the response's length check and body,
/// then the fallback return.
fn steering_program(shards: u32) -> Vec<libc::sock_filter> {
    const CHECKS: usize = 6;
    let transport = index_mod(INDEX_OFFSET, shards);
    let response = index_mod(RESPONSE_INDEX_OFFSET, shards);
    let response_at = CHECKS + transport.len();
    let fallback_at = response_at + 2 + response.len();
    // Jump offsets count from the next instruction; the program has at most 6 + 15 + 2 + 15 +
    // 1 instructions, so they fit a u8.
    let rel = |pc: usize, to: usize| u8::try_from(to - pc - 1).unwrap_or(u8::MAX);
    let mut program = Vec::with_capacity(fallback_at + 1);
    program.extend([
        stmt(LD_LEN, 0),
        jump(JGE_K, MIN_INDEXED_LEN, 0, rel(1, fallback_at)),
        stmt(LD_B_ABS, 0),
        jump(JEQ_K, RESPONSE_TYPE, rel(3, response_at), 0),
        jump(JGE_K, FIRST_INDEXED_TYPE, 0, rel(4, fallback_at)),
        jump(JGT_K, LAST_INDEXED_TYPE, rel(5, fallback_at), 0),
    ]);
    program.extend(transport);
    program.extend([
        stmt(LD_LEN, 0),
        jump(
            JGE_K,
            MIN_RESPONSE_LEN,
            0,
            rel(response_at + 1, fallback_at),
        ),
    ]);
    program.extend(response);
    program.push(stmt(RET_K, HASH_FALLBACK));
    program
}

#[cfg(test)]
mod tests {
    #![allow(clippy::cast_possible_truncation)]

    use super::*;
    use crate::{bind_udp, poll_readable};
    use std::collections::BTreeMap;
    use std::io;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::os::fd::BorrowedFd;
    use std::time::{Duration, Instant};

    /// A classic-BPF interpreter for the instructions [`steering_program`] uses, with the
    /// kernel's rule that a load past the end returns 0.
    fn run(program: &[libc::sock_filter], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        loop {
            let insn = program[pc];
            pc += 1;
            match insn.code {
                LD_LEN => a = pkt.len() as u32,
                LD_B_ABS => match pkt.get(insn.k as usize) {
                    Some(&b) => a = u32::from(b),
                    None => return 0,
                },
                JGE_K | JGT_K | JEQ_K => {
                    let taken = match insn.code {
                        JGE_K => a >= insn.k,
                        JGT_K => a > insn.k,
                        _ => a == insn.k,
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                LSH_K => a <<= insn.k,
                OR_X => a |= x,
                AND_K => a &= insn.k,
                MOD_K => a %= insn.k,
                TAX => x = a,
                RET_A => return a,
                RET_K => return insn.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    /// What the program should return.
    fn model(pkt: &[u8], shards: u32) -> u32 {
        match pkt {
            [2, _, _, _, _, _, _, _, i0, i1, i2, i3, ..] | [3 | 4, _, _, _, i0, i1, i2, i3, ..] => {
                u32::from_le_bytes([*i0, *i1, *i2, *i3]) % shards
            }
            _ => HASH_FALLBACK,
        }
    }

    /// Receiver indices whose bytes differ, so that a big-endian read or a low-byte-only read
    /// would give other shards.
    const ODD_INDICES: [u32; 8] = [
        0xFFFF_FFFF,
        0x0102_0304,
        0x0403_0201,
        0x8000_0000,
        0x0000_0100,
        0x0100_0000,
        0x00FF_FF00,
        0xDEAD_BEEF,
    ];

    fn indices() -> Vec<u32> {
        (0..50).chain(ODD_INDICES).collect()
    }

    /// A message of type `ty` with the receiver `index` where that type carries it (offset 8
    /// in a response, 4 otherwise; a different value in the response's sender field, so that
    /// reading the wrong field steers wrongly) and `tag` at offset 16, `len` bytes long.
    fn message(ty: u8, index: u32, tag: u64, len: usize) -> Vec<u8> {
        let mut m = vec![0u8; len.max(24)];
        m[0] = ty;
        if ty == 2 {
            m[4..8].copy_from_slice(&(!index).rotate_left(7).to_le_bytes());
            m[8..12].copy_from_slice(&index.to_le_bytes());
        } else {
            m[4..8].copy_from_slice(&index.to_le_bytes());
        }
        m[16..24].copy_from_slice(&tag.to_le_bytes());
        m
    }

    fn tag_of(payload: &[u8]) -> u64 {
        u64::from_le_bytes(payload[16..24].try_into().unwrap())
    }

    struct Received {
        socket: usize,
        from: SocketAddr,
        payload: Vec<u8>,
    }

    /// Reads every socket of `group` (non-blocking) until `want` datagrams have arrived or five
    /// seconds have passed, then drains what is left without waiting.
    #[allow(clippy::disallowed_methods)] // a test's deadline; no core is involved
    fn receive(group: &[UdpSocket], want: usize) -> Vec<Received> {
        let fds: Vec<BorrowedFd<'_>> = group.iter().map(AsFd::as_fd).collect();
        let mut ready = vec![false; fds.len()];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            let now = Instant::now();
            let wait = if got.len() >= want || now >= deadline {
                Duration::ZERO
            } else {
                deadline - now
            };
            if poll_readable(&fds, Some(wait), &mut ready).unwrap() == 0 {
                if got.len() >= want || Instant::now() >= deadline {
                    return got;
                }
                continue;
            }
            for (socket, sock) in group.iter().enumerate() {
                loop {
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) => got.push(Received {
                            socket,
                            from,
                            payload: buf[..n].to_vec(),
                        }),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("recv_from: {e}"),
                    }
                }
            }
        }
    }

    /// Sends types 2, 3 and 4 with every index of [`indices`] from `client` to `dst` and checks
    /// each arrives once, on member `index % n`.
    fn check_steering(group: &[UdpSocket], client: &UdpSocket, dst: SocketAddr) {
        let n = group.len() as u32;
        for (ty, len) in [(2u8, 92usize), (3, 64), (4, 32)] {
            let mut expected = BTreeMap::new();
            for (tag, index) in indices().into_iter().enumerate() {
                let tag = tag as u64;
                client.send_to(&message(ty, index, tag, len), dst).unwrap();
                expected.insert(tag, (index % n) as usize);
            }
            let got = receive(group, expected.len());
            assert_eq!(got.len(), expected.len(), "type {ty}: lost or duplicated");
            for r in &got {
                assert_eq!(r.from.port(), client.local_addr().unwrap().port());
                let tag = tag_of(&r.payload);
                let want = expected.remove(&tag).expect("duplicate or unknown tag");
                assert_eq!(r.socket, want, "type {ty}, tag {tag}, group of {n}");
            }
        }
        // Exactly 8 bytes is enough for the index; 12 for a response's.
        client.send_to(&[4, 0, 0, 0, 7, 0, 0, 0], dst).unwrap();
        let got = receive(group, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].socket, (7 % n) as usize);
        client
            .send_to(&[2, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0], dst)
            .unwrap();
        let got = receive(group, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].socket, (5 % n) as usize);
    }

    fn v4_client() -> UdpSocket {
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()
    }

    #[test]
    fn program_matches_the_model() {
        let mut packets: Vec<Vec<u8>> = vec![vec![], vec![4], vec![4, 0, 0, 0, 1, 2, 3]];
        for ty in [0u8, 1, 2, 3, 4, 5, 0x10, 0xFF] {
            for index in indices() {
                packets.push(message(ty, index, 0, 32));
                packets.push(message(ty, index, 0, 8)[..8].to_vec());
                packets.push(message(ty, index, 0, 12)[..12].to_vec());
                packets.push(message(ty, index, 0, 12)[..11].to_vec());
            }
        }
        for shards in 1..=MAX_STEERING_SHARDS as u32 {
            let program = steering_program(shards);
            assert!(program.len() <= 39);
            for pkt in &packets {
                assert_eq!(run(&program, pkt), model(pkt, shards), "{shards} {pkt:?}");
            }
        }
        // The odd indices tell a little-endian read from a low-byte-only one (mod 3) and from
        // a big-endian one (mod 7; not mod 3, where 256 = 1 makes byte order irrelevant).
        assert!(ODD_INDICES.iter().any(|i| i % 3 != (i & 0xFF) % 3));
        assert!(ODD_INDICES.iter().any(|i| i % 7 != i.swap_bytes() % 7));
    }

    /// Groups of 2 and 4 take the low-byte path; 3 and 7 the full modulo (7 because 256 is 1
    /// mod 3, so a group of 3 cannot tell a byte-order mistake).
    #[test]
    fn transport_types_are_steered_by_receiver_index() {
        for n in [2usize, 3, 4, 7] {
            let group = bind_udp_group(0, None, n).unwrap();
            let port = group[0].local_addr().unwrap().port();
            assert_ne!(port, 0);
            for sock in &group {
                assert_eq!(sock.local_addr().unwrap().port(), port);
            }
            // Any member will do.
            attach_index_steering(&group[n - 1], n as u32).unwrap();
            let client = v4_client();
            check_steering(&group, &client, (Ipv4Addr::LOCALHOST, port).into());
        }
    }

    #[test]
    fn steering_works_over_ipv6_loopback() {
        let group = bind_udp_group(0, None, 3).unwrap();
        let local = group[0].local_addr().unwrap();
        if !local.is_ipv6() {
            eprintln!("skipped: the group fell back to IPv4");
            return;
        }
        let Ok(client) = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)) else {
            eprintln!("skipped: no ::1");
            return;
        };
        attach_index_steering(&group[0], 3).unwrap();
        check_steering(&group, &client, (Ipv6Addr::LOCALHOST, local.port()).into());
        // The same group serves IPv4 (v4-mapped) with the same steering.
        check_steering(
            &group,
            &v4_client(),
            (Ipv4Addr::LOCALHOST, local.port()).into(),
        );
    }

    /// Initiations, junk and short datagrams carry no index: the kernel's 4-tuple hash places
    /// them, so every datagram from one source lands on the same member, whatever it holds.
    #[test]
    fn everything_else_falls_back_to_the_flow_hash() {
        let n = 3;
        let group = bind_udp_group(0, None, n).unwrap();
        let dst: SocketAddr = (Ipv4Addr::LOCALHOST, group[0].local_addr().unwrap().port()).into();
        attach_index_steering(&group[1], n as u32).unwrap();
        let clients: Vec<UdpSocket> = (0..24).map(|_| v4_client()).collect();

        // Three initiations (148 bytes) from each source: none lost, one member per source.
        let mut tag = 0u64;
        for c in &clients {
            for _ in 0..3 {
                c.send_to(&message(1, 0, tag, 148), dst).unwrap();
                tag += 1;
            }
        }
        let got = receive(&group, 3 * clients.len());
        assert_eq!(got.len(), 3 * clients.len());
        let mut tags: Vec<u64> = got.iter().map(|r| tag_of(&r.payload)).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..tag).collect::<Vec<_>>());
        let mut member_of = BTreeMap::new();
        for r in &got {
            let member = *member_of.entry(r.from).or_insert(r.socket);
            assert_eq!(member, r.socket, "one source's initiations were split");
        }
        // Some source must hash to a member other than 0, or the checks below could not tell
        // the hash from the "load past the end returns 0" path (chance of failing: 3^-24).
        assert!(member_of.values().any(|&m| m != 0));

        // Other first bytes (STUN starts with 0x00 0x01), a 7-byte "transport" message and an
        // empty datagram: all hashed like the source's initiations.
        let mut stun = message(0, 0, 0, 20);
        stun[1] = 1;
        let short: &[u8] = &[4, 0, 0, 0, 1, 2, 3];
        let datagrams: Vec<Vec<u8>> = vec![
            stun,
            message(5, 1, 0, 32),
            message(0xFF, 2, 0, 32),
            short.to_vec(),
            Vec::new(),
        ];
        for c in &clients {
            for d in &datagrams {
                c.send_to(d, dst).unwrap();
            }
        }
        let got = receive(&group, datagrams.len() * clients.len());
        assert_eq!(got.len(), datagrams.len() * clients.len());
        for r in &got {
            assert_eq!(
                r.socket, member_of[&r.from],
                "{:?} from {} was not hashed",
                r.payload, r.from
            );
        }
    }

    #[test]
    fn explicit_port_fwmark_and_an_exclusive_port() {
        let taken = bind_udp_group(0, None, 2).unwrap();
        let port = taken[0].local_addr().unwrap().port();
        // Neither another group nor a plain socket can take (or join) the port.
        for err in [
            bind_udp_group(port, None, 2).unwrap_err(),
            bind_udp(port, None).unwrap_err(),
        ] {
            match err {
                SysError::Io { source, .. } => {
                    assert_eq!(source.raw_os_error(), Some(libc::EADDRINUSE));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(taken);

        let group = bind_udp_group(port, Some(7), 3).unwrap();
        for sock in &group {
            assert_eq!(sock.local_addr().unwrap().port(), port);
            assert_eq!(SockRef::from(sock).mark().unwrap(), 7);
            assert!(SockRef::from(sock).reuse_port().unwrap());
        }
        attach_index_steering(&group[2], 3).unwrap();
        check_steering(&group, &v4_client(), (Ipv4Addr::LOCALHOST, port).into());
    }

    /// Regression guard for binding the first socket without `SO_REUSEPORT`: with it set before
    /// `bind(port 0)`, 600 such binds would share a port with probability about 99.8%.
    #[test]
    fn port_zero_groups_never_share_a_port() {
        let groups: Vec<Vec<UdpSocket>> = (0..600)
            .map(|_| bind_udp_group(0, None, 1).unwrap())
            .collect();
        let mut ports: Vec<u16> = groups
            .iter()
            .map(|g| g[0].local_addr().unwrap().port())
            .collect();
        ports.sort_unstable();
        let before = ports.len();
        ports.dedup();
        assert_eq!(ports.len(), before, "two groups got the same port");
    }

    /// Documents a kernel behaviour the engine must respect: closing member 0 of [a, b, c]
    /// leaves the group as [c, b], so index 0 now reaches c and index 2 is out of range (hash).
    #[test]
    fn closing_a_member_moves_the_last_into_its_slot() {
        let mut group = bind_udp_group(0, None, 3).unwrap();
        let dst: SocketAddr = (Ipv4Addr::LOCALHOST, group[0].local_addr().unwrap().port()).into();
        attach_index_steering(&group[0], 3).unwrap();
        drop(group.remove(0)); // group is now [b, c]
        let client = v4_client();
        for round in 0..10u32 {
            client.send_to(&message(4, 3 * round, 0, 32), dst).unwrap();
            client
                .send_to(&message(4, 3 * round + 1, 1, 32), dst)
                .unwrap();
        }
        let got = receive(&group, 20);
        assert_eq!(got.len(), 20);
        for r in &got {
            let index = u32::from_le_bytes(r.payload[4..8].try_into().unwrap());
            let want = if index % 3 == 0 { 1 } else { 0 }; // index 0 → c, index 1 → b
            assert_eq!(r.socket, want, "index {index}");
        }
    }

    #[test]
    fn sizes_out_of_range_are_refused() {
        for count in [0, MAX_STEERING_SHARDS + 1] {
            assert!(matches!(
                bind_udp_group(0, None, count),
                Err(SysError::BadConfig { .. })
            ));
        }
        let group = bind_udp_group(0, None, 2).unwrap();
        for shards in [0, MAX_STEERING_SHARDS as u32 + 1, u32::MAX] {
            let err = attach_index_steering(&group[0], shards).unwrap_err();
            assert!(matches!(err, SysError::BadConfig { .. }), "{err:?}");
            assert!(err.to_string().contains("1 to 64 shards"));
        }
        attach_index_steering(&group[0], 1).unwrap();
        attach_index_steering(&group[0], 2).unwrap();
        // A socket in no reuseport group cannot take a program.
        let lone = bind_udp(0, None).unwrap();
        match attach_index_steering(&lone, 2).unwrap_err() {
            SysError::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::EINVAL)),
            other => panic!("unexpected {other:?}"),
        }
        // A group of one is a reuseport group too.
        let single = bind_udp_group(0, None, 1).unwrap();
        assert!(SockRef::from(&single[0]).reuse_port().unwrap());
    }
}
