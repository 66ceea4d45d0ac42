//! wg UAPI
