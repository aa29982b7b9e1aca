"""``streamclf train``: the parser and the handler (registered in :mod:`streamclf.cli.main`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamclf.cli import checks
from streamclf.cli.common import Deprecated, ExitCode, add_data_argument, resolve_data
from streamclf.cli.flags import add_model_flags

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command to ``sub``."""
    p = sub.add_parser(
        "train", help="fine-tune a zoo model on your own classes",
        description="Fine-tune a zoo model on a labelled video dataset. Writes OUT/best.* and "
                    "OUT/last.* (safetensors + JSON sidecar), usable as --weights anywhere.",
    )
    add_data_argument(p, "train/<class>/ + val/<class>/ folders, a path,label CSV, a UCF101, "
                         "HMDB51 or Jester folder, or a Jester id;label CSV")
    add_model_flags(p, ("model", "weights", "device"), required=("model",),
                    helps={"weights": "backbone: kinetics400 (downloaded once), random, or a "
                                      "checkpoint PATH"})
    p.add_argument("--epochs", type=int, default=10, metavar="N",
                   help="training epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="clips per optimiser step (default 8)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="AdamW peak learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=0.05,
                   help="AdamW weight decay (default 0.05)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, metavar="E",
                   help="linear warmup length in epochs (default 1)")
    p.add_argument("--step-epochs", type=int, nargs="+", default=None, metavar="E",
                   help="epochs after which the learning rate is multiplied by 0.1 "
                        "(default: at 70%% and 90%% of --epochs)")
    p.add_argument("--freeze-backbone-epochs", type=int, default=0, metavar="N",
                   help="train only the new head for the first N epochs (default 0)")
    p.add_argument("--label-smoothing", type=float, default=0.0, metavar="F",
                   help="cross-entropy label smoothing (default 0)")
    p.add_argument("--val-split", type=float, default=0.1, metavar="F",
                   help="share of each class held out when the data has no validation part "
                        "(default 0.1)")
    p.add_argument("--split", type=int, default=1, metavar="N",
                   help="UCF101/HMDB51 official split, 1-3 (default 1)")
    p.add_argument("--crop-size", type=int, default=None, metavar="N",
                   help="train at this crop instead of the model's (faster when smaller); "
                        "recorded in the checkpoint, inference uses it too")
    p.add_argument("--precise-bn", type=int, default=20, metavar="BATCHES",
                   help="re-estimate batch-norm statistics on up to this many training "
                        "batches before each validation (default 20; 0: off)")
    p.add_argument("--loader-processes", type=int, default=None, metavar="N",
                   help="data loading processes (default: cores - 1, at most 4; 0: load in "
                        "the training process)")
    p.add_argument("--workers", dest="loader_processes", type=int, action=Deprecated,
                   use="--loader-processes N")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-amp", dest="amp", action="store_false",
                   help="no mixed precision on CUDA (default: mixed precision on CUDA; never "
                        "used on CPU)")
    p.add_argument("--out", default="runs/train", metavar="DIR",
                   help="output folder (default runs/train)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Validate the options, read the data, train; returns the exit status."""
    from streamclf.models.registry import get_spec
    from streamclf.train.data import load_data
    from streamclf.train.recipe import TrainConfig, default_workers

    resolve_data(args)
    spec = get_spec(args.model)  # an unknown model fails before any data is read
    checks.check_min("--split", args.split, 1, integer=True)
    checks.check_min("--loader-processes", args.loader_processes, 0, integer=True)
    checks.check_model(args.model, args.weights, device=args.device)
    checks.check_output_dir("--out", args.out)
    config = TrainConfig(
        model=spec.name, out=Path(args.out), weights=args.weights, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        step_epochs=tuple(args.step_epochs) if args.step_epochs is not None else None,
        freeze_backbone_epochs=args.freeze_backbone_epochs,
        label_smoothing=args.label_smoothing, seed=args.seed, device=args.device,
        workers=default_workers() if args.loader_processes is None else args.loader_processes,
        crop_size=args.crop_size, amp=args.amp, precise_bn=args.precise_bn,
        resume=args.resume,
    )
    data = load_data(args.data, val_split=args.val_split, seed=args.seed, split=args.split)
    print(f"streamclf: {data.format} dataset {args.data}: {len(data.labels)} classes, "
          f"{len(data.train)} training and {len(data.val)} validation clips; "
          f"{spec.name} from {config.weights} -> {config.out}", file=sys.stderr, flush=True)

    from streamclf.train.fit import fit

    result = fit(config, data, report=lambda line: print(line, flush=True),
                 bar_stream=None if args.quiet else sys.stderr)
    print(f"best: {result.best} (epoch {result.best_epoch}, val top-1 "
          f"{result.best_top1:.3f}); last: {result.last}; {result.steps} steps in "
          f"{result.seconds:.1f} s", flush=True)
    return ExitCode.OK
