"""The settings panels on the left of the window: dataset, model, hyperparameters."""
