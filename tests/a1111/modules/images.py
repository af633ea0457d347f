"""Mirrors modules/images.py ``save_image`` (signature); records the calls instead of writing files."""

saved: list[dict] = []


def save_image(image, path, basename, seed=None, prompt=None, extension="png", info=None, short_filename=False,
               no_prompt=False, grid=False, pnginfo_section_name="parameters", p=None, existing_info=None,
               forced_filename=None, suffix="", save_to_dirs=None):
    saved.append(dict(image=image, path=path, seed=seed, prompt=prompt, extension=extension, info=info, suffix=suffix))
    return path, None
