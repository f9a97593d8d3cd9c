"""Analytic references as pure functions (ODE right-hand sides, discrete maps, closed forms).

Each submodule covers one model family (e.g. :mod:`cpl.theory.multipath` for the two-pathway
network); the callbacks in :mod:`cpl.callbacks` only convert steps to time and log. Import the
submodules directly; this package imports none of them.
"""
