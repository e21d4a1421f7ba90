"""Steering: edits that add feature directions to the residual stream, concept and instruction
sources, and the AxBench steering-utility protocol g(θ).

    from jaxsae.steer import SteerSettings, run_utility, from_autointerp, instructions
    g = run_utility(lm, judge, sae, layer, from_autointerp(sae_dir / "autointerp.json"), m_f,
                    instructions(), SteerSettings(), sae_dir / "steering")["g"]
"""

from jaxsae.steer.concepts import (CONCEPT100, Concept, draw_instructions, from_autointerp, from_file, from_jsonl,
                                   from_parquet, from_source, instructions)
from jaxsae.steer.edits import feature_edit, row_edit, steering_edit, unit_directions
from jaxsae.steer.utility import (DEAD_M_F, DEFAULT_BATCH, DEFAULT_FACTORS, SteerJob, SteerSettings, choose_factor,
                                  model_description, row_seed, run_utility, run_utility_many, steer_concept,
                                  steering_scales)

__all__ = [
    "CONCEPT100", "Concept", "DEAD_M_F", "DEFAULT_FACTORS", "SteerSettings", "choose_factor", "draw_instructions", "feature_edit",
    "from_autointerp", "from_file", "from_jsonl", "from_parquet", "from_source", "instructions", "model_description",
    "row_edit", "row_seed", "run_utility", "run_utility_many", "steer_concept", "SteerJob", "DEFAULT_BATCH",
    "steering_edit", "steering_scales", "unit_directions",
]
