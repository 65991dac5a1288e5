"""Demos behind ``latentar demo ...``: small end-to-end runs that train with ``latentar.train`` and
print a result (they sit above the library layers, so no library module imports them).

* :mod:`latentar.demos.huszar` (``latentar demo huszar``): why scheduled sampling's objective is
  improper, on a length-2 toy.
"""
