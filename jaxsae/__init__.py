"""jaxsae: sparse-autoencoder sweeps, interpretability and steering utility, in JAX.

Subpackages, one concept each:
  models    Flax/JAX ports of Gemma-2, Qwen-2.5 and Llama with a functional, editable core.
  sae       Pure-functional SAE architectures, SAELens-format export and load, core metrics.
  train     The sweep trainer (every SAE of a sweep in one jitted, vmapped, sharded step) and
            the activation pipeline.
  judge     AxBench-style judges (local model or OpenAI-compatible API).
  analysis  Rank agreement (Kendall tau_b, Psi) with permutation p-values and bootstrap CIs.
"""

__version__ = "0.1.0"
