"""Fitting models: batches, sampling, losses, optimizers, the training loop, evaluation, baselines, the CLI."""
