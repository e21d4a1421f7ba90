"""Steering: edits that add feature directions to the residual stream, concept and instruction
sources, and the AxBench steering-utility protocol g(θ).

    from jaxsae.steer import SteerSettings, run_utility, from_autointerp, instructions
    g = run_utility(lm, judge, sae, layer, from_autointerp(sae_dir / "autointerp.json"), m_f,
                    instructions(), SteerSettings(), sae_dir / "steering")["g"]
"""

from jaxsae.steer.concepts import Concept, draw_instructions, from_autointerp, from_jsonl, instructions
from jaxsae.steer.edits import feature_edit, steering_edit, unit_directions
from jaxsae.steer.utility import DEFAULT_FACTORS, SteerSettings, choose_factor, run_utility, steer_concept

__all__ = [
    "Concept", "DEFAULT_FACTORS", "SteerSettings", "choose_factor", "draw_instructions", "feature_edit", "from_autointerp",
    "from_jsonl", "instructions", "run_utility", "steer_concept", "steering_edit", "unit_directions",
]
