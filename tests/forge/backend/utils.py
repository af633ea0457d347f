"""Mirrors backend/utils.py ``get_attr`` / ``set_attr_raw`` (dotted attribute paths)."""


def set_attr_raw(obj, attr, value):
    *parents, last = attr.split(".")
    for name in parents:
        obj = getattr(obj, name)
    setattr(obj, last, value)


def get_attr(obj, attr):
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj
