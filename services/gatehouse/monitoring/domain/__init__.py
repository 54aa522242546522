"""The monitoring domain: buildings, devices and their state, alerts and their rules, readings.

Pure Python: no I/O, no protobuf, no SQL. Enumerations carry the contract's numbers so the
mapping layer converts by value, but nothing here imports generated code.
"""
