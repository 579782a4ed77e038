"""Numba kernels: small stateless functions over arrays, each beside its NumPy reference.

Every kernel is compiled with ``error_model="numpy"``: a division by zero gives inf or NaN, as in
NumPy, instead of raising inside compiled code (where the exception surfaced as an opaque
``SystemError``). The models check what the kernels return for finiteness and raise
:class:`mfrec.models.base.DivergenceError`, naming the hyperparameters to move.
"""

#: Fast-math flags of the kernels (never mutated): reassociation and contraction let LLVM
#: vectorize the dot products. Left out: ``arcp`` (reciprocals), because together with
#: ``reassoc`` the code a process compiles for itself computed differently from the same kernel
#: loaded from Numba's cache by the next process (ALS fits with a fixed seed differed by about
#: 1e-6 between the two), which breaks "a fixed seed reproduces a fit"; and ``nnan``/``ninf``,
#: which let LLVM assume away the NaN and infinity that the guards must see.
FASTMATH = {"nsz", "reassoc", "contract", "afn"}
