"""The AUTOMATIC1111 WebUI adapter: the only part of T-SAM that imports the WebUI's ``modules``.

``job`` holds what T-SAM does during one generation, ``text`` turns the WebUI's prompts into
text targets, ``sampling`` steers each sampling pass; ``ui``, ``xyz`` and ``options`` are what
the user sees. ``scripts/tsam.py`` is the thin Script that calls them.
"""
