"""Other extensions' state that a guidance pass changes for its own call and must put back."""

from contextlib import contextmanager

ABSENT = object()


@contextmanager
def restored(pairs):
    """Every ``(object, attribute)`` of ``pairs`` as it was before the scope (absent stays absent)."""
    saved = [(obj, name, getattr(obj, name, ABSENT)) for obj, name in pairs]
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            if value is not ABSENT:
                setattr(obj, name, value)
            elif hasattr(obj, name):
                delattr(obj, name)
