"""Smoke test of bench/generate.py: ``--quick`` with the aot_eager backend (no C++ compiler needed)
runs end to end and its RESULT line carries every key with a finite positive value."""
import math

from conftest import load_bench


def test_quick_run_reports_every_figure(capsys):
    bench = load_bench("generate")
    assert bench.main(["--quick", "--compile-backend", "aot_eager"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("RESULT ")
    figures = dict(item.split("=", 1) for item in lines[-1].split()[1:])
    values = {key: float(value) for key, value in figures.items()}

    expected = [f"kv_speedup_{n}" for n in bench.QUICK_LENGTHS]
    for name, _, _ in bench.HEAD_ROWS:
        expected += [f"tok_s_{name}_eager", f"tok_s_{name}_compiled", f"compile_speedup_{name}",
                     f"head_share_{name}_eager", f"head_share_{name}_compiled"]
    assert list(values) == expected
    assert {name for name, _, _ in bench.HEAD_ROWS} == {"gmm", "diff20", "diff100"}
    for key, value in values.items():
        assert math.isfinite(value) and value > 0, (key, value)
        if key.startswith("head_share_"):
            assert value <= 1, (key, value)
