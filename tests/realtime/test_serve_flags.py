"""``musetalk serve`` refuses a bad latency budget or session limit in one line, before loading anything."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("flags, message", [
    (["--max-sessions", "0"], "--max-sessions must be at least 1, got 0"),
    (["--latency-budget-ms=-5"], "--latency-budget-ms must be positive, got -5"),
    (["--max-audio-ahead-s", "0"], "--max-audio-ahead-s must be positive, got 0"),
])
def test_bad_serve_flags(tmp_path, capsys, flags, message):
    from musetalk.cli.main import main

    assert main(["serve", "--models", str(tmp_path), *flags]) != 0
    assert capsys.readouterr().err == f"musetalk: error: {message}\n"


@pytest.mark.parametrize("flags, dtype, static_batch, compile_mode", [
    (["--device", "cuda"], "float16", 16, "off"),  # dub's defaults: half precision and static shapes on CUDA
    (["--device", "cpu"], "float32", None, "off"),
    (["--device", "cuda", "--dtype", "bfloat16", "--compile", "cudagraphs", "--batch-size", "8"], "bfloat16", 8,
     "cudagraphs"),
    (["--device", "cpu", "--compile", "compile", "--batch-size", "4"], "float32", 4, "compile"),
    (["--device", "cuda", "--fp16"], "float16", 16, "off"),
])
def test_serve_runs_the_model_as_dub_does(flags, dtype, static_batch, compile_mode):
    import argparse

    import torch

    from musetalk.cli import serve
    from musetalk.realtime.backend import model_settings

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    device, resolved, accel = model_settings(serve.backend_options(parser.parse_args(["serve", *flags])))
    assert (resolved, accel.static_batch, accel.compile) == (getattr(torch, dtype), static_batch, compile_mode)
    assert device == flags[1]
