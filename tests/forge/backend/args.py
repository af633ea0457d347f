"""Mirrors backend/args.py ``dynamic_args``: settings the UI changes at run time; ``online_lora``
is set by the "Diffusion in Low Bits" choices that end in "(fp16 LoRA)"."""

dynamic_args = dict(embedding_dir="./embeddings", emphasis_name="original")
