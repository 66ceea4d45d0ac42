//! Tailscale's control-protocol wire types (work in progress).
