"""PriDSS's pixel backend: real pool faces fused by landmark warps and Poisson blending (CPU-friendly).

Modules: :mod:`.geometry` (dlib landmarks, region masks), :mod:`.warping` (alignment, triangle
warps, face shape), :mod:`.pool_filters` (which pool faces may be candidates), :mod:`.blending`
(colour matching, Poisson blending), :mod:`.fusion` (their composition) and :mod:`.backend` (the
backend the PriDSS plugin calls).
"""
