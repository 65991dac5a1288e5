"""``latentar report``: the page it writes is self-contained, escapes what it shows, and every image
and audio file on it loads in a real browser (headless Chromium; `make venv` installs it).

The browser check runs a copy of the page with a probe script appended (the report itself has no
JavaScript): after ``load`` it waits for every ``<audio>`` to have its metadata (or an error), then
writes each element's load status as JSON into the DOM, which ``chromium --dump-dom`` prints. Two
deliberately broken elements on the probe page show that the probe does see a failure.
"""
from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from latentar import report
from latentar.cliargs import UsageError

SR = 8000
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

PROBE = """<img src="missing-on-purpose.png" alt="broken" data-probe-broken="1">
<audio preload="metadata" src="missing-on-purpose.wav" data-probe-broken="1"></audio>
<script>
(function () {
  var t0 = Date.now();
  function status() {
    var imgs = Array.prototype.map.call(document.images, function (i) {
      return {src: i.getAttribute("src"), broken: i.hasAttribute("data-probe-broken"),
              ok: i.complete && i.naturalWidth > 0, width: i.naturalWidth};
    });
    var auds = Array.prototype.map.call(document.querySelectorAll("audio"), function (a) {
      return {src: a.currentSrc, broken: a.hasAttribute("data-probe-broken"),
              ok: a.readyState >= 1 && a.duration > 0, readyState: a.readyState, duration: a.duration,
              error: a.error ? a.error.code : null};
    });
    var p = document.createElement("pre");
    p.id = "latentar-probe";
    p.textContent = JSON.stringify({images: imgs, audio: auds, ms: Date.now() - t0});
    document.body.appendChild(p);
  }
  function poll() {
    var auds = document.querySelectorAll("audio"), pending = 0;
    for (var i = 0; i < auds.length; i++) if (auds[i].readyState < 1 && !auds[i].error) pending++;
    if (pending === 0 || Date.now() - t0 > 10000) status(); else setTimeout(poll, 50);
  }
  window.addEventListener("load", function () { setTimeout(poll, 0); });
})();
</script>
"""


def _browser() -> str:
    found = os.environ.get("LATENTAR_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not found:
        pytest.fail("headless Chromium is needed for the report test and was not found; `make venv` installs it "
                    "(apt-get install chromium), or set LATENTAR_CHROMIUM to a Chrome/Chromium binary")
    return found


def _png(path: Path, title: str, grid: bool = False) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(2, 1.5), dpi=50)
    if grid:
        for i in range(4):
            ax = fig.add_subplot(2, 2, i + 1)
            ax.imshow(np.random.default_rng(i).random((8, 8)), cmap="gray_r")
            ax.axis("off")
    else:
        fig.add_subplot(1, 1, 1).plot([0, 1, 2], [1, 0, 2])
    fig.suptitle(title, fontsize=6)
    fig.savefig(path)
    plt.close(fig)


