"""The file commands of the CLI: ``models``, ``classify``, ``export`` and ``bench``.

``add_parsers`` builds their sub-commands; each ``cmd_*`` takes the parsed arguments and
returns the exit status. Every input is checked (:mod:`streamclf.cli.checks`) before a
model loads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from streamclf.cli import checks
from streamclf.cli.common import BACKENDS, PRECISIONS, Deprecated, ExitCode, with_default
from streamclf.cli.flags import add_model_flags
from streamclf.errors import DataError
from streamclf.masking import mask_credentials
from streamclf.media.video import MAX_CLIPS, MAX_SAMPLES

__all__ = ["add_parsers", "cmd_bench", "cmd_classify", "cmd_export", "cmd_models"]

_SAMPLE_TYPES = ("uniform_temporal_subsample", "time_step_sample")
_BENCH_PARTS = ("model", "fast", "live", "live720")


def add_parsers(sub: Any) -> None:
    """Add ``models``, ``classify``, ``export`` and ``bench`` to ``sub``."""
    models = sub.add_parser("models", help="list the model zoo")
    models.add_argument("--json", action="store_true", help="one JSON object per model")

    classify = sub.add_parser("classify", help="classify video files")
    classify.add_argument("paths", nargs="+", metavar="PATH", help="video files")
    add_model_flags(classify)
    classify.add_argument("--num-clips", dest="clips", type=int, default=1, metavar="N",
                          help="clips per file, evenly spread, probabilities averaged "
                               "(default 1, centred)")
    # --clips is the event clips' folder of run/serve; the old spelling still works here
    classify.add_argument("--clips", dest="clips", type=int, action=Deprecated,
                          use="--num-clips N", default=1)
    classify.add_argument("--sample-type", choices=_SAMPLE_TYPES, default=None,
                          help="towhee-style sampling over the whole video instead of clips")
    classify.add_argument("--num-samples", type=int, default=None, metavar="N",
                          help="frames for uniform_temporal_subsample")
    classify.add_argument("--time-step", type=float, default=None, metavar="SECONDS",
                          help="seconds between frames for time_step_sample")
    classify.add_argument("--json", action="store_true", help="one JSON object per file")
    classify.add_argument("--allow-truncated", action="store_true",
                          help="classify what a file cut short still holds (default: a file "
                               "whose data ends before its declared length is an error)")
    classify.add_argument("--features", action="store_true", help="include the embedding")

    export = sub.add_parser("export", help="export a model to ONNX (verified against torch)")
    add_model_flags(export, ("model", "weights", "classmap"), required=("model", "weights"))
    export.add_argument("--format", choices=["onnx"], default="onnx",
                        help="only onnx for now (default onnx)")
    export.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="file to write, e.g. model.onnx")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")

    bench = sub.add_parser("bench", help="benchmark models, the pipeline and a baseline")
    bench.add_argument("--models", nargs="+", default=["x3d_xs"], metavar="MODEL",
                       help=with_default("zoo models to measure", ["x3d_xs"]))
    bench.add_argument("--backends", nargs="+", default=list(BACKENDS[1:]),
                       metavar="NAME[:PRECISION]",
                       help=with_default(f"backends ({', '.join(BACKENDS[1:])}), each with "
                                         "an optional precision", BACKENDS[1:]))
    bench.add_argument("--clip", default=None, metavar="FILE",
                       help="video (default: the bundled clip)")
    bench.add_argument("--seconds", type=float, default=20.0,
                       help="live run length (default 20)")
    bench.add_argument("--threads", type=int, default=None, metavar="N",
                       help="inference threads (default: all cores but one)")
    bench.add_argument("--parts", nargs="+", default=list(_BENCH_PARTS), choices=_BENCH_PARTS,
                       help=with_default("what to measure", _BENCH_PARTS))
    bench.add_argument("--report", default=None, metavar="JSON",
                       help="write the results here")
    bench.add_argument("--json", dest="report", action=Deprecated, use="--report JSON")


def cmd_models(args: argparse.Namespace) -> int:
    from streamclf.models import list_models

    specs = list_models()
    if args.json:
        for s in specs:
            print(json.dumps({
                "name": s.name, "frames": s.num_frames, "sampling_rate": s.sampling_rate,
                "clip_seconds": round(s.clip_duration_s, 3), "side_size": s.side_size,
                "crop_size": s.crop_size, "mean": s.mean, "std": s.std,
                "slowfast_alpha": s.slowfast_alpha, "feature_dim": s.feature_dim,
                "classes": s.num_classes, "weights_url": s.weights_url,
            }))
        return ExitCode.OK
    header = f"{'model':<24}{'frames x rate':>14}{'clip s':>8}{'side/crop':>11}{'feat':>6}  note"
    print(header)
    print("-" * len(header))
    for s in specs:
        fr = f"{s.num_frames}x{s.sampling_rate}"
        sc = f"{s.side_size}/{s.crop_size}"
        print(f"{s.name:<24}{fr:>14}{s.clip_duration_s:>8.2f}{sc:>11}{s.feature_dim:>6}  {s.note}")
    return ExitCode.OK


def _error(message: str) -> None:
    print(f"streamclf: error: {mask_credentials(message)}", file=sys.stderr, flush=True)


def cmd_classify(args: argparse.Namespace) -> int:
    """Classify each file; a bad file is one line and the others still print (exit 1)."""
    checks.check_min("--num-clips", args.clips, 1, integer=True)
    checks.check_max("--num-clips", args.clips, MAX_CLIPS, "each clip is held in memory")
    checks.check_min("--topk", args.topk, 1, integer=True)
    checks.check_max("--topk", args.topk, 1000, "the largest class list")
    checks.check_max("--num-samples", args.num_samples, MAX_SAMPLES,
                     "each frame is held in memory")
    checks.check_sampling(args.sample_type, args.num_samples, args.time_step)
    checks.check_model(args.model, args.weights, args.classmap, args.device)
    problems = [checks.file_problem(path) for path in args.paths]
    if all(problems):  # nothing to classify: no model to load
        for problem in problems:
            _error(str(problem))
        return ExitCode.ERROR
    from streamclf.offline.classify import ActionClassifier

    clf = ActionClassifier(
        args.model, args.weights, classmap=args.classmap, topk=args.topk, device=args.device,
        backend=args.backend, precision=args.precision,
    )
    status = ExitCode.OK
    for path in args.paths:
        try:
            result = clf.classify_file(
                path, clips=args.clips, sample_type=args.sample_type,
                num_samples=args.num_samples, time_step=args.time_step,
                allow_truncated=args.allow_truncated,
            )
        except DataError as exc:
            _error(str(exc))
            status = ExitCode.ERROR
            continue
        if args.json:
            obj: dict[str, object] = {
                "path": str(path), "labels": result.labels,
                "scores": [round(s, 6) for s in result.scores],
            }
            if args.features:
                obj["features"] = [round(float(x), 6) for x in result.features]
            print(json.dumps(obj), flush=True)
        else:
            pairs = zip(result.labels, result.scores, strict=True)
            tops = ", ".join(f"{lab} ({sc:.3f})" for lab, sc in pairs)
            print(f"{path}: {tops}", flush=True)
    return status


def cmd_export(args: argparse.Namespace) -> int:
    """Export on CPU, verify in onnxruntime, print the path and the graph's signature."""
    checks.check_model(args.model, args.weights, args.classmap)
    from streamclf.engine.backends.export import _check_output_path, describe_onnx, export_onnx
    from streamclf.models import get_spec, load_model

    # Before the model loads: export_onnx's own check (its message), then permissions.
    _check_output_path(Path(args.output), get_spec(args.model), write_labels=True)
    checks.check_output("--output", args.output)

    model = load_model(args.model, args.weights, classmap=args.classmap, device="cpu")
    path = export_onnx(model, Path(args.output), opset=args.opset)
    inputs, outputs = describe_onnx(path)
    size_mb = path.stat().st_size / 1e6
    print(f"{path} ({model.spec.name}, {args.format}, opset {args.opset}, {size_mb:.1f} MB)")
    for kind, infos in (("input", inputs), ("output", outputs)):
        for t in infos:
            print(f"  {kind:<7}{t.name:<10}{t.dtype:<9}[{', '.join(map(str, t.shape))}]")
    print("  scores are class probabilities (softmax already applied), not logits", flush=True)
    return ExitCode.OK


