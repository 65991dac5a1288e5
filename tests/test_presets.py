"""The commands' presets are YAML files (latentar/configs/presets/<command>/<preset>.yaml) resolved with
the command line into one config: `--cfg-dump` prints it, every run saves it (config.yaml, beside
run.json: version and git commit), `--config` runs it again. Moving the presets out of Python
changed no cell key (cached cells stay valid), and a run rerun from its saved config alone gives the
same results."""
from __future__ import annotations

import csv
import hashlib
import json
import re
import types
from pathlib import Path

import pytest

from latentar import cli
from latentar.commands import compare_discrete, compare_text, softprompt, sweep_ip, sweep_variance
from latentar.configs import PRESETS_DIR, load_preset, preset_names, read_yaml, save_run

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {  # preset folder -> (command words, the light module of its command line)
    "sweep_variance": (["sweep", "variance"], sweep_variance),
    "sweep_ip": (["sweep", "ip"], sweep_ip),
    "compare_discrete": (["compare", "discrete"], compare_discrete),
    "compare_text": (["compare", "text"], compare_text),
    "softprompt_bench": (["softprompt", "bench"], softprompt),
}
CASES = [(folder, name) for folder in COMMANDS for name in preset_names(folder)]


def _strict(value) -> str:
    """JSON with key order and int/float kept: 1 and 1.0, or two orders, compare unequal."""
    return json.dumps(value)


def _resolve(folder: str, argv: list[str]) -> dict:
    words, module = COMMANDS[folder]
    build = getattr(module, "build_parser")
    parser = build(f"latentar {' '.join(words)}") if folder.startswith("compare") else build(" ".join(words))
    resolve = getattr(module, "resolve_bench", None) or module.resolve
    return resolve(parser.parse_args(argv))


def test_every_command_has_its_presets_as_yaml_files():
    assert sorted(p.name for p in PRESETS_DIR.iterdir() if p.is_dir()) == sorted(COMMANDS)
    assert preset_names("sweep_variance") == ["full", "quick", "smoke", "standard"]
    assert preset_names("sweep_ip") == preset_names("compare_text") == ["full", "quick", "smoke"]
    # the old PRESETS names are read-only views of the files: a lookup is a fresh copy
    from latentar.softprompt import bench
    from latentar.sweeps import discrete, ip, text_compare, variance
    for view, folder in ((variance.PRESETS, "sweep_variance"), (ip.PRESETS, "sweep_ip"),
                         (discrete.PRESETS, "compare_discrete"), (text_compare.PRESETS, "compare_text"),
                         (bench.BENCH_PRESETS, "softprompt_bench")):
        assert list(view) == preset_names(folder) and len(view) == len(preset_names(folder))
        for name in view:
            assert view[name] == load_preset(folder, name)
    discrete.PRESETS["smoke"]["lengths"].append(99)
    assert discrete.PRESETS["smoke"]["lengths"] == [3, 6]
    with pytest.raises(ValueError, match="unknown preset 'huge'.*smoke"):
        load_preset("compare_discrete", "huge")


def test_preset_keys_are_config_keys():
    """A typo in a preset file would be ignored (or make a key nobody reads): every key is the command's."""
    for folder, module in (("compare_discrete", compare_discrete), ("compare_text", compare_text),
                           ("sweep_ip", sweep_ip), ("softprompt_bench", softprompt)):
        known = set(getattr(module, "BENCH_DEFAULTS", None) or module.DEFAULTS)
        for name in preset_names(folder):
            assert set(load_preset(folder, name)) <= known, (folder, name)
    keys = [set(load_preset("sweep_variance", n)) - {"per_data"} for n in preset_names("sweep_variance")]
    assert all(k == keys[0] for k in keys)   # the variance presets hold the same budget keys


def test_the_parsers_names_are_the_librarys():
    """The command lines keep copies of the library's names (to parse without torch): they are equal."""
    from latentar.data.compounding import COMPOUNDING
    from latentar.data.seq_tasks import TASKS
    from latentar.diffusion.digits_space import SPACES
    from latentar.diffusion.sampling import SAMPLERS
    from latentar.exposure.sequence_level import REWARDS
    from latentar.softprompt import bench
    from latentar.sweeps import discrete, text_compare
    assert sweep_variance.SAMPLERS == sweep_ip.SAMPLERS == SAMPLERS
    assert sweep_ip.SPACES == SPACES
    assert compare_discrete.TASKS == TASKS and compare_discrete.COMPOUNDING_TASKS == tuple(COMPOUNDING)
    assert compare_discrete.STRATEGY_NAMES == tuple(discrete.STRATEGIES) and compare_discrete.REWARDS == REWARDS
    assert text_compare.TEXT_STRATEGIES == tuple(s for s in discrete.STRATEGIES if s not in ("relabel", "rac"))
    assert softprompt.DEFAULT_LENGTHS == bench.DEFAULT_LENGTHS and softprompt.DEFAULT_OBJECTIVES == bench.DEFAULT_OBJECTIVES


