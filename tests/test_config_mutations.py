"""The loader's property test: random mutations of every shipped config (tests/config_mutations.py) either load or
raise a one-line ConfigError; never a traceback. `python tests/config_mutations.py --cases 3000` runs thousands."""

from __future__ import annotations

from config_mutations import CONFIGS, run

CASES = 400


def test_mutated_shipped_configs_load_or_give_a_one_line_error(tmp_path):
    counts, defects = run(range(CASES), tmp_path)
    report = "\n".join(f"seed {seed}: {'; '.join(mutations)}\n{detail}" for seed, mutations, detail in defects)
    assert not defects, f"{len(defects)} of {CASES} mutated configs gave a traceback or a multi-line error " \
                        f"(replay: python tests/config_mutations.py --replay SEED):\n{report}"
    # both outcomes are exercised, over the shipped configs (Unity's excluded: they start their game to load)
    assert counts["loaded"] >= CASES // 20 and counts["error"] >= CASES // 2, counts
    assert len(CONFIGS) >= 10
