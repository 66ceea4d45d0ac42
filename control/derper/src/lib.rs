//! weft-derper (in progress).
