"""Per-family readers: which text encoder gives T and how its self-attention is read, for each
model family (SD 1.x, SD 2.x, SDXL). Host-free: the hosts and the standalone runtime hand them
their own modules."""
