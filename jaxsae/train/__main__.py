"""`python -m jaxsae.train --sweep NAME [--out DIR] [overrides]`: the study's train stage alone.

The same as ``python -m jaxsae.launch --stages train ...`` (one implementation: the launcher's
stage): harvest the layer's residuals from the sweep's text and train every SAE of
``[train]`` (architectures × levels) together, into ``DIR/<model>/sweep/`` (one SAELens folder
per SAE and sweep.json). Re-running the same command resumes; every option of the launcher
applies, e.g.

    python -m jaxsae.train --sweep demo --train.archs topk jumprelu --train.levels 0 2 --train.d-sae 4608
"""

from __future__ import annotations

from jaxsae.errors import cli_errors
from jaxsae.launch.__main__ import run_stage

if __name__ == "__main__":
    with cli_errors():
        run_stage("train", "python -m jaxsae.train", __doc__)
