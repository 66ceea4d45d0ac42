//! What the server hands the shell: frames to write per connection, and events.

use super::{ConnId, Event, Server};
use crate::frame::{Frame, PeerGoneReason};

impl Server {
    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Appends frames owed to `conn` to `out` until about `max_bytes` were added (at least one
    /// frame is written when any is owed) and returns whether more remain. Call it after
    /// [`Event::Wake`]; when it returns `false` the connection is woken again by new output.
    ///
    /// Order: ServerInfo, PeerGone, mesh updates, Pong, KeepAlive, Health, disco packets, other
    /// packets, Restarting.
    pub fn poll_transmit(&mut self, conn: ConnId, out: &mut Vec<u8>, max_bytes: usize) -> bool {
        let start = out.len();
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let stats = &mut self.stats;
        // Every frame written below is well-formed and within limits, so encoding cannot fail.
        let put = |f: Frame<'_>, out: &mut Vec<u8>| {
            let _ = f.encode_to_vec(out);
        };
        loop {
            if out.len() > start && out.len() - start >= max_bytes {
                break;
            }
            if !c.pre.is_empty() {
                out.append(&mut c.pre);
            } else if let Some((peer, reason)) = c.peer_gone.pop_front() {
                match reason {
                    PeerGoneReason::Disconnected => stats.peer_gone_disconnected_frames += 1,
                    PeerGoneReason::NotHere => stats.peer_gone_not_here_frames += 1,
                    PeerGoneReason::Other(_) => {}
                }
                put(Frame::PeerGone { peer, reason }, out);
            } else if let Some(change) = c.mesh_updates.pop_front() {
                match change.present {
                    Some(endpoint) => put(
                        Frame::PeerPresent {
                            peer: change.peer,
                            endpoint: Some(endpoint),
                        },
                        out,
                    ),
                    None => {
                        stats.peer_gone_disconnected_frames += 1;
                        put(
                            Frame::PeerGone {
                                peer: change.peer,
                                reason: PeerGoneReason::Disconnected,
                            },
                            out,
                        );
                    }
                }
            } else if let Some(data) = c.pong.take() {
                stats.pongs_sent += 1;
                put(Frame::Pong(data), out);
            } else if c.keep_alive_due {
                c.keep_alive_due = false;
                stats.keep_alives_sent += 1;
                put(Frame::KeepAlive, out);
            } else if let Some(problem) = c.health.take() {
                put(Frame::Health { problem: &problem }, out);
            } else if let Some(q) = c.disco.pop_front().or_else(|| c.packets.pop_front()) {
                stats.packets_sent += 1;
                stats.bytes_sent += q.data.len() as u64;
                put(
                    Frame::RecvPacket {
                        src: q.src,
                        packet: &q.data,
                    },
                    out,
                );
            } else if let Some((reconnect_in_ms, try_for_ms)) = c.restarting.take() {
                put(
                    Frame::Restarting {
                        reconnect_in_ms,
                        try_for_ms,
                    },
                    out,
                );
            } else {
                break;
            }
        }
        let more = c.has_output();
        if !more {
            c.woken = false;
        }
        more
    }
}
