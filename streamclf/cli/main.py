"""The ``streamclf`` command line.

Every user error ends as one line on stderr and a non-zero exit status; a
traceback is printed only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from streamclf import __version__
from streamclf.cli import cluster as cluster_command
from streamclf.cli import evaluate as cli_evaluate
from streamclf.cli import run as cli_run
from streamclf.cli import train as train_command
from streamclf.cli.flags import add_config_flags
from streamclf.cli.run import default_demo_clip
from streamclf.errors import DataError, StreamclfError
from streamclf.media.sources import mask_credentials

__all__ = ["build_parser", "console_main", "main"]

log = logging.getLogger("streamclf")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="x3d_xs", help="zoo model name (see `streamclf models`)")
    p.add_argument(
        "--weights", default="kinetics400",
        help="kinetics400 (download once), a checkpoint PATH, or random",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--classmap", default=None, help="JSON/text file replacing the label list")
    p.add_argument("--topk", type=int, default=5, help="labels to report (default 5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamclf", description="Real-time human action recognition on video."
    )
    parser.add_argument("--version", action="version", version=f"streamclf {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and decoder logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="log lifecycle details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="list the model zoo")
    models.add_argument("--json", action="store_true", help="one JSON object per model")

    classify = sub.add_parser("classify", help="classify video files")
    classify.add_argument("paths", nargs="+", metavar="PATH", help="video files")
    _add_model_options(classify)
    classify.add_argument(
        "--clips", type=int, default=1,
        help="clips per file, evenly spread, probabilities averaged (default 1, centred)",
    )
    classify.add_argument(
        "--sample-type", choices=["uniform_temporal_subsample", "time_step_sample"],
        default=None, help="towhee-style sampling over the whole video instead of clips",
    )
    classify.add_argument("--num-samples", type=int, default=None)
    classify.add_argument("--time-step", type=float, default=None, help="seconds")
    classify.add_argument("--backend", default="auto",
                          choices=["auto", "torch", "onnxruntime", "openvino"],
                          help="inference backend (default auto: the fastest measured here)")
    classify.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "int8"])
    classify.add_argument("--json", action="store_true", help="one JSON object per file")
    classify.add_argument("--features", action="store_true", help="include the embedding")

    run = sub.add_parser("run", help="classify a live source continuously")
    run.add_argument("--source", action="append", default=None, metavar="[ID=]SPEC",
                     help="webcam index or /dev/videoN, rtsp://, http(s)://, a file, or "
                          "synthetic; repeat for several streams (ID names one)")
    run.add_argument("--config", default=None, help="YAML run config (flags override it)")
    add_config_flags(run)
    from streamclf.cli.serve import add_serve_parser, add_web_flags

    add_web_flags(run)
    add_serve_parser(sub)

    bench = sub.add_parser("bench", help="benchmark models, the pipeline and a baseline")
    bench.add_argument("--models", nargs="+", default=["x3d_xs"])
    bench.add_argument("--backends", nargs="+", default=["torch", "onnxruntime", "openvino"])
    bench.add_argument("--clip", default=None, help="video (default: the bundled clip)")
    bench.add_argument("--seconds", type=float, default=20.0, help="live run length")
    bench.add_argument("--threads", type=int, default=None)
    bench.add_argument("--parts", nargs="+", default=["model", "fast", "live", "live720"],
                       choices=["model", "fast", "live", "live720"])
    bench.add_argument("--json", default=None, help="write the results here")

    demo = sub.add_parser("demo", help="stream the bundled demo clip through the pipeline")
    _add_model_options(demo)
    demo.add_argument("--source", default=None, help="video file (default: bundled clip)")
    demo.add_argument("--output", default="demo-overlay.mp4", help="overlay video path")
    demo.add_argument("--events", default="demo-events.jsonl", help="event log path")

    export = sub.add_parser("export", help="export a model to ONNX (verified against torch)")
    export.add_argument("--model", required=True, help="zoo model name (see `streamclf models`)")
    export.add_argument("--weights", required=True,
                        help="kinetics400 (download once), a checkpoint PATH, or random")
    export.add_argument("--format", choices=["onnx"], default="onnx", help="only onnx for now")
    export.add_argument("-o", "--output", required=True, help="file to write, e.g. model.onnx")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    export.add_argument("--classmap", default=None, help="JSON/text file replacing the label list")
    cli_evaluate.add_parser(sub)
    cluster_command.add_parser(sub)
    train_command.add_parser(sub)
    return parser


class _MaskingFormatter(logging.Formatter):
    """Hides URL credentials in every log line, whichever module wrote it (defence in depth:
    the modules mask what they log, this catches what a library or an exception text adds)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_credentials(super().format(record))


