"""`quantcore up`: the whole pipeline as local processes on one machine.

See "One-machine mode" in docs/architecture.md.
"""
