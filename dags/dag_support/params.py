"""The Params of the DAGs: the trigger form in the UI and the JSON schema the REST API validates ``conf``
against, so a bad value is refused when the run is triggered, not an hour into it.

Defaults come from the settings, so the form shows the values a run would use anyway. The training form's
hyperparameters are the exception: they start empty, meaning "the chosen preset's value" (the data set's tuned
preset by default), and only the fields a user fills in override the preset. The form never reads the lake
(DAG files are parsed often): its descriptions say where the tuned preset lives and what the default preset
holds (``training/presets.py`` and ``training/tuned.py`` import nothing heavy).
"""

from __future__ import annotations

from airflow.sdk import Param

from sessionrec.config import Settings
from training.presets import PRESETS
from training.tuned import TUNED

# The losses training/losses.py implements (importing it would load torch at parse time; a test keeps the
# two lists equal).
LOSSES = ("cross-entropy", "bpr-max", "top1-max", "bpr", "top1")
# The family choice that selects among Settings.families (lifecycle/pipeline.py AUTO, not imported: it
# loads torch).
AUTO_FAMILY = "auto"
# The loss choice meaning "the preset's loss" (a null choice breaks Airflow 3's select fields).
PRESET_LOSS = "preset"
# Form field -> GRU4Rec parameter (TrainParams field); an empty field keeps the preset's value.
HYPERPARAMETER_FIELDS = {"epochs": "epochs", "loss": "loss", "hidden_size": "layers", "batch_size": "batch_size",
                         "learning_rate": "learning_rate", "n_sample": "n_sample"}
# A registry alias (champion, challenger, ...) or a version number.
MODEL_REFERENCE_PATTERN = r"^([1-9][0-9]*|[A-Za-z][A-Za-z0-9_-]*)$"

DATA = "Data"
TRAINING = "Training"
PROMOTION = "Promotion"
SCORING = "Scoring"
HEALTH = "Health checks"


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
    """Params of ``gru4rec_train``: the data window, the preset and the hyperparameters people tune over it,
    the gate override."""
    default = PRESETS["default"]
    tuned_file = settings.layout.tuned_params("<family>")

    def from_preset(description: str, value: object) -> str:
        return f"{description} Empty: the preset's value (the default preset's is {value}).".lstrip()

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
        "preset": Param(
            TUNED, type="string", enum=[TUNED, *PRESETS], title="Hyperparameter preset",
            description=f"{TUNED}: each family's tuned preset, the best settings the last hyperparameter search "
                        f"(gru4rec_tune) found on this data set, stored in the lake at {tuned_file}; a family "
                        "without one starts from its defaults (GRU4Rec: the default preset). Or one of "
                        "GRU4Rec's published presets (training/presets.py; other families keep their tuned "
                        "preset). The run logs the values it used, and the tuned preset's study and trial, as "
                        "MLflow params.", section=TRAINING),
        "epochs": Param(
            None, type=["null", "integer"], minimum=1, maximum=1000, title="Epochs",
            description=from_preset("", default["epochs"]), section=TRAINING),
        "loss": Param(
            PRESET_LOSS, type="string", enum=[*LOSSES, PRESET_LOSS], title="Loss",
            description=f"cross-entropy (with logQ correction) or the ranking losses of GRU4Rec. {PRESET_LOSS}: the "
                        f"preset's loss (the default preset's is {default['loss']}).", section=TRAINING),
        "hidden_size": Param(
            None, type=["null", "integer"], minimum=1, maximum=4096, title="Hidden size",
            description=from_preset("Units of the GRU layer.", default["layers"][0]), section=TRAINING),
        "batch_size": Param(
            None, type=["null", "integer"], minimum=1, maximum=8192, title="Batch size",
            description=from_preset("Sessions processed in parallel (session-parallel mini-batches).",
                                    default["batch_size"]), section=TRAINING),
        "learning_rate": Param(
            None, type=["null", "number"], exclusiveMinimum=0, maximum=10, title="Learning rate",
            description=from_preset("", default["learning_rate"]), section=TRAINING),
        "n_sample": Param(
            None, type=["null", "integer"], minimum=0, maximum=100_000, title="Extra negatives",
            description=from_preset("Negatives sampled per mini-batch in proportion to popularity^alpha, on "
                                    "top of the other targets of the mini-batch (0: mini-batch negatives only).",
                                    default["n_sample"]), section=TRAINING),
        "force_promote": Param(
            False, type="boolean", title="Force promotion",
            description="Move the champion alias to the new version even if the gate would refuse it "
                        "(the reason is still recorded).", section=PROMOTION),
    }


def training_preset(params: dict) -> str:
    """The run's preset choice: ``tuned`` or the name of a GRU4Rec preset."""
    return params.get("preset") or TUNED


def training_overrides(params: dict) -> dict[str, dict[str, object]]:
    """The hyperparameter fields the run's user filled in, as GRU4Rec parameter overrides by family: a field
    left empty (or the loss left at "preset") keeps the chosen preset's value."""
    overrides: dict[str, object] = {}
    for field, name in HYPERPARAMETER_FIELDS.items():
        value = params.get(field)
        if value is None or (field == "loss" and value == PRESET_LOSS):
            continue
        if field == "hidden_size":
            value = [value]
        elif field == "learning_rate":
            value = float(value)
        overrides[name] = value
    return {"gru4rec": overrides}


def scoring_params(settings: Settings) -> dict[str, Param]:
    """Params of ``gru4rec_score``: the day, how many recommendations, which model, the health limits."""
    return {
        "ds": day_param(),
        "top_k": Param(
            settings.top_k, type="integer", minimum=1, maximum=1000, title="Recommendations per session",
            section=SCORING),
        "model": Param(
            "champion", type="string", pattern=MODEL_REFERENCE_PATTERN, title="Model version or alias",
            description=f"A version number or an alias of the registered model {settings.model_name!r} "
                        "(champion by default).", section=SCORING),
        "max_fallback_share": Param(
            settings.max_fallback_share, type="number", minimum=0, maximum=1, title="Largest fallback share",
            description="The check fails when a larger share of the day's sessions got the most-popular "
                        "fallback (the model knows none of their items).", section=HEALTH),
        "max_session_drop": Param(
            settings.max_session_drop, type="number", minimum=0, maximum=1, title="Largest drop in sessions",
            description="The check fails when the day has fewer sessions than the mean of the previous "
                        "days' scoring runs by more than this share.", section=HEALTH),
    }
