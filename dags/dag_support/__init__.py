"""Helpers shared by the DAG files: assets, the run's day, Params, data checks, Spark job tasks. Cheap to import."""
