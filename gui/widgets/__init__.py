"""Widgets the tabs share: the metric plot (and next the confusion heatmap, the gallery)."""
