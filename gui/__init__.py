"""CIFAR Studio's window: Qt views over the engine (see DESIGN.md)."""

from gui.compat import protect_singletons

protect_singletons()
