import shutil
import subprocess

import pytest

from tests.helpers import ROOT


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is needed to install buf")
def test_buf_lint_passes_standard_rules():
    done = subprocess.run(["bash", str(ROOT / "tools/buf.sh"), "lint"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