def cmd_bench(args: argparse.Namespace) -> int:
    import tempfile

    from streamclf.cli.run import default_demo_clip

    for name in args.models:
        checks.check_model(name)
    checks.check_backends(args.backends, BACKENDS, PRECISIONS)
    checks.check_min("--threads", args.threads, 1)
    checks.check_positive("--seconds", args.seconds)
    clip = Path(args.clip) if args.clip else default_demo_clip()
    problem = checks.file_problem(clip)
    if problem:
        raise DataError(problem)
    if args.report:
        checks.check_output("--report", args.report)
    from streamclf.bench import markdown_table, run_suite

    with tempfile.TemporaryDirectory(prefix="streamclf-bench-") as work:
        result = run_suite(args.models, args.backends, clip, Path(work),
                           live_seconds=args.seconds, threads=args.threads, parts=args.parts)
    rows = result["rows"]
    print(json.dumps(result["machine"]))
    for kinds, cols in (
        (("model",), ["model", "backend", "batch", "ms_per_clip", "clips_per_s"]),
        (("fast", "sequential"), ["model", "kind", "backend", "windows", "clips_per_s"]),
        (("live",), ["model", "backend", "clip", "input_fps", "clips_per_s",
                     "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "drops",
                     "cpu_percent", "rss_mb_max"]),
    ):
        selected = [r for r in rows if r["kind"] in kinds]
        if selected:
            print(markdown_table(selected, cols))
    if args.report:
        Path(args.report).write_text(json.dumps(result, indent=2) + "\n")
    return ExitCode.OK
