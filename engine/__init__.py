"""CIFAR Studio's engine: everything that is not a widget. Imports no Qt."""

__version__ = "0.1.0"
