"""T-SAM's host-free core: the text target, the cross-attention similarity, the losses, the
schedule, the recorder of cross-attention maps, the guidance step and one guided sampling pass,
plus the settings and infotext every host shares. Nothing here knows a model family or a host."""
