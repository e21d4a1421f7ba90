"""Sparse autoencoders as pure functions over parameter pytrees, SAELens-v6 export/load (the
core metrics, which run the LLM, are :mod:`jaxsae.metrics`).

Training architectures (``ARCHS``): relu (Anthropic April update), topk, batchtopk, jumprelu,
gated, matryoshka (Matryoshka BatchTopK). Trained SAEs are exported in SAELens layout as
standard / topk / jumprelu / gated (BatchTopK and Matryoshka as jumprelu)::

    import jaxsae.sae as S
    sae = S.load("runs/sweep/topk-k80")
    f = sae.encode(x_nd)            # f32[N, F], batched and jitted
    x_hat = sae.decode(f)
    enc = S.encode_fn(sae)          # pure (params, x) -> f for other jitted code
"""

from jaxsae.sae import gated, jumprelu, relu, topk
from jaxsae.sae.arch import PAPER_L0, PAPER_L1, Arch, ArchConfig, init_aux
from jaxsae.sae.saelens import SAE, decode_fn, encode_fn, load, make_cfg, save

ARCHS: dict[str, Arch] = {
    "relu": relu.ARCH,
    "topk": topk.TOPK,
    "batchtopk": topk.BATCHTOPK,
    "jumprelu": jumprelu.ARCH,
    "gated": gated.ARCH,
    "matryoshka": topk.MATRYOSHKA,
}

__all__ = [
    "ARCHS", "Arch", "ArchConfig", "PAPER_L0", "PAPER_L1", "SAE", "decode_fn", "encode_fn",
    "init_aux", "load", "make_cfg", "save",
]
