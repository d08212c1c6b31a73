"""The side-by-side rounds of `cadence bench serve --ray`: the order of the two servers, and the medians and
per-round figures the report gives (no server: the level runner is a recorder)."""

import pytest

from cadence.bench.serve_ray import interleaved_rounds, markdown, summarize


def _level(c, stream, x, ttfa):
    return {"concurrency": c, "stream": stream, "x_realtime": x, "ttfa_p50_s": ttfa, "latency_p50_s": 1.0,
            "errors": 0}


def test_rounds_alternate_which_server_goes_first_and_cover_every_mode_and_level():
    calls = []

    def run(base, levels, modes):
        calls.append((base, levels[0], modes[0]))
        return [_level(levels[0], modes[0], 10.0, 0.1)]

    rounds = interleaved_rounds("P", "S", [8, 32], (True, False), 3, run)
    assert len(rounds) == 3 and all(len(r["plain"]) == len(r["serve"]) == 4 for r in rounds)
    # round 0: plain then Serve for each level; round 1: Serve first; round 2: plain first again
    assert [b for b, *_ in calls[:4]] == ["P", "S", "P", "S"]
    assert [b for b, *_ in calls[8:12]] == ["S", "P", "S", "P"]
    assert [b for b, *_ in calls[16:20]] == ["P", "S", "P", "S"]
    assert [(c, m) for _, c, m in calls[:8:2]] == [(8, True), (32, True), (8, False), (32, False)]
    with pytest.raises(ValueError, match="rounds"):
        interleaved_rounds("P", "S", [8], (True,), 0, run)


def test_summary_takes_medians_over_rounds_and_keeps_each_rounds_ratio():
    rounds = [{"plain": [_level(8, True, x_p, t_p)], "serve": [_level(8, True, x_s, t_s)]}
              for x_p, t_p, x_s, t_s in ((100, 0.30, 90, 0.34), (80, 0.32, 100, 0.33), (90, 0.31, 95, 0.31))]
    (lv,) = summarize(rounds)
    assert lv["plain"]["x_realtime"] == 90 and lv["serve"]["x_realtime"] == 95
    assert lv["throughput_ratio"] == pytest.approx(95 / 90)
    assert lv["ttfa_delta_s"] == pytest.approx(0.33 - 0.31)
    assert lv["round_ratios"] == pytest.approx([0.9, 1.25, 95 / 90])
    assert lv["round_ttfa_deltas_s"] == pytest.approx([0.04, 0.01, 0.0])
    text = "\n".join(markdown([lv]))
    assert "3 rounds" in text and "| 8 | streamed | 90.0 | 95.0 | **105.6%** | 90%, 125%, 106% |" in text
    assert "**+20 ms**" in text
