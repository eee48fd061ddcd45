"""A model's life in MLflow: tracked runs, the registry (resolving aliases, the promotion gate), the pipeline steps."""
