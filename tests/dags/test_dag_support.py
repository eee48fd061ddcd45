"""The Airflow-free helpers of the DAGs: which day a run processes, the data checks, reading lake JSON."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest
from dag_support.checks import DataCheckError, check_health, check_recommendations, check_session_stats
from dag_support.days import asset_event_days, day_of_run
from dag_support.lake import read_json

RUN_AFTER = datetime(2026, 11, 22, 9, 15, tzinfo=UTC)


# --- the day of a run ---

def test_param_day_wins_over_everything() -> None:
    assert day_of_run("2026-11-01", ["2026-11-20"], datetime(2026, 11, 22, 2, 30, tzinfo=UTC),
                      RUN_AFTER) == date(2026, 11, 1)


def test_asset_triggered_run_takes_the_latest_event_day() -> None:
    assert day_of_run(None, ["2026-11-19", "2026-11-21", "2026-11-20"], None, RUN_AFTER) == date(2026, 11, 21)


def test_cron_run_processes_the_day_before_its_logical_date() -> None:
    nightly = datetime(2026, 11, 22, 2, 30, tzinfo=UTC)
    assert day_of_run(None, [], nightly, RUN_AFTER) == date(2026, 11, 21)


def test_backfill_runs_cover_the_days_before_their_logical_dates() -> None:
    runs = [datetime(2026, 11, day, 2, 30, tzinfo=UTC) for day in (19, 20, 21)]
    assert [day_of_run(None, [], run, run) for run in runs] == [date(2026, 11, 18), date(2026, 11, 19),
                                                                  date(2026, 11, 20)]


def test_run_without_logical_date_processes_yesterday_of_its_run_after() -> None:
    assert day_of_run(None, [], None, RUN_AFTER) == date(2026, 11, 21)


def test_empty_param_counts_as_not_given() -> None:
    assert day_of_run("", [], None, RUN_AFTER) == date(2026, 11, 21)


def test_bad_param_day_is_refused() -> None:
    with pytest.raises(ValueError):
        day_of_run("21.11.2026", [], None, RUN_AFTER)


def test_asset_event_days_reads_ds_from_every_event_that_has_one() -> None:
    def event(extra: dict | None) -> SimpleNamespace:
        return SimpleNamespace(extra=extra)

    events = {"sessions": [event({"ds": "2026-11-20"}), event({}), event(None)],
              "model": [event({"ds": "2026-11-21", "version": 3})]}
    assert sorted(asset_event_days(events)) == ["2026-11-20", "2026-11-21"]
    assert asset_event_days(None) == []
    assert asset_event_days({}) == []


# --- sessionize stats ---

def stats(**changes: object) -> dict:
    base = {"ds": "2026-11-21", "rows_read": 1000, "rows_quarantined": 10, "sessions": 200, "events": 950,
            "quarantined_by_reason": {"missing_item_id": 10}}
    return {**base, **changes}


def test_good_stats_pass_with_the_figures_for_the_asset_event() -> None:
    assert check_session_stats(stats(), 0.05, "stats/ds=2026-11-21.json") == {
        "sessions": 200, "events": 950, "rows_read": 1000, "rows_quarantined": 10}


@pytest.mark.parametrize(("changes", "message"), [
    ({"rows_read": 0, "rows_quarantined": 0}, "no rows"),
    ({"rows_quarantined": 60}, "60 of 1000 rows (6.00%) quarantined, more than the allowed 5.00%"),
    ({"sessions": 0, "events": 0}, "no sessions written"),
    ({"sessions": None}, "expected a non-negative integer 'sessions', got None"),
    ({"events": -1}, "expected a non-negative integer 'events', got -1"),
])
def test_bad_stats_fail_naming_the_file_and_the_problem(changes: dict, message: str) -> None:
    with pytest.raises(DataCheckError, match="stats/ds=2026-11-21.json") as raised:
        check_session_stats(stats(**changes), 0.05, "stats/ds=2026-11-21.json")
    assert message in str(raised.value)


# --- the warehouse partition ---

def partition(sessions: int, k: int) -> pa.Table:
    rows = [{"session_id": f"s{s}", "rank": r, "item_id": f"i{r}", "score": 1.0 / r}
            for s in range(sessions) for r in range(1, k + 1)]
    return pa.Table.from_pylist(rows)


def record(sessions: int, k: int) -> dict:
    return {"sessions": sessions, "expected_rows": sessions * k}


def test_complete_partition_passes() -> None:
    assert check_recommendations(partition(3, 4), record(3, 4), "wh") == {"rows": 12, "sessions": 3, "k": 4}


def test_missing_rows_fail() -> None:
    table = partition(3, 4).slice(0, 11)
    with pytest.raises(DataCheckError, match="11 rows in the warehouse partition, expected 12"):
        check_recommendations(table, record(3, 4), "wh")


def test_a_session_with_a_duplicate_rank_fails() -> None:
    rows = partition(3, 4).to_pylist()
    rows[1]["rank"] = 1
    with pytest.raises(DataCheckError, match="1 sessions do not have ranks 1..4 .* first: session 's0'"):
        check_recommendations(pa.Table.from_pylist(rows), record(3, 4), "wh")


def test_a_session_recommending_an_item_twice_fails() -> None:
    rows = partition(2, 3).to_pylist()
    rows[2]["item_id"] = rows[0]["item_id"]
    with pytest.raises(DataCheckError, match="2 distinct items"):
        check_recommendations(pa.Table.from_pylist(rows), record(2, 3), "wh")


def test_sessions_other_than_the_recorded_ones_fail() -> None:
    # The recorded row count, but spread over four sessions where the scoring run recorded three.
    rows = partition(3, 3).to_pylist()
    rows[-1]["session_id"] = "s-unexpected"
    with pytest.raises(DataCheckError, match="4 sessions in the warehouse partition, the scoring run "
                                             "recorded 3"):
        check_recommendations(pa.Table.from_pylist(rows), record(3, 3), "wh")


def test_null_scores_fail() -> None:
    rows = partition(2, 2).to_pylist()
    rows[0]["score"] = None
    with pytest.raises(DataCheckError, match="column 'score' has 1 null values"):
        check_recommendations(pa.Table.from_pylist(rows), record(2, 2), "wh")


def test_a_run_record_without_sessions_fails() -> None:
    with pytest.raises(DataCheckError, match="recorded no sessions"):
        check_recommendations(partition(0, 0), {"sessions": 0, "expected_rows": 0}, "wh")


# --- the health of what the partition serves ---

def served(fallbacks: int, sessions: int = 4, k: int = 2) -> pa.Table:
    """``sessions`` sessions, the first ``fallbacks`` of them served the fallback."""
    return pa.Table.from_pylist([{"session_id": f"s{s}", "item_id": f"i{s + r}", "fallback": s < fallbacks}
                                 for s in range(sessions) for r in range(k)])


def health_record(change: float | None = 0.1, mean: float | None = 4.0) -> dict:
    return {"vocabulary_size": 10, "unknown_event_share": 0.05, "session_count_change": change,
            "previous_sessions_mean": mean, "previous_sessions": {"2026-11-20": 4}}


def test_a_healthy_partition_reports_its_figures() -> None:
    assert check_health(served(0), health_record(), 0.2, 0.5, "wh") == {
        "fallback_share": 0.0, "fallback_sessions": 0, "unknown_event_share": 0.05, "catalogue_coverage": 0.5,
        "session_count_change": 0.1, "previous_sessions_mean": 4.0}
    assert check_health(served(1), health_record(None, None), 0.25, 0.5, "wh")["fallback_share"] == 0.25


def test_too_many_fallback_sessions_fail_naming_the_figure_value_and_limit() -> None:
    with pytest.raises(DataCheckError, match=r"wh: fallback_share 0\.750 is above the limit 0\.200 "
                                             r"\(max_fallback_share\): 3 of 4 sessions"):
        check_health(served(3), health_record(), 0.2, 0.5, "wh")


def test_a_collapse_of_the_session_count_fails_and_every_failing_figure_is_named() -> None:
    with pytest.raises(DataCheckError, match=r"session_count_change -0\.600 is a drop of more than 0\.500 "
                                             r"\(max_session_drop\): 4 sessions against a mean of 10\.0"):
        check_health(served(0), health_record(-0.6, 10.0), 0.2, 0.5, "wh")
    with pytest.raises(DataCheckError, match="fallback_share 1.000 .*; session_count_change -0.600"):
        check_health(served(4), health_record(-0.6, 10.0), 0.2, 0.5, "wh")
    check_health(served(0), health_record(-0.5, 8.0), 0.2, 0.5, "wh")  # the limit itself passes


# --- reading the jobs' JSON from the lake ---

def test_read_json_from_a_path_and_a_file_uri(tmp_path: Path) -> None:
    path = tmp_path / "stats" / "ds=2026-11-21.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"sessions": 3}))
    assert read_json(str(path)) == {"sessions": 3}
    assert read_json(path.as_uri()) == {"sessions": 3}


def test_read_json_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "stats" / "ds=2026-11-21.json"
    with pytest.raises(FileNotFoundError, match="ds=2026-11-21.json: expected a JSON file written by the job"):
        read_json(str(missing))


# --- the training form over the preset ---

def test_empty_hyperparameter_fields_keep_the_preset() -> None:
    """A run that leaves the fields (a scheduled run gets the defaults) overrides nothing: the tuned preset
    stays whole. Only the fields a user fills in apply over it."""
    from dag_support.params import training_overrides, training_preset

    left = {"ds": None, "preset": "tuned", "epochs": None, "loss": "preset", "hidden_size": None,
            "batch_size": None, "learning_rate": None, "n_sample": None, "force_promote": False}
    assert training_overrides(left) == {"gru4rec": {}} and training_preset(left) == "tuned"
    assert training_preset({}) == "tuned" and training_overrides({}) == {"gru4rec": {}}
    filled = {**left, "preset": "yoochoose", "epochs": 3, "loss": "bpr-max", "hidden_size": 64, "learning_rate": 1,
              "n_sample": 0}
    assert training_overrides(filled) == {"gru4rec": {"epochs": 3, "loss": "bpr-max", "layers": [64],
                                                      "learning_rate": 1.0, "n_sample": 0}}
    assert training_preset(filled) == "yoochoose"
