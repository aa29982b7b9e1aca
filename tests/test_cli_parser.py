"""The command line's parser: every flag documented with its default, one meaning per flag
name, the README's usage blocks in step with it, "did you mean", the shared exit codes and
signal helper, and the set-up lines of a first ``--backend auto`` run."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamclf.cli.common import BACKENDS, ExitCode, Parser
from streamclf.cli.main import build_parser, main
from streamclf.config import RunConfig
from streamclf.signals import keep_handlers, stop_on_signals
from tests.conftest import LOCAL_DATA, REPO

SETUP_PREFIXES = ("streamclf: backend auto: ", "streamclf: exported ", "streamclf: openvino: ")


def _subcommands(parser: argparse.ArgumentParser,
                 path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                               argparse.ArgumentParser]]:
    """``(("cluster", "run"), parser)`` for every (sub-)sub-command, the root first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _subcommands(child, (*path, name))


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.help is not argparse.SUPPRESS
            and not isinstance(a, argparse._SubParsersAction)]


def _mentions(text: str, default: object) -> bool:
    """``text`` names ``default`` (numbers compared as numbers: 1e-3 is 0.001)."""
    if isinstance(default, (list, tuple)):
        return all(_mentions(text, d) for d in default)
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        numbers = re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)
        return any(float(n) == float(default) for n in numbers)
    return str(default).lower() in text.lower()


PARSER = build_parser()
COMMANDS = list(_subcommands(PARSER))


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=[" ".join(p) or "streamclf"
                                                            for p, _ in COMMANDS])
def test_every_option_has_help_that_shows_its_default(
    path: tuple[str, ...], parser: argparse.ArgumentParser,
) -> None:
    for action in _visible(parser):
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{' '.join(path)} {name}: no help"
        assert action.help.count("(default") <= 1, f"{name}: {action.help}"
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS:
            continue
        assert "default" in action.help, f"{' '.join(path)} {name}: {action.help}"
        if not isinstance(default, bool):
            assert _mentions(action.help, default), f"{name}: {action.help} ({default!r})"


def test_one_meaning_per_flag() -> None:
    """``--backend`` is the engine's list with ``auto`` the default wherever a model runs;
    ``--workers`` means decoding threads (train's processes are ``--loader-processes``);
    ``--json`` is a switch, never a path."""
    backend_field = {f.name: f for f in dataclasses.fields(RunConfig)}["backend"]
    assert tuple(backend_field.metadata["choices"]) == BACKENDS
    seen = {}
    for path, parser in COMMANDS:
        for action in _visible(parser):
            if "--backend" in action.option_strings:
                assert tuple(action.choices or ()) == BACKENDS, path
                assert action.default in ("auto", None), path  # None: the config's auto
                seen[path] = action
            if "--json" in action.option_strings:
                assert action.nargs == 0, f"{path}: --json takes a value"
            if "--workers" in action.option_strings:
                assert "thread" in (action.help or ""), path
    assert {p[0] for p in seen} >= {"classify", "evaluate", "run", "serve", "demo"}
    train = PARSER.parse_args(["train", "d", "--model", "x3d_xs", "--loader-processes", "0"])
    assert train.loader_processes == 0


def test_evaluate_and_train_take_the_data_the_same_way() -> None:
    for argv in (["evaluate", "d"], ["train", "d", "--model", "x3d_xs"]):
        assert PARSER.parse_args(argv).data == "d"
        assert PARSER.parse_args([argv[0], "--data", "d", *argv[2:]]).data_flag == "d"


def test_serve_and_run_take_the_web_address_the_same_way() -> None:
    assert PARSER.parse_args(["serve"]).web == "127.0.0.1:8080"
    assert PARSER.parse_args(["serve", "--web", "0.0.0.0:9000"]).web == "0.0.0.0:9000"
    assert PARSER.parse_args(["run", "--web", "0.0.0.0:9000"]).web == "0.0.0.0:9000"
    assert PARSER.parse_args(["run"]).web is None


