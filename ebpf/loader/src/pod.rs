//! `aya::Pod` wrappers for the `weft-ebpf-common` layouts (the trait is aya's and the types are
//! that crate's, so the impls need local newtypes).

use weft_ebpf_common::{FlowKey, Local, LpmKeyData, Slot, SlotBits, TcConfig, XdpConfig};

macro_rules! pod {
    ($($name:ident($inner:ty)),* $(,)?) => {$(
        #[repr(transparent)]
        #[derive(Debug, Clone, Copy)]
        pub(crate) struct $name(pub(crate) $inner);
        // SAFETY: the inner type is #[repr(C)], made of integers and integer arrays with
        // explicit padding fields, so every bit pattern is valid and it has no implicit
        // padding; repr(transparent) keeps that layout.
        unsafe impl aya::Pod for $name {}
    )*};
}

pod!(
    PodKey(LpmKeyData),
    PodBits(SlotBits),
    PodSlot(Slot),
    PodLocal(Local),
    PodTcConfig(TcConfig),
    PodXdpConfig(XdpConfig),
    PodFlowKey(FlowKey),
);
