//! weft-derper binary (in progress).
fn main() {}