# --------------------------------------------------------------------------------------------------
# The cell keys did not move with the presets
# --------------------------------------------------------------------------------------------------
# A digest of every cell folder name (and tokenizer folder name, and the runner's settings) each
# command would use for each preset, computed with the Python PRESETS dicts before they became YAML.
# A change here means cached cells would no longer be found: only change it on purpose.
KEYS = {
    "bench/charlm-test": "c61d1697147e62ce", "bench/full": "ba063cd7348fddde", "bench/quick": "3045bdb2332b5800",
    "bench/smoke": "688637c790b612f5", "bench/standard": "583c3beb8e7683c4",
    "discrete/full": "5d6e1b0d1e894dbd", "discrete/quick": "10bb2cfd73f2ac99", "discrete/smoke": "5f44804f6897b1e1",
    "discrete/standard": "aae08ce44c696810",
    "ip/full": "2b1fa846536f128e", "ip/quick": "be205530b222da45", "ip/smoke": "09e6d74f55c5c9f9",
    "text/full": "78581906977ca46e", "text/quick": "b9a9aac29ccc9746", "text/smoke": "0e0ecdd857270211",
    "variance/full/digits": "68a244f169fa97c9", "variance/full/mnist": "68bcef3cf9c0ea27",
    "variance/full/speech": "bd5345e8685cc935", "variance/quick/digits": "19a1f0a421569b30",
    "variance/quick/mnist": "07392b698ba83ff1", "variance/quick/speech": "fe9593080a0f1352",
    "variance/smoke/digits": "6c2d733472208285", "variance/smoke/mnist": "e28a7ed3390ee926",
    "variance/smoke/speech": "08d2e222a4a9e201", "variance/standard/digits": "4387f1978a4edcea",
    "variance/standard/mnist": "f1a8ed3e7369afa6", "variance/standard/speech": "ed17a23f77f3d3f0",
}


def _argv(name: str, out: str) -> list[str]:
    kind, preset, *data = name.split("/")
    if name == "bench/charlm-test":
        return ["softprompt", "bench", "--model", "charlm", "--charlm-preset", "test", "--lengths", "8", "--targets",
                "1", "--objectives", "ce", "--n-virtual", "2", "--quiet", "--device", "cpu", "--out", out]
    words = {"variance": ["sweep", "variance", "--quiet"], "ip": ["sweep", "ip", "--quiet"],
             "discrete": ["compare", "discrete", "--no-progress"], "text": ["compare", "text", "--no-progress"],
             "bench": ["softprompt", "bench", "--quiet"]}[kind]
    return words + ["--preset", preset, "--out", out, "--workers", "1", "--device", "cpu"] + (
        ["--data", data[0]] if data else [])


