"""README.md's Python API snippet runs as written, so the README cannot drift from the code.

Every ```python block of the README is extracted verbatim and run, in order, in one fresh Python
process inside a temporary directory (whatever it writes stays there). The snippet is sized to run
as is (200 training steps each for the tokenizer and LatentAR: about 40 s on 2 cores); nothing is
substituted.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    """The bodies of every fenced ```python block, verbatim."""
    return re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.M | re.S)


def test_readme_has_a_python_snippet():
    blocks = python_blocks(README.read_text())
    assert blocks, "README.md has no ```python block"
    code = "\n".join(blocks)
    for name in ("load_digits", "to_sequence", "ar_latents", "Trainer", "generate", "decode"):
        assert name in code, f"the README snippet no longer shows {name}"


def test_readme_python_snippet_runs_verbatim(tmp_path):
    code = "\n\n".join(python_blocks(README.read_text()))
    (tmp_path / "readme_snippet.py").write_text(code)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "readme_snippet.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"README snippet failed:\n{proc.stderr[-4000:]}"
    assert "torch.Size([10, 1, 8, 8])" in proc.stdout, proc.stdout[-2000:]
    assert "fd_own_mean" in proc.stdout
    assert (tmp_path / "exposure.png").stat().st_size > 0


def test_a_latent_grid_fed_to_the_ar_model_names_to_sequence():
    """The mistake the old README invited: the tokenizer's (B, D, h, w) grid given to LatentAR."""
    import latentar as la
    from latentar.exposure import ExposureTask, TeacherForcing
    ar = la.LatentAR(latent_dim=4, head="gmm", d_model=32, depth=1, num_heads=4, max_len=16)
    with pytest.raises(ValueError, match=r"to_sequence") as err:
        ExposureTask(ar, TeacherForcing()).training_step(torch.randn(8, 4, 4, 4))
    assert "(8, 4, 4, 4)" in str(err.value)
