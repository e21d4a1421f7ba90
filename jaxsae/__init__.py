"""jaxsae: sparse-autoencoder sweeps, interpretability and steering utility, in JAX.

Modules, one concept each, by layer (each imports only from layers below it; tests/test_layers.py):
  launch      the study: configuration tree, stages, run folder (manifests, lock, status)
  report      report.md, report/features.html, plots, the headline table
  autointerp  SAEBench AutoInterp (explainer and detector, local or API); the detector's validity
  steer       AxBench concept steering (edits, concepts, the batched dev/test protocol)
  judge       the AxBench rating judge (local model or OpenAI-compatible API) and its validity
  metrics     core metrics (L0, FVU, CE-loss and KL scores) through the LLM
  features    the per-latent statistics pass over held-out text
  select      Delta Token Confidence and the output score; selection tiers
  train       the sweep trainer (every SAE in one jitted, vmapped, sharded step), activations
  analysis    rank agreement (Kendall tau_b, psi, Psi), permutation p-values, bootstrap CIs
  models      Flax/JAX ports of Gemma-2, Qwen-2.5 and Llama with a functional, editable core
  sae         pure-functional SAE architectures, SAELens-format export and load
  distributed, text, templates, chat   processes, corpora, prompt files, the chat client
  io, errors  atomic writes and hashes; the one-line UserError
"""

__version__ = "0.1.0"