@pytest.fixture
def recorded(monkeypatch):
    """Runs a command up to its SweepRunner.run, recording the cell folders instead of running them."""
    import latentar.metrics.digits_classifier as classifier
    import latentar.softprompt.backend as backend
    import latentar.sweeps.runner as runner
    import latentar.sweeps.variance as variance

    class Stop(Exception):
        pass

    seen: dict = {}

    def run(self, cells, fn, desc="cells", group=None):
        cells = list(cells)
        seen.setdefault("runs", []).append({"settings": json.dumps(self.settings, sort_keys=True),
                                            "dirs": [self.cell_dir(c).name for c in cells]})
        raise Stop

    def domain(name, seconds=1.0, sample_rate=16000):
        audio = name == "speech" or name.startswith("wavfolder")
        return types.SimpleNamespace(modality="audio" if audio else "image", name=name, in_channels=1,
                                     num_classes=None if audio else 10)

    sweep_run = variance.VarianceSweep.run

    def variance_run(self, progress=True):
        seen["tokenizers"] = [self.tokenizer_dir(p).name for p in dict.fromkeys(self.point(c) for c in self.cells())]
        return sweep_run(self, progress)

    monkeypatch.setattr(runner.SweepRunner, "run", run)
    monkeypatch.setattr(variance, "make_domain", domain)
    monkeypatch.setattr(variance.VarianceSweep, "run", variance_run)
    monkeypatch.setattr(classifier, "load_digits_classifier", lambda device=None: None)
    monkeypatch.setattr(backend, "load_frozen_lm", lambda *a, **k: types.SimpleNamespace(vocab_size=1, d_model=1,
                                                                                           device="cpu"))
    monkeypatch.setattr(backend, "as_frozen_lm", lambda lm: lm)

    def record(argv):
        seen.clear()
        words = tuple(argv[:2])
        module = __import__("importlib").import_module(cli.COMMANDS[words][0])
        with pytest.raises(Stop):
            cli.run_command(" ".join(words), module.main, argv[2:], debug=True)
        x = {"dirs": [d for r in seen.get("runs", []) for d in r["dirs"]],
             "settings": [r["settings"] for r in seen.get("runs", [])], "tokenizers": seen.get("tokenizers", [])}
        return hashlib.sha256(json.dumps(x, sort_keys=True).encode()).hexdigest()[:16]
    return record


@pytest.mark.parametrize("name", sorted(KEYS))
def test_cell_keys_are_those_of_the_python_presets(recorded, tmp_path, name, capsys):
    assert recorded(_argv(name, str(tmp_path / "o"))) == KEYS[name], \
        f"{name}: the cells' keys changed, so cached cells of this preset would be orphaned"


def test_cell_keys_do_not_depend_on_preset_or_config(recorded, tmp_path):
    """The same run from its preset, from its saved config and with the preset's values as options: one key."""
    argv = _argv("discrete/smoke", str(tmp_path / "a"))
    key = recorded(argv)
    config = tmp_path / "a" / "config.yaml"
    assert config.is_file()   # saved before the cells run
    assert recorded(["compare", "discrete", "--config", str(config), "--out", str(tmp_path / "b")]) == key
    smoke = load_preset("compare_discrete", "smoke")
    as_options = ["--task", "running_sum", "--len", "3,6", "--seeds", "1", "--steps", str(smoke["steps"]),
                  "--lr", "0.001", "--batch-size", "32"]
    assert recorded(argv[:-8] + as_options + argv[-8:]) == key


def test_a_run_from_before_config_yaml_reruns_from_its_config_json(recorded, tmp_path):
    """docs/discrete/*/config.json were written by compare discrete before config.yaml existed (with
    its display-only ``progress`` key): --config reads them, to the cells of the same settings typed out."""
    from_json = recorded(["compare", "discrete", "--config", str(ROOT / "docs/discrete/quick/config.json"),
                          "--out", str(tmp_path / "a")])
    typed = recorded(["compare", "discrete", "--preset", "quick", "--task", "running_sum", "--len", "8,16",
                      "--strategies", "sft,ss,bash,relabel,mixer", "--steps", "500", "--device", "cpu",
                      "--out", str(tmp_path / "b")])
    assert from_json == typed


# --------------------------------------------------------------------------------------------------
# --cfg-dump, --config
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder, preset", CASES, ids=[f"{f}-{p}" for f, p in CASES])
def test_dumped_config_round_trips_to_the_same_resolved_config(folder, preset, tmp_path, capsys):
    words, _ = COMMANDS[folder]
    out = tmp_path / "out"
    resolved = _resolve(folder, ["--preset", preset, "--out", str(out)])
    assert resolved["preset"] == preset and list(resolved)[-1] == "launch" and resolved["out"] == str(out)
    assert cli.main(words + ["--preset", preset, "--out", str(out), "--cfg-dump"]) == 0
    dumped = capsys.readouterr().out
    assert read_yaml_text(dumped, tmp_path) == json.loads(json.dumps(resolved))
    path = tmp_path / "config.yaml"
    path.write_text(dumped)
    again = _resolve(folder, ["--config", str(path)])
    assert _strict(again) == _strict(resolved)
    assert cli.main(words + ["--config", str(path), "--cfg-dump"]) == 0
    assert capsys.readouterr().out == dumped
    assert not out.exists()   # a dump runs nothing, writes nothing


def read_yaml_text(text: str, tmp_path: Path):
    p = tmp_path / "read.yaml"
    p.write_text(text)
    return read_yaml(p)


