"""Mirrors Forge's modules/scripts.py: A1111 1.10.1's ``Script`` / ``ScriptRunner``; the
``process_before_every_sampling`` that wins (the second definition, :888) loops the always-on
scripts and reports their errors, as the A1111 stand-in's runner does. The A1111 stand-in's file."""

from reuse import a1111

a1111("modules/scripts.py", globals())
