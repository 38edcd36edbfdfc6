"""PriDSS's latent backend: StyleGAN2 (rosinality checkpoints) + StyleFusion FusionNets (official weights).

Modules: :mod:`.stylegan2` (generator and style space), :mod:`.fusion_net`
(FusionNets, FFHQ hierarchy, PriDSS's segment sources), :mod:`.backend` (the
backend the PriDSS plugin calls), :mod:`.source` (the ``stylegan2`` data set
source and synthesizer), :mod:`.e4e` (inversion of real faces), :mod:`.assets`.
"""
