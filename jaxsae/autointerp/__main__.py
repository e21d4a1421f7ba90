"""`python -m jaxsae.autointerp --sweep NAME [--out DIR] [overrides]`: the study's AutoInterp stage alone.

The same as ``python -m jaxsae.launch --stages autointerp ...`` (one implementation: the
launcher's stage): for every SAE the train stage wrote in the run folder, the held-out statistics
(``feature_stats/``: m_f, top / importance-weighted / random windows) and SAEBench AutoInterp
(``autointerp.json``: µ over CONCEPT100, mean ± SE over every scored latent, and per latent its
explanation, windows, predictions and score), judged as ``[judge]`` says, e.g.

    python -m jaxsae.autointerp --sweep demo --autointerp.n-latents 50 --judge.kind api --judge.model gpt-4o-mini
"""

from __future__ import annotations

from jaxsae.errors import cli_errors
from jaxsae.launch.__main__ import run_stage

if __name__ == "__main__":
    with cli_errors():
        run_stage("autointerp", "python -m jaxsae.autointerp", __doc__)
