#!/usr/bin/env python3
"""model-layers.py SRC.train.json L OUTDIR: the same compiled library as a model of L
layers (num_layers and param_count of the manifest rewritten, the libraries
copied beside it): sweeps of depth without recompiling (bench/grad-growth.sh)."""
import json, os, shutil, sys
src, L, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
d = json.load(open(src)); c = d['config']
per = (c['param_count'] - c['vocab_size'] * c['hidden_dim'] - c['hidden_dim']) // c['num_layers']
c['num_layers'] = L; c['param_count'] = c['vocab_size'] * c['hidden_dim'] + c['hidden_dim'] + L * per
os.makedirs(out, exist_ok=True)
for k in ('library', 'gpu_library'):
    if k in d: shutil.copy(os.path.join(os.path.dirname(src), d[k]), out)
json.dump(d, open(os.path.join(out, os.path.basename(src)), 'w'))
