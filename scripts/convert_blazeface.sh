#!/bin/sh
# One-time, on a dev machine: mediapipe 0.10.21 wheel (PyPI) -> BlazeFace short/full-range ONNX (opset 17).
# detektr ships the two .onnx files + LICENSE.mediapipe in detektr/models/; no TF/mediapipe at run time (workers/_blazeface.py).
#
#   env knobs:  W=work dir (default /tmp/blazeface-conv)   OUT=where the .onnx go (default $W/onnx)
#               WHEEL=path to an already downloaded mediapipe-0.10.21 cp311 manylinux_2_28_x86_64 wheel
#               VENV=existing venv with tensorflow-cpu 2.21.0 + onnx + tf2onnx 1.17.0 (skips creating one)
set -e
W=${W:-/tmp/blazeface-conv}; OUT=${OUT:-$W/onnx}; mkdir -p "$W" "$OUT"; cd "$W"
WHL=mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl
SHA=05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3
if [ -n "$WHEEL" ]; then cp "$WHEEL" "$W/$WHL"; fi
[ -f "$WHL" ] || python3 -m pip download mediapipe==0.10.21 --no-deps --only-binary=:all: \
      --python-version 3.11 --platform manylinux_2_28_x86_64 -d .              # ~35 MB from PyPI
echo "$SHA  $WHL" | sha256sum -c -
unzip -o -q -j "$WHL" mediapipe/modules/face_detection/face_detection_short_range.tflite \
      mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite
unzip -o -q -p "$WHL" mediapipe-0.10.21.dist-info/LICENSE > "$OUT/LICENSE.mediapipe"

if [ -z "$VENV" ]; then
  VENV=$W/venv
  python3 -m venv "$VENV" && "$VENV/bin/pip" install tensorflow-cpu==2.21.0 onnx \
    && "$VENV/bin/pip" install --no-deps tf2onnx==1.17.0
fi

cat > conv.py <<'PY'
import runpy, numpy as np
np.product = np.prod                       # tf2onnx 1.17 still calls np.product (removed in numpy 2)
runpy.run_module("tf2onnx.convert", run_name="__main__")
PY

# The full-range model stores 46 weight tensors as TFLite *sparse* tensors + DENSIFY ops, which tf2onnx
# cannot read ("cannot reshape array of size 77 into shape (8,1,1,32)"). Replace them by dense constants
# computed by TFLite's own DENSIFY kernel; the rewritten model is checked bit-identical on random input.
cat > densify_tflite.py <<'PY'
import sys, warnings
import numpy as np
warnings.filterwarnings("ignore")
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils as fbu

src, dst = sys.argv[1], sys.argv[2]
model = fbu.read_model(src)
sg = model.subgraphs[0]
densify_code = [i for i, oc in enumerate(model.operatorCodes)
                if max(oc.builtinCode, oc.deprecatedBuiltinCode) == schema.BuiltinOperator.DENSIFY]
ops = [op for op in sg.operators if op.opcodeIndex in densify_code]
print(f"{len(ops)} DENSIFY ops")
it = tf.lite.Interpreter(model_path=src, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
it.allocate_tensors()
inp = it.get_input_details()[0]
it.set_tensor(inp["index"], np.zeros(inp["shape"], np.float32))
it.invoke()
for op in ops:
    s, d = op.inputs[0], op.outputs[0]
    dense = it.get_tensor(d)
    assert list(dense.shape) == list(sg.tensors[d].shape)
    b = schema.BufferT(); b.data = np.frombuffer(dense.tobytes(), np.uint8)
    model.buffers.append(b)
    sg.tensors[d].buffer = len(model.buffers) - 1     # DENSIFY output becomes a constant
    sg.tensors[s].buffer = 0                          # detach the sparse source tensor
    sg.tensors[s].sparsity = None
sg.operators = [op for op in sg.operators if op.opcodeIndex not in densify_code]
used = {t.buffer for g in model.subgraphs for t in g.tensors}
for i, b in enumerate(model.buffers):
    if i and i not in used: b.data = None             # drop the now unused sparse payloads
fbu.write_model(model, dst)
x = np.random.default_rng(0).uniform(-1, 1, inp["shape"]).astype(np.float32)
def run(p):
    i = tf.lite.Interpreter(model_path=p); i.allocate_tensors()
    i.set_tensor(i.get_input_details()[0]["index"], x); i.invoke()
    return [i.get_tensor(o["index"]) for o in i.get_output_details()]
diff = max(float(np.abs(a - b).max()) for a, b in zip(run(src), run(dst)))
print("max abs diff original vs densified:", diff); assert diff < 1e-6
PY
"$VENV/bin/python" densify_tflite.py face_detection_full_range_sparse.tflite face_detection_full_range_dense.tflite

"$VENV/bin/python" conv.py --tflite face_detection_short_range.tflite \
    --output "$OUT/face_detection_short_range.onnx" --opset 17
"$VENV/bin/python" conv.py --tflite face_detection_full_range_dense.tflite \
    --output "$OUT/face_detection_full_range.onnx" --opset 17 \
    --inputs input_1 --outputs Identity,Identity_1 \
    --rename-inputs input --rename-outputs regressors,classificators   # same tensor names as short-range
ls -l "$OUT"; sha256sum "$OUT"/*.onnx
