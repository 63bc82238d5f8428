"""The ETA of a stage whose fraction done is known (evaluation, the frozen base's feature pass)."""

from engine.text import StageClock


def test_a_stage_eta_scales_the_time_so_far_by_what_is_left():
    clock = StageClock()
    assert clock.remaining("Computing features", 0.0, now=100.0) == ""  # nothing done yet: no estimate
    assert clock.remaining("Computing features", 0.01, now=101.0) == ""  # too little done to tell
    assert clock.remaining("Computing features", 0.25, now=110.0) == "ETA 0:30"  # 10 s for a quarter
    assert clock.remaining("Computing features", 1.0, now=140.0) == ""  # done
    assert clock.remaining("Evaluating", 0.5, now=150.0) == ""  # another stage: its clock starts now
    assert clock.remaining("Evaluating", 0.5, now=154.0) == "ETA 0:04"
