"""Pictures of what T-SAM sees, host-free (PIL and numpy): T and S as labelled heatmaps, where
each token landed (its cross-attention map over the image), and the loss per guided step.

Matrices are [n, n] with token i at index i-1 (``<bos>`` dropped); maps are [gh, gw, S] over the
77-token chunk positions (0 = ``<bos>``).
"""

import functools
import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

# viridis at 9 evenly spaced points; interpolated in between
_VIRIDIS = np.array([[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                     [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]], dtype=np.float32)
BACKGROUND, INK, MUTED = (255, 255, 255), (20, 20, 20), (120, 120, 120)


def colormap(values: np.ndarray) -> np.ndarray:
    """uint8 RGB [..., 3] for values in [0, 1]."""
    x = np.clip(values, 0, 1) * (len(_VIRIDIS) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_VIRIDIS) - 2)
    t = (x - lo)[..., None]
    return (_VIRIDIS[lo] * (1 - t) + _VIRIDIS[lo + 1] * t).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _font():
    """DejaVu Sans from matplotlib's data (shipped with the WebUI; not imported), else PIL's bitmap font."""
    spec = importlib.util.find_spec("matplotlib")
    if spec and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.exists(path):
            return ImageFont.truetype(path, 13)
    return ImageFont.load_default()


def _text_size(text: str) -> tuple[int, int]:
    box = _font().getbbox(text)
    return box[2] - box[0], box[3] - box[1]


def token_labels(tokenizer, ids) -> tuple[str, ...]:
    """Readable labels of CLIP BPE token ids ("car</w>" -> "car")."""
    return tuple(token.replace("</w>", "") or "·" for token in tokenizer.convert_ids_to_tokens(list(ids)))


