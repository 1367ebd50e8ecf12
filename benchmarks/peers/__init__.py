"""Baselines from other libraries, wrapped behind one small fit / transport API for side-by-side benchmarks.

* :mod:`benchmarks.peers.torchcfm_peer` — OT-CFM, I-CFM and SF2M from TorchCFM
  (``pip install --no-deps torchcfm``; it needs only torch, numpy, scipy and POT at run time).

The peers import nothing from ``probflux``: they take and return plain torch tensors.
"""
