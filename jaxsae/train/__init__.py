"""The sweep trainer and the activation pipeline.

    from jaxsae.train import ActivationArray, TrainSettings, sweep_from_l0, train_sweep
    specs = sweep_from_l0(["relu", "topk", "batchtopk", "jumprelu", "gated"], [80, 160])
    train_sweep(specs, ActivationArray(acts_nd, batch=2048), TrainSettings(d_sae=4608, steps=1000), "runs/sweep")

Activations on disk: one float32 .npy or a folder of .npy shards (``harvest(..., shard_tokens=N)``,
``save_shards``), both read by ``load_activations`` (memory-mapped) with a record of their source.
"""

from jaxsae.train.data import ActivationArray, harvest, load_activations, texts_from
from jaxsae.train.run import make_mesh, train_sweep
from jaxsae.train.shards import ShardedActivations, read_record, save_shards
from jaxsae.train.spec import SAESpec, TrainSettings, paper_sparsity, sweep_from_l0, sweep_from_levels

__all__ = [
    "ActivationArray", "SAESpec", "ShardedActivations", "TrainSettings", "harvest", "load_activations", "make_mesh",
    "paper_sparsity", "read_record", "save_shards", "sweep_from_l0", "sweep_from_levels", "texts_from", "train_sweep",
]
