#!/usr/bin/env bash
# The CUDA checks, in one run on a machine with a GPU (run by hand from the repository root):
#   the gpu-marked tests, then embedding and training throughput on the GPU.
# Images: DERMCTX_SHARED_DATA (default ../shared/data); the results go to benchmarks/results/
# (embed_gpu.*, train_throughput_gpu.*) and, when OUT is set, logs and copies to $OUT.
set -o pipefail
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/out/gpu}
mkdir -p "$OUT"
py=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $py -c "import torch, timm, numpy, pandas, sklearn, lightgbm; print('torch', torch.__version__, 'timm', timm.__version__,
'numpy', numpy.__version__, 'pandas', pandas.__version__, 'sklearn', sklearn.__version__, 'lightgbm', lightgbm.__version__,
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  nproc; } 2>&1 | tee "$OUT/env.txt"
$py -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -rs 2>&1 | tee "$OUT/gpu_tests.log"
cores=$(nproc)
$py benchmarks/embed_throughput.py --device cuda --threads 2 --workers $((cores - 2)) --passes 22 --repeats 3 \
  --out embed_gpu 2>&1 | grep -v "it/s]" | tee "$OUT/embed_gpu.log"
cp benchmarks/results/embed_gpu.* "$OUT/" 2>/dev/null
$py benchmarks/train_throughput.py --gpu-only --repeats 3 --gpu-passes 23 --out train_throughput_gpu 2>&1 \
  | grep -v "it/s]" | tee "$OUT/train_gpu.log"
cp benchmarks/results/train_throughput_gpu.* "$OUT/" 2>/dev/null
ls -la "$OUT"