def heatmap(matrix, labels: list[str], title: str, lower_only: bool = True) -> Image.Image:
    """A labelled heatmap of an [n, n] matrix (row i: what token i binds to), each row scaled to
    its own maximum: T's first row is always 1 and would otherwise darken the rest."""
    m = torch.as_tensor(matrix, dtype=torch.float32).cpu().numpy()
    n = m.shape[0]
    cell = 40 if n <= 12 else 24 if n <= 30 else 14
    label_w = max([_text_size(s)[0] for s in labels] + [10]) + 6
    top = 24 + label_w
    img = Image.new("RGB", (max(label_w + n * cell + 8, _text_size(title)[0] + 8), top + n * cell + 8), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((4, 2), title, fill=INK, font=_font())
    if n:
        shown = np.tril(m) if lower_only else m
        rgb = colormap(shown / np.maximum(shown.max(axis=1, keepdims=True), 1e-12))
        if lower_only:
            rgb[np.triu(np.ones((n, n), dtype=bool), 1)] = BACKGROUND
        block = Image.fromarray(rgb).resize((n * cell, n * cell), Image.NEAREST)
        img.paste(block, (label_w, top))
    for i, label in enumerate(labels):
        w, h = _text_size(label)
        upper = _font().getbbox(label)[1]
        draw.text((label_w - w - 4, top + i * cell + (cell - h) // 2 - upper), label, fill=INK, font=_font())
        left, upper, _, _ = _font().getbbox(label)
        column = Image.new("RGB", (w + 4, h + 6), BACKGROUND)
        ImageDraw.Draw(column).text((2 - left, 3 - upper), label, fill=INK, font=_font())
        column = column.rotate(90, expand=True)
        img.paste(column, (label_w + i * cell + (cell - column.width) // 2, top - column.height - 2))
    return img


def token_maps(image: Image.Image, maps, positions: list[int], labels: list[str], title: str,
               size: int = 128) -> Image.Image:
    """Each token's cross-attention map over the image, normalised per token, in a row of tiles."""
    base = image.convert("RGB").resize((size, size), Image.BICUBIC)
    m = torch.as_tensor(maps, dtype=torch.float32).cpu()
    tiles = []
    for pos in positions:
        up = F.interpolate(m[..., pos][None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
        up = (up - up.min()) / (up.max() - up.min()).clamp_min(1e-12)
        tiles.append(Image.blend(base, Image.fromarray(colormap(up.numpy())), 0.55))
    cols = max(1, min(len(tiles), 8))
    rows = (len(tiles) + cols - 1) // cols
    img = Image.new("RGB", (cols * (size + 6) + 6, 22 + rows * (size + 22)), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((4, 2), title, fill=INK, font=_font())
    for k, (tile, label) in enumerate(zip(tiles, labels)):
        x, y = 6 + (k % cols) * (size + 6), 22 + (k // cols) * (size + 22)
        img.paste(tile, (x, y))
        draw.text((x + 2, y + size + 3), label, fill=INK, font=_font())
    return img


def loss_plot(losses: list[tuple[int, float, float]], title: str = "T-SAM loss per guided step",
              size: tuple[int, int] = (360, 170)) -> Image.Image:
    """Loss at the start (dot) and, when refined, at the end (line down to a tick) of each guided step."""
    w, h = size
    img = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((4, 2), title, fill=INK, font=_font())
    if not losses:
        draw.text((4, h // 2), "no guided step", fill=MUTED, font=_font())
        return img
    values = [v for _, a, b in losses for v in (a, b)]
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1e-6
    left, right, top, bottom = 46, w - 10, 20, h - 22
    draw.rectangle((left, top, right, bottom), outline=MUTED)
    draw.text((4, top), f"{hi:.3f}", fill=MUTED, font=_font())
    draw.text((4, bottom - 10), f"{lo:.3f}", fill=MUTED, font=_font())
    steps = [s for s, _, _ in losses]
    span = max(max(steps) - min(steps), 1)
    px = lambda s: left + 6 + (right - left - 12) * (s - min(steps)) / span
    py = lambda v: bottom - 4 - (bottom - top - 8) * (v - lo) / (hi - lo)
    draw.line([(px(s), py(a)) for s, a, _ in losses], fill=tuple(_VIRIDIS[2].astype(int)), width=2)
    for s, a, b in losses:
        if b != a:
            draw.line([(px(s), py(a)), (px(s), py(b))], fill=tuple(_VIRIDIS[6].astype(int)), width=2)
            draw.line([(px(s) - 3, py(b)), (px(s) + 3, py(b))], fill=tuple(_VIRIDIS[6].astype(int)), width=2)
        draw.ellipse((px(s) - 3, py(a) - 3, px(s) + 3, py(a) + 3), fill=tuple(_VIRIDIS[2].astype(int)))
    draw.text((left, bottom + 5), f"step {min(steps) + 1}", fill=MUTED, font=_font())
    last = f"step {max(steps) + 1}"
    draw.text((right - _text_size(last)[0], bottom + 5), last, fill=MUTED, font=_font())
    return img


def stack(images: list[Image.Image], horizontal: bool = False, gap: int = 8) -> Image.Image:
    """Images side by side (or one under another), top/left aligned on white."""
    images = [i for i in images if i is not None]
    if horizontal:
        size = (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images))
    else:
        size = (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1))
    out = Image.new("RGB", size, BACKGROUND)
    offset = 0
    for i in images:
        out.paste(i, (offset, 0) if horizontal else (0, offset))
        offset += (i.width if horizontal else i.height) + gap
    return out


def captioned(image: Image.Image, caption: str) -> Image.Image:
    out = Image.new("RGB", (max(image.width, _text_size(caption)[0] + 8), image.height + 20), BACKGROUND)
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((4, image.height + 3), caption, fill=INK, font=_font())
    return out


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3, H, W] in 0..1 -> PIL."""
    return Image.fromarray((image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy())


def figure(image: Image.Image, t, labels: list[str], first_maps, last_maps, losses, smooth: bool = True,
           last_step: int | None = None) -> Image.Image:
    """What T-SAM saw for one image and its first chunk: T beside S (from the last guided step's
    maps), each token's map at the first and the last guided step over the image, the loss trace.
    ``first_maps`` / ``last_maps`` are [gh, gw, S] (or None); ``losses`` [(step, first, last)]."""
    from .cross_maps import row_normalize, token_cosine

    n = len(labels)
    positions = list(range(1, n + 1))
    top = [heatmap(t, labels, "T: what each token binds to (text encoder)")]
    if last_maps is not None:
        s = row_normalize(token_cosine(torch.as_tensor(last_maps, dtype=torch.float32), n, smooth=smooth))
        when = f" at step {last_step + 1}" if last_step is not None else ""
        top.append(heatmap(s, labels, f"S: cross-attention similarity{when} (UNet)"))
    rows = [stack(top, horizontal=True)]
    if first_maps is not None:
        rows.append(token_maps(image, first_maps, positions, labels, "Where each token attends: first guided step"))
    if last_maps is not None:
        rows.append(token_maps(image, last_maps, positions, labels, "... and last guided step"))
    rows.append(loss_plot(losses))
    return stack(rows)


def image_figure(picture: Image.Image, trace, image: int, smooth: bool = True) -> Image.Image | None:
    """``figure`` for one image of a guided pass, from its ``GuidedPass.trace`` (StepTraces; maps
    kept at the first and the last guided step): its first row with guided chunks, first chunk."""
    steps = [t for t in trace if image in t.losses]
    if not steps:
        return None
    rows = [r for r, row in enumerate(steps[0].rows) if row.image == image and row.chunks and row.chunks[0].n >= 2]
    if not rows:
        return None
    row = rows[0]
    chunk = steps[0].rows[row].chunks[0]
    first = steps[0].maps[row][..., chunk.window] if row in steps[0].maps else None
    last = steps[-1].maps[row][..., chunk.window] if len(steps) > 1 and row in steps[-1].maps else None
    losses = [(t.step, t.losses[image][0], t.losses[image][-1]) for t in steps]
    return figure(picture, chunk.t, list(chunk.labels), first, last, losses, smooth, steps[-1].step)
