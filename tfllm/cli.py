"""`tfllm`: one subcommand per stage of a BERT model's life.

Stages import their modules (and tensorflow) only when they run, so `tfllm --help`
stays fast. Bad input is reported on one line with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

EXIT_BAD_INPUT = 2


def _add_config_args(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument("--config", default=default, metavar="FILE",
                        help="YAML config (default: built-in defaults%s)"
                        % (f", or {default}" if default else ""))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override one config value (repeatable)")


def _corpus_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", nargs="+", required=True, metavar="PATH",
                        help="text (blank-line separated documents), .jsonl, .csv or .tsv files")


def cmd_vocab(args: argparse.Namespace) -> int:
    from tfllm.config import CleanCorpusConfig, load_config
    from tfllm.data.stages import build_vocab

    cfg = load_config(CleanCorpusConfig, args.config, args.overrides)
    build_vocab(args.corpus, args.out, args.vocab_size, args.lowercase, cfg)
    return 0


def cmd_data_clean(args: argparse.Namespace) -> int:
    from tfllm.config import CleanCorpusConfig, load_config
    from tfllm.data.stages import clean_corpus

    cfg = load_config(CleanCorpusConfig, args.config, args.overrides)
    clean_corpus(args.corpus, args.out, cfg)
    return 0


def cmd_data_pretrain(args: argparse.Namespace) -> int:
    from tfllm.config import PretrainDataConfig, load_config
    from tfllm.data.stages import build_pretraining_data

    overrides = list(args.overrides)
    for flag, key in (("seq_len", "seq_len"), ("dupe_factor", "dupe_factor"),
                      ("masking", "masking"), ("max_predictions", "max_predictions_per_seq")):
        if getattr(args, flag) is not None:
            overrides.append(f"examples.{key}={getattr(args, flag)}")
    if args.whole_word_mask:
        overrides.append("examples.whole_word_mask=true")
    if args.no_nsp:
        overrides.append("examples.nsp=false")
    cfg = load_config(PretrainDataConfig, args.config, overrides)
    build_pretraining_data(args.corpus, args.tokenizer, args.out, cfg)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tfllm.config import load_config
    from tfllm.errors import InputError
    from tfllm.training.pretrain import PretrainConfig, pretrain

    config = Path(args.config)
    if not config.is_file():
        sizes = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs" /
                                        "pretrain").glob("*.yaml"))
        raise InputError(f"config file not found: {config} (sizes: {', '.join(sizes)})")
    cfg = load_config(PretrainConfig, config, args.overrides)
    pretrain(cfg, args.data, args.out, args.eval_data)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from tfllm.config import load_config
    from tfllm.finetune.train import FinetuneConfig, finetune

    overrides = list(args.overrides)
    for flag in ("train", "eval", "test", "format", "text_column", "text_pair_column",
                 "label_column"):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"task.{flag}={value}")
    cfg = load_config(FinetuneConfig, args.config, overrides)
    finetune(cfg, args.init, args.out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tfllm.finetune.inference import evaluate_run

    evaluate_run(args.model, args.data)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tfllm.data.readers import ReadReport, read_text
    from tfllm.finetune.inference import predict_texts

    texts = list(args.texts)
    if args.file:
        texts += [d.text for d in read_text(args.file, ReadReport(), mode="lines")]
    predict_texts(args.model, texts)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tfllm_export.stage import export_run

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    report = export_run(args.model, args.out, formats, args.eval_data, args.version)
    return 0 if report["passed"] else 1


def cmd_serve(argv: list[str]) -> int:
    from tfllm_serving.cli import main as serve_main

    return serve_main(argv)


def cmd_quickstart(args: argparse.Namespace) -> int:
    from tfllm.quickstart import run_quickstart

    return run_quickstart(args.out, tiny=args.tiny, from_minilm=args.from_minilm)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfllm",
        description="The whole life of a BERT-style model: corpus, vocab, pretraining data, "
        "pretraining, fine-tuning, export and serving.",
    )
    from tfllm import __version__

    parser.add_argument("--version", action="version", version=f"tfllm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("quickstart", help="run the whole chain on bundled defaults")
    p.add_argument("--out", default="quickstart-out", help="output folder (default: %(default)s)")
    p.add_argument("--tiny", action="store_true", help="smallest settings (used by the tests)")
    p.add_argument("--from-minilm", action="store_true",
                   help="fine-tune from the installed all-MiniLM-L6-v2 checkpoint instead")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("pretrain", help="pretrain BERT (MLM + NSP) with tf.distribute; resumes")
    p.add_argument("--config", required=True, metavar="FILE",
                   help="configs/pretrain/<size>.yaml (tiny, mini, small, medium, base)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE", help="override one config value (repeatable)")
    p.add_argument("--data", required=True, metavar="DIR", help="`tfllm data pretrain` output")
    p.add_argument("--eval-data", metavar="DIR", help="held-out pretraining data for evaluation")
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run folder; re-running the same command resumes an unfinished run")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a classifier from --init on any labelled file")
    _add_config_args(p)
    p.add_argument("--init", required=True,
                   help="none | RUN_DIR | keras-hub preset dir | Hugging Face BERT dir")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--train", metavar="FILE", help="training data (csv, tsv, jsonl)")
    p.add_argument("--eval", metavar="FILE", help="eval data (default: stratified split of train)")
    p.add_argument("--test", metavar="FILE")
    p.add_argument("--format", choices=["csv", "tsv", "jsonl"])
    p.add_argument("--text-column", help="name or index")
    p.add_argument("--text-pair-column", help="name or index (sentence-pair tasks)")
    p.add_argument("--label-column", help="name or index")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="metrics of a fine-tuned RUN_DIR on a labelled file")
    p.add_argument("--model", required=True, metavar="RUN_DIR")
    p.add_argument("--data", required=True, metavar="FILE", help="csv, tsv or jsonl with labels")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="label texts with a fine-tuned RUN_DIR (JSONL out)")
    p.add_argument("--model", required=True, metavar="RUN_DIR")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--file", metavar="FILE", help="one text per line")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="SavedModel / ONNX / TFLite artifacts with a parity gate")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="a fine-tuned RUN_DIR")
    p.add_argument("--out", required=True, metavar="REPO/NAME/VERSION",
                   help="TF Serving layout; with --version auto, REPO/NAME")
    p.add_argument("--formats", default="savedmodel,onnx,onnx-int8,tflite,tflite-dynamic",
                   help="comma-separated (default: %(default)s)")
    p.add_argument("--eval-data", metavar="FILE", help="gate data (default: the run's eval file)")
    p.add_argument("--version", help="an integer, or auto for the next free one")
    p.set_defaults(func=cmd_export)

    # Listed for --help only: main() hands `serve ...` to tfllm-serve's own parser unchanged.
    sub.add_parser("serve", help="TF Serving REST + gRPC API on onnxruntime (= tfllm-serve)")

    p = sub.add_parser("vocab", help="train a WordPiece vocab -> vocab.txt + tokenizer.json")
    _corpus_args(p)
    p.add_argument("--vocab-size", type=int, default=30522, help="default: %(default)s")
    p.add_argument("--out", required=True, metavar="DIR")
    case = p.add_mutually_exclusive_group()
    case.add_argument("--lowercase", dest="lowercase", action="store_true", default=True,
                      help="uncased vocab, accents stripped (default)")
    case.add_argument("--cased", dest="lowercase", action="store_false", help="cased vocab")
    _add_config_args(p)
    p.set_defaults(func=cmd_vocab)

    data = sub.add_parser("data", help="corpus cleaning and pretraining examples")
    data_sub = data.add_subparsers(dest="data_command", metavar="STAGE", required=True)

    p = data_sub.add_parser("clean", help="normalize, filter, dedup -> documents.jsonl + stats")
    _corpus_args(p)
    p.add_argument("--out", required=True, metavar="DIR")
    _add_config_args(p)
    p.set_defaults(func=cmd_data_clean)

    p = data_sub.add_parser("pretrain", help="MLM + NSP examples -> sharded TFRecords + stats")
    _corpus_args(p)
    p.add_argument("--tokenizer", required=True, metavar="DIR",
                   help="folder with tokenizer.json and/or vocab.txt")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--seq-len", type=int, help="tokens per example (default 128)")
    p.add_argument("--dupe-factor", type=int, help="masked copies of the corpus (default 5)")
    p.add_argument("--max-predictions", type=int, help="max_predictions_per_seq (default 20)")
    p.add_argument("--masking", choices=["static", "dynamic"], help="default static")
    p.add_argument("--whole-word-mask", action="store_true")
    p.add_argument("--no-nsp", action="store_true", help="single segments, no NSP labels")
    _add_config_args(p)
    p.set_defaults(func=cmd_data_pretrain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return cmd_serve(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    from tfllm.errors import InputError

    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except InputError as err:
        print(f"tfllm {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
