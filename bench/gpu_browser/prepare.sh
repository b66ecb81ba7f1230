#!/usr/bin/env bash
# Run HERE (the CPU machine), in the project root, after `nox -s serve` built models/ and web/vendor/.
# Writes .gpu/ (git-ignored) with one folder per device call, each under 64 MiB:
#   .gpu/chr     chromium-headless-shell .deb (61 MiB)
#   .gpu/base    bundle.tar.xz: the libs the headless shell links against, Chromium's common files, fonts,
#                the app (app/, web/src, the vendor files the page loads), wheels for starlette + uvicorn,
#                Vulkan loader debs, and the scripts beside this file
#   .gpu/m1..mN  the model's files (manifest.json, configs, the chosen dtype's onnx), split into 60 MB parts
# Usage: bash bench/gpu_browser/prepare.sh MODEL_ID DTYPE    (e.g. smollm2-135m q4)
set -euo pipefail
model=${1:?model id}; dtype=${2:?dtype}; here=$(cd "$(dirname "$0")" && pwd)
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/chr .gpu/base && work=$(mktemp -d)
o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/gpu-apt-lists'
mkdir -p /tmp/gpu-apt-lists/partial && apt-get $o update -qq
(cd .gpu/chr && apt-get $o download chromium-headless-shell -qq)
command -v chromium >/dev/null || apt-get install -y -qq chromium   # for the shared files and libs below
B=$work/b; mkdir -p $B/lib $B/chromium $B/fonts $B/gl $B/whl $B/app-root/web/vendor $B/app-root/models
dpkg -x .gpu/chr/*.deb $work/x
for l in $(ldd $work/x/usr/lib/chromium/chromium-headless-shell | awk '/=>/ {print $3}'); do
  case $(basename $l) in libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*) ;; *) cp -L $l $B/lib/;; esac
done
cp /usr/lib/chromium/{icudtl.dat,v8_context_snapshot.bin,snapshot_blob.bin,libEGL.so,libGLESv2.so,libvulkan.so.1} $B/chromium/
cp /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf $B/fonts/
(cd $B/gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 -qq)
py=.nox/serve/bin/python
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform any -d $B/whl \
  starlette==$($py -c 'import starlette; print(starlette.__version__)') uvicorn==$($py -c 'import uvicorn; print(uvicorn.__version__)')
cp -r app $B/app-root/ && cp -r web/src $B/app-root/web/ && cp "$here"/probe.* $B/app-root/web/src/
for f in transformers.min.js ort-wasm-simd-threaded.asyncify.mjs ort-wasm-simd-threaded.asyncify.wasm hash-wasm.esm.js \
         marked.esm.js purify.es.mjs versions.json; do cp web/vendor/$f $B/app-root/web/vendor/; done
cp -r web/vendor/workbox $B/app-root/web/vendor/
cp "$here"/*.sh "$here"/cdp.py $B/
tar -cJf .gpu/base/bundle.tar.xz -C $B .
# the model: everything but the other dtypes' onnx files, split into parts
python3 - "$model" "$dtype" "$work/m" <<'PY'
import json, sys, shutil
from pathlib import Path
model, dtype, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
src = Path("models") / model; man = json.loads((src / "manifest.json").read_text())
onnx_all = {f for d in man["dtypes"].values() for f in d["files"]}
keep = [f["path"] for f in man["files"] if f["path"] not in onnx_all or f["path"] in man["dtypes"][dtype]["files"]]
for p in keep + ["manifest.json"]:
    (out / model / p).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(src / p, out / model / p)
PY
tar -cf $work/model.tar -C $work/m "$model"
split -b 60000000 -d $work/model.tar $work/part.
i=0; for p in $work/part.*; do i=$((i+1)); mkdir -p .gpu/m$i; mv $p .gpu/m$i/; done
rm -rf $work; du -sh .gpu/*; echo "calls: chr, base, m1..m$i (back to back), then run.sh"
