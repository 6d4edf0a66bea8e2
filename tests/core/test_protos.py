import subprocess
import sys

from tests.helpers import ROOT


def test_generated_stubs_are_up_to_date():
    done = subprocess.run([sys.executable, str(ROOT / "tools/gen_protos.py"), "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_field_is_commented():
    """The protos are the API reference: every field and enum value carries a comment."""
    missing = []
    for proto in sorted((ROOT / "protos/likeness/v1").glob("*.proto")):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            s = line.strip()
            is_field = (s.endswith(";") and "=" in s
                        and not s.startswith(("option", "syntax", "package", "import", "//")))
            if is_field and not lines[i - 1].strip().startswith("//"):
                missing.append(f"{proto.name}:{i + 1}: {s}")
    assert not missing, "\n".join(missing)
