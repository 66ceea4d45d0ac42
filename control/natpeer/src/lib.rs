//! The lab side of `weft-natpeer`: running a pair of nodes in a `weft_testkit::NatLab` (the
//! NAT scenario tests and the `weft-natlab` demo use it). The node itself is the binary.

pub mod lab;
