"""The `tfllm` entry point: fast help, no tensorflow on import, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tfllm.cli import build_parser, main


def test_help_lists_every_subcommand_fast_and_without_importing_tensorflow():
    code = (
        "import sys, contextlib, io\n"
        "import tfllm, tfllm.cli, tfllm.config\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    try:\n"
        "        tfllm.cli.main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "import json\n"
        "print(json.dumps({'help': buf.getvalue(),\n"
        "  'tf': sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))}))\n"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    result = json.loads(out.stdout)
    assert result["tf"] == []
    for command in ("quickstart", "vocab", "data"):
        assert command in result["help"]
    assert elapsed < 2.0, f"tfllm --help took {elapsed:.2f}s"


def test_every_registered_subcommand_has_help_text():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"quickstart", "vocab", "data"}
    for action in sub._choices_actions:
        assert action.help, action.dest


def test_a_missing_corpus_file_is_one_line_with_exit_2(tmp_path, capsys):
    rc = main(["vocab", "--corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "v")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and "nope.txt" in err and "not found" in err
    assert not (tmp_path / "v").exists()


def test_an_unknown_config_key_names_the_closest_valid_one(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text that is long enough\n")
    rc = main(["data", "clean", "--corpus", str(corpus), "--out", str(tmp_path / "o"),
               "--set", "dedup.near_treshold=0.5"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "dedup.near_treshold" in err and "near_threshold" in err