@pytest.mark.parametrize(("argv", "dest", "value", "use"), [
    (["serve", "--port", "0"], "port", 0, "--web HOST:PORT"),
    (["serve", "--host", "0.0.0.0"], "host", "0.0.0.0", "--web HOST:PORT"),
    (["train", "d", "--model", "x3d_xs", "--workers", "2"], "loader_processes", 2,
     "--loader-processes"),
    (["bench", "--json", "r.json"], "report", "r.json", "--report"),
    # --clips is run's and serve's folder of alert clips; the count is --num-clips
    (["classify", "a.mp4", "--clips", "3"], "clips", 3, "--num-clips"),
    (["evaluate", "d", "--clips", "2"], "clips", 2, "--num-clips"),
])
def test_old_spellings_still_work_with_a_warning(
    argv: list[str], dest: str, value: object, use: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert getattr(build_parser().parse_args(argv), dest) == value
    err = capsys.readouterr().err
    assert err.startswith("streamclf: warning: ") and "deprecated" in err and use in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(("argv", "needle"), [
    (["classify", "a.mp4", "--topp", "3"], "unrecognized arguments: --topp 3; did you mean "
                                           "--topk?"),
    (["clasify", "a.mp4"], "invalid choice: 'clasify'"),
    (["classify", "a.mp4", "--backend", "onnx"], "did you mean onnxruntime?"),
    (["run", "--treshold", "0.5"], "did you mean --threshold?"),
    (["cluster", "rn"], "did you mean run?"),
    (["evaluate", "d", "--wrokers", "2"], "did you mean --workers?"),
])
def test_misspelled_flags_and_commands_get_a_suggestion(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(argv) == ExitCode.USAGE == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err  # one line, no usage block
    if argv[0] == "clasify":
        assert "did you mean classify?" in err


def test_usage_errors_name_the_command_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--model", "x3d_xs"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("streamclf export: error: the following arguments are required")
    assert err.count("\n") == 1
    assert main(["--help"]) == ExitCode.OK
    assert "usage: streamclf" in capsys.readouterr().out


# -- README -------------------------------------------------------------------------------
def _readme_commands() -> list[tuple[tuple[str, ...], str]]:
    """``(command path, text)`` for each ``streamclf ...`` line of the README's shell and
    usage blocks, with its indented continuation lines."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    names = {p: parser for p, parser in COMMANDS}
    found: list[tuple[tuple[str, ...], str | None]] = []
    for lang, body in blocks:
        if lang not in ("", "bash", "sh"):
            continue
        for line in body.splitlines():
            last = found[-1][1] if found else None
            if last is not None and line[:1].isspace():
                found[-1] = (found[-1][0], f"{last} {line}")
                continue
            match = re.search(r"(?:^|\s)streamclf(?=\s|$)((?:\s+[a-z][a-z-]*)*)", line)
            if not match:
                found.append(((), None))  # ends a continuation
                continue
            words = match.group(1).split()
            path: tuple[str, ...] = ()
            for word in words:
                if (*path, word) in names:
                    path = (*path, word)
            found.append((path, line[match.start():]))
    return [(p, t) for p, t in found if t is not None]


def test_readme_usage_matches_the_parser() -> None:
    commands = _readme_commands()
    assert len(commands) > 20
    names = dict(COMMANDS)
    for path, text in commands:
        parser = names[path]
        known = {s for a in _visible(parser) for s in a.option_strings}
        text = text.split("#", 1)[0]  # a shell comment
        for flag in re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", text):
            if flag.startswith("--") or len(flag) == 2:
                assert flag in known, f"README: `streamclf {' '.join(path)}` has no {flag}"
    documented = {path for path, _ in commands}
    leaves = {p for p, parser in COMMANDS
              if p and not any(isinstance(a, argparse._SubParsersAction)
                               for a in parser._actions)}
    assert leaves <= documented, f"not in the README: {sorted(leaves - documented)}"


# -- exit codes and signals ---------------------------------------------------------------
def test_one_exit_code_table() -> None:
    assert (ExitCode.OK, ExitCode.ERROR, ExitCode.USAGE, ExitCode.INTERRUPTED) == (0, 1, 2, 130)
    for path in (REPO / "streamclf").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"^EXIT_\w+\s*[,=]", source, flags=re.M), path.name
        if path != REPO / "streamclf" / "signals.py":  # the one signal helper
            assert "signal.signal(" not in source, f"{path.name} installs handlers itself"


def test_stop_on_signals_sets_the_event_and_restores_the_handlers() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    called: list[str] = []
    with stop_on_signals(on_stop=lambda: called.append("stop"),
                         on_hangup=lambda: called.append("hup")) as stop:
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
    assert called == ["hup", "stop"]
    assert {s: signal.getsignal(s) for s in before} == before
    with keep_handlers():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]


def test_signal_helpers_do_nothing_off_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGINT)
    errors: list[BaseException] = []

    def body() -> None:
        try:
            with stop_on_signals() as stop, keep_handlers():
                assert not stop.is_set()
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(5)
    assert errors == [] and signal.getsignal(signal.SIGINT) is before


def test_signal_helper_imports_nothing_of_the_cli() -> None:
    code = ("import sys, streamclf.signals; "
            "print(sorted(m for m in sys.modules if m.startswith('streamclf.cli')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_the_parser_class_is_used_for_every_sub_command() -> None:
    assert all(isinstance(parser, Parser) for _, parser in COMMANDS)


# -- set-up lines of a first run ----------------------------------------------------------
def test_setup_lines_are_shown_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from streamclf.cli.main import _configure_logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        _configure_logging(verbose=False, debug=False)
        logging.getLogger("streamclf.setup").info("exported %s in %.1f s", "x3d_xs", 1.25)
        logging.getLogger("streamclf.live").info("not shown without -v")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert capsys.readouterr().err == "streamclf: exported x3d_xs in 1.2 s\n"


@pytest.mark.slow
def test_first_auto_run_says_what_it_does(tmp_path: Path) -> None:
    """A fresh cache: ``--backend auto`` times each backend (exporting and converting as
    needed), one line each with its time; the second run uses the cached choice, silently."""
    env = {**os.environ, "STREAMCLF_CACHE": str(tmp_path / "cache")}
    argv = [sys.executable, "-m", "streamclf", "classify", str(LOCAL_DATA / "ta_chi.mp4"),
            "--weights", "random", "--device", "cpu", "--backend", "auto", "--json"]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO,
                           env=env, check=False)
    assert first.returncode == 0, first.stderr
    lines = [ln for ln in first.stderr.splitlines() if ln.startswith(SETUP_PREFIXES)]
    assert lines[0].startswith("streamclf: backend auto: first run of x3d_xs here: timing ")
    assert re.search(r"backend auto: torch: \d+ ms per clip \(set up and timed in [\d.]+ s\)",
                     first.stderr), first.stderr
    assert re.search(r"backend auto: \w+ is the fastest \(all timed in [\d.]+ s\)",
                     first.stderr), first.stderr
    if "onnxruntime: " in first.stderr and "unavailable" not in first.stderr:
        assert re.search(r"exported x3d_xs to ONNX in [\d.]+ s", first.stderr), first.stderr
    second = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO,
                            env=env, check=False)
    assert second.returncode == 0, second.stderr
    assert not [ln for ln in second.stderr.splitlines() if ln.startswith(SETUP_PREFIXES)]
