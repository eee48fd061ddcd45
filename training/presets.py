"""Hyperparameters the GRU4Rec authors tuned per dataset (GRU4REC.md), as TrainParams field values.

``default`` is what training uses without a preset: the rsc15 settings (cross-entropy with logQ
correction, 100 units, batch 32, 2048 extra negatives), a sound start for a click stream of a few
thousand items. The named presets all use the tied embedding, 2048 extra negatives and 10 epochs.
"""

from __future__ import annotations

_COMMON = {"constrained_embedding": True, "embedding": 0, "n_sample": 2048, "epochs": 10}

_RSC15 = {**_COMMON, "loss": "cross-entropy", "elu_param": 0.0, "layers": (100,), "batch_size": 32,
          "dropout_embed": 0.0, "dropout_hidden": 0.4, "learning_rate": 0.2, "momentum": 0.2, "sample_alpha": 0.5,
          "bpreg": 0.0, "logq": 1.0}

PRESETS: dict[str, dict] = {
    # bpreg only matters to bpr-max: the default keeps the value that suits it if --loss bpr-max is given.
    "default": {**_RSC15, "bpreg": 1.0, "optimizer": "adagrad", "seed": 1},
    "rsc15": _RSC15,
    "yoochoose": {**_COMMON, "loss": "cross-entropy", "elu_param": 0.0, "layers": (480,), "batch_size": 48,
                  "dropout_embed": 0.0, "dropout_hidden": 0.2, "learning_rate": 0.07, "momentum": 0.0,
                  "sample_alpha": 0.2, "bpreg": 0.0, "logq": 1.0},
    "rees46": {**_COMMON, "loss": "cross-entropy", "elu_param": 0.0, "layers": (512,), "batch_size": 240,
               "dropout_embed": 0.45, "dropout_hidden": 0.0, "learning_rate": 0.065, "momentum": 0.0,
               "sample_alpha": 0.5, "bpreg": 0.0, "logq": 1.0},
    "coveo": {**_COMMON, "loss": "bpr-max", "elu_param": 1.0, "layers": (512,), "batch_size": 144,
              "dropout_embed": 0.35, "dropout_hidden": 0.0, "learning_rate": 0.05, "momentum": 0.4,
              "sample_alpha": 0.2, "bpreg": 1.85, "logq": 0.0},
    "retailrocket": {**_COMMON, "loss": "bpr-max", "elu_param": 0.5, "layers": (224,), "batch_size": 80,
                     "dropout_embed": 0.5, "dropout_hidden": 0.05, "learning_rate": 0.05, "momentum": 0.4,
                     "sample_alpha": 0.4, "bpreg": 1.95, "logq": 0.0},
    "diginetica": {**_COMMON, "loss": "bpr-max", "elu_param": 1.0, "layers": (512,), "batch_size": 128,
                   "dropout_embed": 0.5, "dropout_hidden": 0.3, "learning_rate": 0.05, "momentum": 0.15,
                   "sample_alpha": 0.3, "bpreg": 0.9, "logq": 0.0},
}