def test_variance_config_applies_per_data_and_options_win(tmp_path):
    speech = _resolve("sweep_variance", ["--preset", "standard", "--data", "speech", "--steps", "7"])
    std = load_preset("sweep_variance", "standard")
    assert speech["generators"] == std["per_data"]["speech"]["generators"] and speech["gen_steps"] == 7
    assert speech["cfg"] == [1.0] and "per_data" not in speech
    path = tmp_path / "c.yaml"
    path.write_text(cli_dump(["sweep", "variance", "--preset", "standard", "--data", "speech"]))
    # options beside --config override its keys; the rest is the file's
    over = _resolve("sweep_variance", ["--config", str(path), "--tok-steps", "5", "--c-sigma", "0,1"])
    assert (over["tok_steps"], over["c_sigma"], over["gen_steps"]) == (5, [0.0, 1.0], 300)


def cli_dump(argv):
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(argv + ["--cfg-dump"]) == 0
    return buf.getvalue()


@pytest.mark.parametrize("content, argv, message", [
    (None, [], "is not a file"),
    ("steps: [1\n", [], "not a readable YAML config"),
    ("- 1\n", [], "holds no mapping"),
    ("preset: smoke\nstepz: 3\n", [], "stepz is not a setting"),
    ("preset: smoke\nsteps: 0\n", [], "--steps must be an integer >= 1, got 0"),
    ("preset: smoke\n", ["--preset", "quick"], "--preset and --config exclude each other"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys, content, argv, message):
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_text(content)
    assert cli.main(["compare", "discrete", "--config", str(path), "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentar compare discrete: error: --") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------------
# The run record, and a rerun from it
# --------------------------------------------------------------------------------------------------
def test_save_run_writes_config_version_and_commit(tmp_path, monkeypatch):
    from latentar import __version__
    cfg = {"preset": "smoke", "steps": 3, "lr": 0.001, "out": tmp_path / "o", "lengths": (3, 6)}
    path = save_run(tmp_path / "o", "compare discrete", cfg, ["compare", "discrete", "--steps", "3"])
    assert path == tmp_path / "o" / "config.yaml"
    assert read_yaml(path) == {"preset": "smoke", "steps": 3, "lr": 0.001, "out": str(tmp_path / "o"), "lengths": [3, 6]}
    assert path.read_text().startswith("# latentar compare discrete: the resolved config")
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["version"] == __version__ and run["argv"] == ["compare", "discrete", "--steps", "3"]
    assert run["command"] == "latentar compare discrete"
    repo = Path(__file__).resolve().parents[1]
    if (repo / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", run["git_commit"]) and run["git_dirty"] in (True, False)
    else:
        assert run["git_commit"] == "unknown"
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))   # no git at all: "unknown", never an error
    save_run(tmp_path / "p", "compare discrete", cfg)
    run = json.loads((tmp_path / "p" / "run.json").read_text())
    assert run["git_commit"] == "unknown" and run["git_dirty"] is None


def _rows_without_timings(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in csv.DictReader(f)]


def test_a_smoke_run_rerun_from_its_saved_config_gives_the_same_results(tmp_path, capsys):
    """compare text --preset smoke (the quickest smoke run, about 10 s here) into a, then from
    a/config.yaml alone into b: the same results.csv (bar the wall-clock columns)."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["compare", "text", "--preset", "smoke", "--device", "cpu", "--workers", "1", "--no-progress",
                     "--out", str(a)]) == 0
    assert (a / "config.yaml").is_file() and (a / "run.json").is_file()
    assert "results.csv" in (a / "index.html").read_text()  # every finished run writes its report page
    assert cli.main(["compare", "text", "--config", str(a / "config.yaml"), "--out", str(b), "--no-progress"]) == 0
    capsys.readouterr()
    rows_a, rows_b = _rows_without_timings(a / "results.csv"), _rows_without_timings(b / "results.csv")
    assert rows_a == rows_b and len(rows_a) == 2
    saved_a, saved_b = read_yaml(a / "config.yaml"), read_yaml(b / "config.yaml")
    assert saved_b == {**saved_a, "out": str(b)}
    assert sorted(p.name for p in (a / "cells").iterdir()) == sorted(p.name for p in (b / "cells").iterdir())
    assert json.loads((b / "run.json").read_text())["argv"] == ["--config", str(a / "config.yaml"), "--out", str(b),
                                                               "--no-progress"]
