"""The CLIP BPE tokenizer of SD1.x, built offline from open-clip-torch's vocabulary file.

SD1.x uses openai/clip-vit-large-patch14's tokenizer: the same 49408-entry byte-level BPE that
open_clip ships as ``bpe_simple_vocab_16e6.txt.gz``. This turns that file into a transformers
``CLIPTokenizer`` (the class A1111 uses), so token ids, and therefore token positions, are the
real ones. Nothing is downloaded; open_clip itself is not imported (it needs torchvision).
"""

import functools
import gzip
import importlib.util
import json
import os
import tempfile

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2


def vocabulary_path() -> str:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open-clip-torch is not installed; it ships the CLIP vocabulary file")
    path = os.path.join(list(spec.submodule_search_locations)[0], VOCAB_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return path


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's reversible map from the 256 bytes to printable unicode symbols, in id order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = [b for b in range(256) if b not in printable]
    codes = dict(zip(printable, printable)) | {b: 256 + k for k, b in enumerate(extra)}
    return [chr(codes[b]) for b in printable + extra]


def vocabulary() -> tuple[dict[str, int], list[str]]:
    """(token -> id, merges) exactly as openai's CLIP tokenizer numbers them."""
    lines = gzip.open(vocabulary_path()).read().decode("utf-8").split("\n")
    merges = lines[1:N_MERGES + 1]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


@functools.lru_cache(maxsize=1)
def clip_tokenizer():
    """A transformers ``CLIPTokenizer`` equal to openai/clip-vit-large-patch14's (ids 49406 = <bos>, 49407 = <eos>)."""
    from transformers import CLIPTokenizer

    encoder, merges = vocabulary()
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt")
        with open(vocab_file, "w", encoding="utf-8") as f:
            json.dump(encoder, f, ensure_ascii=False)
        with open(merges_file, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer(vocab_file, merges_file)  # no length limit: long prompts become chunks
