"""Mirrors Forge's modules/devices.py: for a CPU fp32 run the globals and helpers the adapter and stand-ins call are A1111's: the A1111 stand-in's file."""

from reuse import a1111

a1111("modules/devices.py", globals())
