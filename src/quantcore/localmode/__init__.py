"""`quantcore up`: the whole pipeline as local processes on one machine (see DESIGN.md)."""
