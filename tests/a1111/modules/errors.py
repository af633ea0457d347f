"""Mirrors modules/errors.py: ``report`` prints the error and the WebUI carries on."""

import traceback

reported: list[str] = []


def report(message: str, *, exc_info: bool = False) -> None:
    reported.append(message)
    print("***", message)
    if exc_info:
        traceback.print_exc()
