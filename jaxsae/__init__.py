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

Shapes: one letter per kind of array axis, one meaning per letter, in every package. Docstrings and
comments annotate arrays as ``f32[B, T, D]``, ``i32[F, A]``, ``bool[B, S]``; names carry the same
letters in lowercase as a suffix (``x_btd``, ``q_ldqh``, ``gate_ldm``, ``k_lbksh``, ``valid_bs``),
and einsum strings use them too. Counts spelled as words (``n_boot``, ``d_sae``, ``k'``,
``max_new``) and digits are not letters of the table. tests/test_shapes.py checks every annotation
against this table (the one place the alphabet is written):

  B  batch rows
  T  token positions
  D  residual width (d_model, the SAE's d_in)
  V  vocabulary
  L  decoder layers
  Q  query heads
  K  key/value heads
  G  query heads per key/value head (Q = G * K)
  H  head dim
  S  key/value (cache) slots
  P  prefix tokens
  M  MLP hidden width (d_ff)
  E  SAEs stacked in one sweep group (the sweep axis)
  F  SAE latents (d_sae)
  N  items of a set: contexts of a dataset, requests, windows scored, rows of a table
  A  top-activating windows (peaks) per latent
  R  importance-weighted (random) draws per latent
  W  tokens per window
  C  candidate tokens read at one position (the judge's digits, the yes/no tokens)
  U  distinct prompts of a batch whose rows repeat prompts
"""

__version__ = "0.1.0"
