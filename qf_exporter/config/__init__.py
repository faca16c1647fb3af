"""The configuration file: what it may hold, and reading it.

Each key is declared once, on the field that holds it (``fields``: converters, bounds,
known keys, did-you-mean); ``file`` reads a file into accounts and poll settings with
every problem at once; ``patterns`` compiles discovery's filters in RE2.
May import qf_exporter.util only.
"""
