"""A GPU that TensorFlow does not use is said in the status bar, its tooltip and the About box."""

from __future__ import annotations

import html

from gui.main_window import MainWindow

ADVICE = ('TensorFlow cannot use the NVIDIA GPU (NVIDIA H200): the CUDA libraries are not installed. '
          'Install them with .venv/bin/pip install -e ".[gpu]" (Linux), then restart.')


def test_gpu_advice_shows_in_the_status_bar_and_about(make_window, monkeypatch):
    # The window's own look-up (Keras' import, seconds) is not waited for: this test hands it the answer.
    monkeypatch.setattr(MainWindow, "_report_backend", lambda self: None)
    window = make_window()
    info = {"keras_version": "3.11.0", "backend": "tensorflow", "backend_version": "2.21.0", "device": "CPU",
            "python": "3.11.9", "gpu_advice": ADVICE}
    window._on_backend_ready(info)
    assert window.backend_label.text() == "Keras 3.11.0 · tensorflow · CPU — GPU not used (see About)"
    assert window.backend_label.toolTip() == ADVICE
    assert f"GPU not used: {html.escape(ADVICE)}" in window.about_text()

    window._on_backend_ready({**info, "gpu_advice": ""})
    assert window.backend_label.text() == "Keras 3.11.0 · tensorflow · CPU"
    assert window.backend_label.toolTip() == ""
    assert "GPU not used" not in window.about_text()
