"""The Params of the DAGs: the trigger form in the UI and the JSON schema the REST API validates ``conf``
against, so a bad value is refused when the run is triggered, not an hour into it.

Defaults come from the settings and from the model's default preset (``training/presets.py``, which imports
nothing heavy), so the form shows the values a run would use anyway.
"""

from __future__ import annotations

from airflow.sdk import Param

from sessionrec.config import Settings
from training.presets import PRESETS

# The losses training/losses.py implements (importing it would load torch at parse time; a test keeps the
# two lists equal).
LOSSES = ("cross-entropy", "bpr-max", "top1-max", "bpr", "top1")
# The family choice that selects among Settings.families (lifecycle/pipeline.py AUTO, not imported: it
# loads torch).
AUTO_FAMILY = "auto"
# A registry alias (champion, challenger, ...) or a version number.
MODEL_REFERENCE_PATTERN = r"^([1-9][0-9]*|[A-Za-z][A-Za-z0-9_-]*)$"

DATA = "Data"
TRAINING = "Training"
PROMOTION = "Promotion"
SCORING = "Scoring"


def day_param() -> Param:
    return Param(
        None,
        type=["null", "string"],
        format="date",
        title="Day (UTC)",
        description="The day to process, YYYY-MM-DD. Empty: the day of the asset event that triggered the "
                    "run, else the day before the run's logical date (yesterday for a run started now).",
        section=DATA,
    )


def training_params(settings: Settings) -> dict[str, Param]:
    """Params of ``gru4rec_train``: the data window, the hyperparameters people tune, the gate override."""
    preset = PRESETS["default"]
    return {
        "ds": day_param(),
        "training_days": Param(
            settings.training_days, type="integer", minimum=2, maximum=365, title="Training window (days)",
            description="Days of sessions ending with the day: the day itself is the test split, the "
                        "days before it are the training data.", section=DATA),
        "family": Param(
            AUTO_FAMILY, type="string", enum=[AUTO_FAMILY, *settings.family_names], title="Model family",
            description="auto: fit every family of the settings (SESSIONREC_FAMILIES), keep the one best on the "
                        "validation split and show all on the leaderboard; or fit one family only. The "
                        "hyperparameters below are GRU4Rec's.", section=TRAINING),
        "epochs": Param(
            preset["epochs"], type="integer", minimum=1, maximum=1000, title="Epochs", section=TRAINING),
        "loss": Param(
            preset["loss"], type="string", enum=list(LOSSES), title="Loss",
            description="cross-entropy (with logQ correction) or the ranking losses of GRU4Rec.",
            section=TRAINING),
        "hidden_size": Param(
            preset["layers"][0], type="integer", minimum=1, maximum=4096, title="Hidden size",
            description="Units of the GRU layer.", section=TRAINING),
        "batch_size": Param(
            preset["batch_size"], type="integer", minimum=1, maximum=8192, title="Batch size",
            description="Sessions processed in parallel (session-parallel mini-batches).", section=TRAINING),
        "learning_rate": Param(
            preset["learning_rate"], type="number", exclusiveMinimum=0, maximum=10, title="Learning rate",
            section=TRAINING),
        "n_sample": Param(
            preset["n_sample"], type="integer", minimum=0, maximum=100_000, title="Extra negatives",
            description="Negatives sampled per mini-batch in proportion to popularity^alpha, on top of "
                        "the other targets of the mini-batch (0: mini-batch negatives only).",
            section=TRAINING),
        "force_promote": Param(
            False, type="boolean", title="Force promotion",
            description="Move the champion alias to the new version even if the gate would refuse it "
                        "(the reason is still recorded).", section=PROMOTION),
    }


def training_overrides(params: dict) -> dict[str, dict[str, object]]:
    """The run's Params as parameter overrides by family: GRU4Rec's TrainParams field values."""
    return {"gru4rec": {
        "epochs": params["epochs"],
        "loss": params["loss"],
        "layers": [params["hidden_size"]],
        "batch_size": params["batch_size"],
        "learning_rate": float(params["learning_rate"]),
        "n_sample": params["n_sample"],
    }}


def scoring_params(settings: Settings) -> dict[str, Param]:
    """Params of ``gru4rec_score``: the day, how many recommendations, which model."""
    return {
        "ds": day_param(),
        "top_k": Param(
            settings.top_k, type="integer", minimum=1, maximum=1000, title="Recommendations per session",
            section=SCORING),
        "model": Param(
            "champion", type="string", pattern=MODEL_REFERENCE_PATTERN, title="Model version or alias",
            description=f"A version number or an alias of the registered model {settings.model_name!r} "
                        "(champion by default).", section=SCORING),
    }
