"""Fill a model folder that has a config and tokenizer but no weights with random weights.

    python benchmarks/device/random_weights.py FOLDER [--seed 0]

For timing runs on a machine the real weights cannot reach (the device tool carries 64 MiB; the
MiniLM weights alone are 91 MB): a transformer's cost per token depends on its shapes, not on
its weights' values, so the throughput is the real model's. Its vectors mean nothing.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(args.seed)
    config = AutoConfig.from_pretrained(args.folder)
    model = AutoModel.from_config(config)
    model.save_pretrained(args.folder)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.folder}: {config.model_type}, {n / 1e6:.1f}M random parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