def _wav(path: Path, freq: float, seconds: float = 0.25) -> None:
    import soundfile as sf
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(SR * seconds)) / SR
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A fake sweep output: settings, results.md / .csv, two plots, an image cell, a speech cell and a text cell."""
    out = tmp_path_factory.mktemp("run") / "my run"  # a space in the path: links must be percent-encoded
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"preset": "quick", "data": "speech", "note": "<b>raw</b>",
                                                "budget": {"gen_steps": 10}}))
    (out / "results.md").write_text(
        "# Variance sweep (quick preset)\n\nFD: lower is better; `cfgX` = guidance <script>alert(1)</script>.\n\n"
        "| tokenizer | c_sigma | fd_cfg1 |\n|---|---|---|\n| sigma_vae | 0 | 225 ± 7.6 |\n| sigma_vae | 0.5 | 231 ± 6 |\n"
        "\n## Verdicts on the published claims\n\n| claim | verdict | evidence |\n|---|---|---|\n"
        "| FD falls as C_sigma grows | does not hold | \\|AR slope\\| up to 67.4 & more |\n")
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tokenizer", "c_sigma", "seed", "fd_cfg1"])
        w.writerows([["sigma_vae", 0, 0, 220.1], ["sigma_vae", 0, 1, 230.2], ["sigma_vae", 0.5, 0, 231.0]])
    _png(out / "fd_vs_c_sigma.png", "fd")
    _png(out / "exposure_curves.png", "exposure")
    _png(out / "cells" / "c_sigma=0_seed=0-abc" / "samples.png", "grid", grid=True)
    speech = out / "cells" / "c_sigma=0.5_seed=1-def"
    for role, freq in (("sample", 220), ("reference", 330), ("reconstruction", 440)):
        _wav(speech / "samples" / f"0_{role}.wav", freq)
    _wav(speech / "samples.0.wav", 550)  # how AudioDomain.save_samples wrote generated samples before the triples
    (out / "cells" / "text-cell").mkdir()
    (out / "cells" / "text-cell" / "samples.txt").write_text("--- prompt\n<i>hello</i>\n--- continuation\nworld\n")
    (out / "cells" / "empty-cell").mkdir()
    (out / "cells" / "empty-cell" / "result.json").write_text("{}")
    return out


def test_page_is_self_contained_and_escaped(run_dir):
    path = report.write_report(run_dir)
    assert path == run_dir / "index.html"
    page = path.read_text()
    assert "<script" not in page, "the report itself has no JavaScript, and shows text from the run escaped"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;raw&lt;/b&gt;" in page
    assert "&lt;i&gt;hello&lt;/i&gt;" in page
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links and all("://" not in u and not u.startswith(("/", "data:")) for u in links), links
    assert not re.search(r"https?:", page), "no network references"
    assert page.count("<img") == 3 and page.count("<audio") == 4
    for name in ("fd_vs_c_sigma.png", "exposure_curves.png"):
        assert f'alt="{name}"' in page and f"<figcaption>{name}</figcaption>" in page
    # the markdown tables, the verdict table included, become HTML tables with the escaped pipe kept
    assert "<th>verdict</th>" in page and "<td>does not hold</td>" in page
    assert "|AR slope| up to 67.4 &amp; more" in page and "<code>cfgX</code>" in page
    assert "<td>225 ± 7.6</td>" in page and "<td>230.2</td>" in page   # results.md and results.csv
    assert "<td>preset</td><td>quick</td>" in page                       # the settings
    assert "empty-cell" not in page                                      # cells without media are left out
    # one row of three players for the triple, and the legacy samples.<k>.wav as a sample alone
    rows = page.split("<tr>")
    triple = [r for r in rows if "samples/0_sample.wav" in r]
    assert len(triple) == 1 and all(f"samples/0_{r}.wav" in triple[0] for r in ("reference", "reconstruction"))
    legacy = [r for r in rows if "samples.0.wav" in r]
    assert len(legacy) == 1 and legacy[0].count("<audio") == 1


def test_every_image_and_audio_loads_in_chromium(run_dir, tmp_path):
    browser = _browser()
    page = report.write_report(run_dir).read_text()
    probe = run_dir / "probe.html"  # beside index.html, so the relative links resolve the same way
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    try:
        proc = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                               "--disable-dev-shm-usage", "--mute-audio", "--allow-file-access-from-files",
                               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
                               "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=90)
    finally:
        probe.unlink()
    m = re.search(r'<pre id="latentar-probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no probe output from {browser} (rc {proc.returncode}): {proc.stderr[-2000:]}"
    status = json.loads(html.unescape(m.group(1)))
    images = [i for i in status["images"] if not i["broken"]]
    audio = [a for a in status["audio"] if not a["broken"]]
    assert len(images) == 3 and len(audio) == 4, status
    assert all(i["ok"] for i in images), [i for i in images if not i["ok"]]
    assert all(a["ok"] for a in audio), [a for a in audio if not a["ok"]]
    assert all(abs(a["duration"] - 0.25) < 0.01 for a in audio), audio
    # the probe can tell: the two broken elements are reported as not loaded
    assert [i["ok"] for i in status["images"] if i["broken"]] == [False]
    assert [a["ok"] for a in status["audio"] if a["broken"]] == [False]


def test_not_a_run_directory(tmp_path, capsys):
    from latentar import cli
    with pytest.raises(UsageError, match="does not exist"):
        report.write_report(tmp_path / "nope")
    (tmp_path / "parent" / "child").mkdir(parents=True)
    (tmp_path / "parent" / "child" / "results.csv").write_text("a\n1\n")
    with pytest.raises(UsageError, match="run directories inside it: child"):
        report.write_report(tmp_path / "parent")
    if ("report",) in cli.COMMANDS:
        rc = cli.main(["report", str(tmp_path / "nope")])
    else:  # the same handler the CLI uses
        rc = cli.run_command("report", report.main, [str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("latentar report: error: run directory"), err
    assert not (tmp_path / "nope").exists()


def test_main_writes_index(run_dir, capsys):
    assert report.main([str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "index.html")


def test_csv_numbers_are_shortened_but_words_and_integers_kept():
    from latentar.report import _short_number
    assert [_short_number(v) for v in ("0.30166666666666664", "1e-05", "12", "sft", "nan", "")] == \
        ["0.3017", "1e-05", "12", "sft", "nan", ""]


def test_audio_domain_writes_the_triples_the_report_plays(tmp_path):
    """AudioDomain.save_samples writes sample / reference / reconstruction per k, and the page shows
    them as one row of three players."""
    import soundfile as sf
    import torch

    from latentar.metrics.domains import AudioDomain
    from latentar.report import render_report

    dom = AudioDomain.__new__(AudioDomain)  # the corpus is not needed to write samples
    dom.sample_rate, dom.test_x = 16000, torch.linspace(-0.5, 0.5, 3 * 2048).view(3, 1, 2048)
    cell = tmp_path / "cells" / "c0"
    cell.mkdir(parents=True)
    samples = torch.zeros(5, 1, 2048)
    dom.save_samples(samples, cell / "samples.png", "t", reconstruct=lambda x: 0.5 * x)
    names = sorted(p.name for p in (cell / "samples").iterdir())
    assert names == [f"{k}_{r}.wav" for k in range(3) for r in ("reconstruction", "reference", "sample")]
    ref, sr = sf.read(cell / "samples" / "1_reference.wav", dtype="float32")
    rec, _ = sf.read(cell / "samples" / "1_reconstruction.wav", dtype="float32")
    assert sr == 16000 and abs(ref - dom.test_x[1, 0].numpy()).max() < 1e-4
    assert abs(rec - 0.5 * dom.test_x[1, 0].numpy()).max() < 1e-4
    page = render_report(tmp_path)
    assert page.count("<audio") == 9 and "&mdash;" not in page