def _configure_logging(verbose: bool, debug: bool) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler()
    handler.setFormatter(_MaskingFormatter("streamclf: %(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if not debug:
        # FFmpeg prints decoder complaints straight to stderr; streamclf reports
        # corrupt input itself in one line. --debug keeps FFmpeg's own messages.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def _cmd_models(args: argparse.Namespace) -> int:
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
        return EXIT_OK
    header = f"{'model':<24}{'frames x rate':>14}{'clip s':>8}{'side/crop':>11}{'feat':>6}  note"
    print(header)
    print("-" * len(header))
    for s in specs:
        fr = f"{s.num_frames}x{s.sampling_rate}"
        sc = f"{s.side_size}/{s.crop_size}"
        print(f"{s.name:<24}{fr:>14}{s.clip_duration_s:>8.2f}{sc:>11}{s.feature_dim:>6}  {s.note}")
    return EXIT_OK


def _cmd_classify(args: argparse.Namespace) -> int:
    from streamclf.offline.classify import ActionClassifier

    if args.clips < 1:
        raise StreamclfError(f"--clips must be >= 1, got {args.clips}")
    clf = ActionClassifier(
        args.model, args.weights, classmap=args.classmap, topk=args.topk, device=args.device,
        backend=args.backend, precision=args.precision,
    )
    status = EXIT_OK
    for path in args.paths:
        try:
            result = clf.classify_file(
                path, clips=args.clips, sample_type=args.sample_type,
                num_samples=args.num_samples, time_step=args.time_step,
            )
        except (DataError, ValueError) as exc:
            print(f"streamclf: error: {mask_credentials(str(exc))}", file=sys.stderr, flush=True)
            status = EXIT_ERROR
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


def _cmd_export(args: argparse.Namespace) -> int:
    """Export on CPU, verify in onnxruntime, print the path and the graph's signature."""
    from streamclf.engine.backends.export import describe_onnx, export_onnx
    from streamclf.models import load_model

    model = load_model(args.model, args.weights, classmap=args.classmap, device="cpu")
    path = export_onnx(model, Path(args.output), opset=args.opset)
    inputs, outputs = describe_onnx(path)
    size_mb = path.stat().st_size / 1e6
    print(f"{path} ({model.spec.name}, {args.format}, opset {args.opset}, {size_mb:.1f} MB)")
    for kind, infos in (("input", inputs), ("output", outputs)):
        for t in infos:
            print(f"  {kind:<7}{t.name:<10}{t.dtype:<9}[{', '.join(map(str, t.shape))}]")
    print("  scores are class probabilities (softmax already applied), not logits", flush=True)
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    import tempfile

    from streamclf.bench import markdown_table, run_suite

    clip = Path(args.clip) if args.clip else default_demo_clip()
    if not clip.is_file():
        raise DataError(f"{clip}: file not found")
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
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return EXIT_OK


_COMMANDS = {"bench": _cmd_bench, "models": _cmd_models, "classify": _cmd_classify,
             "run": cli_run.cmd_run, "demo": cli_run.cmd_demo, "export": _cmd_export,
             "serve": cli_run.cmd_serve,
             "evaluate": cli_evaluate.run, "cluster": cluster_command.run,
             "train": train_command.run}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.debug)
    try:
        return _COMMANDS[args.command](args)
    except StreamclfError as exc:
        if args.debug:
            raise
        print(f"streamclf: error: {mask_credentials(str(exc))}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("streamclf: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: still one line unless --debug
        if args.debug:
            raise
        print(f"streamclf: internal error: {type(exc).__name__}: {mask_credentials(str(exc))} "
              "(rerun with --debug for the traceback)", file=sys.stderr, flush=True)
        return EXIT_ERROR


def console_main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry: run :func:`main`, then leave at once.

    Every file the command wrote is closed and every thread joined by then; skipping
    the interpreter's teardown (over a second with torch loaded) keeps Ctrl-C/SIGTERM
    shutdown of ``streamclf run`` well inside its 2 s budget.
    """
    status = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    console_main()
