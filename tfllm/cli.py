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
    from tfllm.config import load_config
    from tfllm.data.stages import CleanCorpusConfig, build_vocab

    cfg = load_config(CleanCorpusConfig, args.config, args.overrides)
    build_vocab(args.corpus, args.out, args.vocab_size, args.lowercase, cfg)
    return 0


def cmd_data_clean(args: argparse.Namespace) -> int:
    from tfllm.config import load_config
    from tfllm.data.stages import CleanCorpusConfig, clean_corpus

    cfg = load_config(CleanCorpusConfig, args.config, args.overrides)
    clean_corpus(args.corpus, args.out, cfg)
    return 0


def cmd_data_pretrain(args: argparse.Namespace) -> int:
    from tfllm.config import load_config
    from tfllm.data.stages import PretrainDataConfig, build_pretraining_data

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
    from tfllm.training.pretrain import PretrainConfig, pretrain, pretraining_heads

    overrides = list(args.overrides)
    if args.config is None and not args.init:
        raise InputError("--config is needed without --init (the model's shape comes from one)")
    if args.config is not None and not Path(args.config).is_file():
        sizes = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs" /
                                        "pretrain").glob("*.yaml"))
        raise InputError(f"config file not found: {args.config} (sizes: {', '.join(sizes)})")
    if args.init and args.config is None and not any(
            o.replace(" ", "").startswith("model.nsp=") for o in overrides):
        # continued pretraining keeps NSP only where the init was trained with it
        overrides.append(f"model.nsp={str('nsp' in pretraining_heads(args.init)).lower()}")
    cfg = load_config(PretrainConfig, args.config, overrides)
    pretrain(cfg, args.data, args.out, args.eval_data, init=args.init)
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


def cmd_continual(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tfllm.config import load_config
    from tfllm.continual.protocol import load_protocol
    from tfllm.continual.train import run_continual
    from tfllm.errors import InputError
    from tfllm.finetune.train import FinetuneConfig

    if args.feedback:
        from tfllm.continual.feedback import train_from_feedback

        if args.config or args.method:
            raise InputError("--feedback trains from --init's own config: no --config/--method")
        if not (Path(args.init) / "config.yaml").is_file():
            raise InputError(f"--feedback needs --init to be a fine-tuned RUN_DIR: "
                             f"{args.init} has no config.yaml")
        cfg = load_config(FinetuneConfig, Path(args.init) / "config.yaml", args.overrides)
        train_from_feedback(args.feedback, args.init, args.out, cfg, args.replay_rows,
                            args.model_name)
        return 0
    if not args.config:
        raise InputError("--config (a protocol) is needed without --feedback")
    overrides = list(args.overrides) + ([f"method.name={args.method}"] if args.method else [])
    run_continual(load_protocol(args.config, overrides), args.init, args.out,
                  protocol=args.config)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from tfllm.compression.prune import PruneConfig, prune

    prune(args.model, args.out, PruneConfig(
        ffn_keep=args.ffn_keep, heads_keep=args.heads_keep, layers=args.layers,
        sparsity=args.sparsity, distill=args.distill,
        importance_examples=args.importance_examples), args.overrides)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tfllm.finetune.inference import evaluate_run

    evaluate_run(args.model, args.data, decoding=args.decoding)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import json
    import sys

    from tfllm.batch.exported import ExportedModel, exported_version
    from tfllm.data.readers import ReadReport, read_text
    from tfllm.errors import InputError

    texts = list(args.texts)
    if args.file:
        texts += [d.text for d in read_text(args.file, ReadReport(), mode="lines")]
    if exported_version(args.model) is None:
        from tfllm.finetune.inference import predict_texts

        predict_texts(args.model, texts)
        return 0
    if not texts:
        raise InputError("no texts to predict (give TEXT arguments or --file)")
    model = ExportedModel(args.model, args.artifact)
    for start in range(0, len(texts), 64):
        chunk = texts[start:start + 64]
        for text, row in zip(chunk, model.rows(chunk), strict=True):
            sys.stdout.write(json.dumps({"text": text, **row}, ensure_ascii=False) + "\n")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    import json

    from tfllm.errors import InputError

    try:
        from tfllm.batch.pipeline import BatchConfig, run_batch
    except ModuleNotFoundError as err:
        if err.name != "apache_beam" and not str(err.name).startswith("apache_beam."):
            raise
        raise InputError("tfllm batch needs Apache Beam: pip install -e '.[batch]' in an "
                         "environment of its own (apache-beam needs protobuf < 7, the serving "
                         "extra's gRPC protobuf >= 7; `make batch-env` makes .venv-batch)"
                         ) from None

    beam_args = [a for a in args.beam_args if a != "--"]
    if not any(a.startswith("--runner") for a in beam_args):
        beam_args.insert(0, f"--runner={args.runner}")
    result = run_batch(BatchConfig(
        model=args.model, inputs=args.input, output=args.output, task=args.task,
        text_column=args.text_column, format=args.format, artifact=args.artifact,
        batch_size=args.batch_size, intra_op_threads=args.intra_op_threads,
        pipeline_args=beam_args))
    print(json.dumps(result))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from tfllm.embeddings.embed import embed_file

    embed_file(args.model, args.input, args.out, args.text_column, args.batch_size, args.max_len,
               fmt=args.format)
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from tfllm.embeddings.index import IndexConfig, build_index

    cfg = IndexConfig(args.model, args.artifact, "hnsw" if args.approximate else "exact",
                      max_len=args.max_len, batch_size=args.batch_size)
    build_index(args.input, args.out, cfg, args.id_column, args.text_column, args.format,
                embeddings=args.embeddings)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    import json

    from tfllm.embeddings.index import SearchIndex, build_app
    from tfllm.errors import InputError

    if not args.serve and (not args.queries or args.k < 1):
        raise InputError("give one or more QUERY texts and --k >= 1 (or --serve)")
    index = SearchIndex(args.index, args.model)
    if args.serve:
        import uvicorn

        uvicorn.run(build_app(index), host=args.host, port=args.port, log_level="warning")
        return 0
    for query, hits in zip(args.queries, index.search(args.queries, args.k), strict=True):
        print(json.dumps({"query": query, "results": hits}, ensure_ascii=False))
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tfllm.apps.recommend import build_app, load_recommender, recommend_report

    if not args.serve or not (Path(args.report) / "recommend_report.json").is_file():
        report = recommend_report(args.ratings, args.items, args.tags, args.model, args.report,
                                  args.seed, args.min_cold_hr)
        print(json.dumps({"hybrid": report["hybrid"], "methods": report["methods"]}))
    if args.serve:
        import uvicorn

        app = build_app(load_recommender(args.ratings, args.items, args.report))
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tfllm_export.stage import export_run

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    report = export_run(args.model, args.out, formats, args.eval_data, args.version,
                        calibration_data=args.calibration_data, ort_fusion=args.ort_fusion,
                        task=args.task, regression_data=args.regression_data,
                        max_regression_pts=args.max_regression)
    return 0 if report["passed"] else 1


def cmd_serve(argv: list[str]) -> int:
    from tfllm_serving.cli import main as serve_main

    return serve_main(argv)


def _classifier(args: argparse.Namespace):
    from tfllm.apps.classify import load_classifier

    return load_classifier(args.model, args.serving_url, args.labels, args.auth_token_file)


def cmd_monitor(args: argparse.Namespace) -> int:
    from tfllm.apps.monitor import LineSource, MonitorConfig, parse_duration, run_monitor

    cfg = MonitorConfig(
        window=parse_duration(args.window), baseline=parse_duration(args.baseline),
        threshold=args.threshold, z=args.z, min_count=args.min_count,
        cooldown=parse_duration(args.cooldown), negative_label=args.negative_label,
        text_field=args.text_field, time_field=args.time_field, entity_field=args.entity_field)
    source = LineSource(args.input, follow=args.follow, idle_exit=args.idle_exit)
    run_monitor(source, _classifier(args), cfg, args.format, args.alerts, args.webhook, args.plot)
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    import json

    from tfllm.apps.route import build_app, load_route_table, route_file
    from tfllm.errors import InputError

    classifier = _classifier(args)
    table = load_route_table(args.routes, classifier.labels, args.threshold)
    if args.serve:
        import uvicorn

        uvicorn.run(build_app(classifier, table), host=args.host, port=args.port,
                    log_level="warning")
        return 0
    if not args.input or not args.out:
        raise InputError("batch mode needs --input FILE and --out FILE.jsonl (or use --serve)")
    report = route_file(classifier, table, args.input, args.out, args.text_column,
                        args.label_column, args.report)
    if report is not None:
        print(json.dumps({k: v for k, v in report.items() if k != "sweep"}))
    return 0


def _classifier_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", metavar="REPO/NAME[/VERSION]",
                       help="an exported model folder (ONNX; the latest version if none given)")
    where.add_argument("--serving-url", metavar="URL",
                       help="TF Serving REST model URL, e.g. http://127.0.0.1:8501/v1/models/NAME")
    parser.add_argument("--labels", metavar="labels.json",
                        help="label names for a TF Serving URL (tfllm-serve reports its own)")
    parser.add_argument("--auth-token-file", metavar="FILE", help="bearer token for the URL")


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

    p = sub.add_parser("pretrain", help="pretrain BERT (MLM + NSP) with tf.distribute, from "
                       "scratch or from --init; resumes")
    p.add_argument("--config", metavar="FILE",
                   help="configs/pretrain/<size>.yaml (tiny, mini, small, medium, base); optional "
                        "with --init (then its optimizer and train sections and model.nsp "
                        "count; the shape and dropout are the init's)")
    p.add_argument("--init", metavar="INIT",
                   help="continue from a checkpoint: Hugging Face BERT folder, keras-hub preset "
                        "or RUN_DIR (its shape and vocab; make --data with --tokenizer INIT)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE", help="override one config value (repeatable)")
    p.add_argument("--data", required=True, metavar="DIR", help="`tfllm data pretrain` output")
    p.add_argument("--eval-data", metavar="DIR", help="held-out pretraining data for evaluation")
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run folder; re-running the same command resumes an unfinished run")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a classifier or NER tagger from --init on any "
                       "labelled file")
    _add_config_args(p)
    p.add_argument("--init", required=True,
                   help="none | RUN_DIR | keras-hub preset dir | Hugging Face BERT dir")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--train", metavar="FILE", help="training data (csv, tsv, jsonl)")
    p.add_argument("--eval", metavar="FILE", help="eval data (default: stratified split of train)")
    p.add_argument("--test", metavar="FILE")
    p.add_argument("--format", choices=["csv", "tsv", "jsonl", "conll"],
                   help="default: from the extension (.txt/.conll = CoNLL for NER)")
    p.add_argument("--text-column", help="name or index")
    p.add_argument("--text-pair-column", help="name or index (sentence-pair tasks)")
    p.add_argument("--label-column", help="name or index")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("continual", help="one model through a sequence of tasks, forgetting "
                       "measured (accuracy matrix, BWT, forgetting, FWT)")
    p.add_argument("--config", metavar="FILE",
                   help="a protocol: configs/continual/sentiment.yaml, banking77.yaml")
    p.add_argument("--feedback", metavar="FILE",
                   help="instead of a protocol: train the next version of the --init RUN_DIR "
                        "from a server's feedback.jsonl + replay of its own training rows")
    p.add_argument("--replay-rows", type=int, default=1000, metavar="N",
                   help="--feedback: the run's training rows mixed in (default 1000)")
    p.add_argument("--model-name", metavar="NAME",
                   help="--feedback: only this served model's records (default: all)")
    p.add_argument("--init", required=True,
                   help="none | RUN_DIR | keras-hub preset dir | Hugging Face BERT dir")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="continual.json, continual.png and a RUN_DIR per stage (--feedback: "
                        "the new RUN_DIR)")
    p.add_argument("--method", choices=["naive", "replay", "l2sp", "ewc", "adapters", "joint"],
                   help="default: the protocol's method.name (naive)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE", help="override a protocol value")
    p.set_defaults(func=cmd_continual)

    p = sub.add_parser("prune", help="a smaller model from a fine-tuned run (heads, neurons, "
                       "layers; or magnitude sparsity), fine-tuned back on its data")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="a fine-tuned RUN_DIR")
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="the pruned run; re-running the same command resumes its recovery")
    p.add_argument("--ffn-keep", type=float, default=1.0, metavar="SHARE",
                   help="share of feed-forward neurons kept in every layer (default 1.0)")
    p.add_argument("--heads-keep", type=int, metavar="N", help="attention heads kept per layer")
    p.add_argument("--layers", type=int, metavar="N", help="encoder layers kept")
    p.add_argument("--sparsity", type=float, default=0.0, metavar="S",
                   help="unstructured: zero the smallest S of each encoder matrix (smaller "
                        "compressed files, no speed from dense kernels)")
    p.add_argument("--distill", action="store_true",
                   help="recovery also learns the unpruned run's logits (method.distill_from)")
    p.add_argument("--importance-examples", type=int, default=1024, metavar="N",
                   help="training rows importance is measured on (default 1024)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE",
                   help="override the run's config for recovery (e.g. train.epochs=1)")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("evaluate", help="metrics of a fine-tuned RUN_DIR on a labelled file")
    p.add_argument("--model", required=True, metavar="RUN_DIR")
    p.add_argument("--data", required=True, metavar="FILE",
                   help="csv, tsv or jsonl with labels; CoNLL for NER runs")
    p.add_argument("--decoding", choices=("bio", "argmax"),
                   help="NER tags: BIO-constrained or per-word argmax (default: the run's)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="label texts with a fine-tuned RUN_DIR or an export "
                                       "(JSONL out)")
    p.add_argument("--model", required=True, metavar="RUN_DIR|REPO/NAME[/VERSION]",
                   help="a RUN_DIR (Keras) or an exported model (onnxruntime, no TensorFlow)")
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--file", metavar="FILE", help="one text per line")
    p.add_argument("--artifact", default="onnx", help="an export's ONNX build (e.g. onnx-int8)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("batch", help="an exported model over sharded files on Apache Beam "
                                     "(the batch extra)")
    p.add_argument("--model", required=True, metavar="REPO/NAME[/VERSION]")
    p.add_argument("--input", required=True, metavar="GLOB", help="JSONL/CSV/TSV shards")
    p.add_argument("--output", required=True, metavar="PREFIX",
                   help="PREFIX-predictions-*.jsonl or PREFIX-embeddings-*.npy/.jsonl, and "
                        "PREFIX-dead-letter-*.jsonl")
    p.add_argument("--task", choices=("predict", "embed"), default="predict")
    p.add_argument("--runner", default="DirectRunner",
                   help="Beam runner (DataflowRunner, FlinkRunner, SparkRunner, ...)")
    p.add_argument("--text-column", help="column name or index (JSONL default: text)")
    p.add_argument("--format", choices=("csv", "tsv", "jsonl"), help="default: from extensions")
    p.add_argument("--artifact", default="onnx", help="ONNX build of the export")
    p.add_argument("--batch-size", type=int, default=64, help="largest inference batch")
    p.add_argument("--intra-op-threads", type=int, default=0,
                   help="onnxruntime threads per worker (default: its own choice, all cores)")
    p.add_argument("beam_args", nargs="*", metavar="-- BEAM_OPTION",
                   help="after --: Beam pipeline options, e.g. --direct_num_workers=2")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("embed", help="sentence embeddings (mean pooling, L2-normalised) -> .npy")
    p.add_argument("--model", required=True,
                   help="INIT (Hugging Face BERT folder, keras-hub preset), a RUN_DIR, or an "
                        "exported embedder REPO/NAME[/VERSION] (onnxruntime, no TensorFlow)")
    p.add_argument("--input", required=True, help="csv, tsv, jsonl or text file, one text a row")
    p.add_argument("--text-column", help="column name or index (default: a text-like column)")
    p.add_argument("--format", choices=("csv", "tsv", "jsonl", "text"),
                   help="default: from the extension")
    p.add_argument("--out", required=True, help="FILE.npy: float32 [rows, hidden]")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-len", type=int, help="default: the checkpoint's own")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("index", help="a faiss vector index of a document file (semantic search)")
    p.add_argument("--model", required=True, help="as for embed: INIT, RUN_DIR or REPO/NAME[/V]")
    p.add_argument("--input", required=True, help="documents: csv, tsv or jsonl")
    p.add_argument("--id-column", help="column name or index (JSONL default: id)")
    p.add_argument("--text-column", help="column name or index (JSONL default: text)")
    p.add_argument("--format", choices=("csv", "tsv", "jsonl"), help="default: from the extension")
    p.add_argument("--out", required=True, metavar="INDEX", help="index folder")
    p.add_argument("--embeddings", metavar="PREFIX",
                   help="rows from `tfllm batch --task embed --output PREFIX` instead of "
                        "embedding here (--input: a glob of that run's shards)")
    p.add_argument("--approximate", action="store_true",
                   help="HNSW graph instead of the exact inner-product scan (large corpora)")
    p.add_argument("--artifact", default="onnx", help="ONNX build of an export (e.g. onnx-int8)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-len", type=int, help="default: the checkpoint's own")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="nearest documents of an index for each query (JSON lines)")
    p.add_argument("--index", required=True, metavar="INDEX")
    p.add_argument("queries", nargs="*", metavar="QUERY")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--model", help="the index's model at another path (same weights only)")
    p.add_argument("--serve", action="store_true", help="answer POST /search instead")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8700)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("export", help="SavedModel / ONNX / TFLite artifacts with a parity gate")
    p.add_argument("--model", required=True, metavar="RUN_DIR",
                   help="a fine-tuned RUN_DIR (with --task embedding: an INIT or a RUN_DIR)")
    p.add_argument("--task", choices=("embedding",),
                   help="export a sentence embedder (mean pooling, L2-normalised) on --model's "
                        "backbone; --eval-data is then scored pairs in the STS-B format")
    p.add_argument("--out", required=True, metavar="REPO/NAME/VERSION",
                   help="TF Serving layout; with --version auto, REPO/NAME")
    p.add_argument("--formats", default="savedmodel,onnx,onnx-int8,tflite,tflite-dynamic",
                   help="comma-separated (default: %(default)s)")
    p.add_argument("--eval-data", metavar="FILE", help="gate data (default: the run's eval file)")
    p.add_argument("--calibration-data", metavar="FILE",
                   help="task data for onnx-int8-static / tflite-int8 (default: the run's "
                        "training file)")
    p.add_argument("--no-ort-fusion", dest="ort_fusion", action="store_false",
                   help="skip building ONNX formats from onnxruntime's transformer-fused graph "
                        "too (by default the fused build is kept where it passes the gate and "
                        "is faster)")
    p.add_argument("--version", help="an integer, or auto for the next free one")
    p.add_argument("--regression-data", metavar="FILE",
                   help="labelled data the new version must not score more than "
                        "--max-regression points below the version it replaces on (else exit 1, "
                        "nothing written)")
    p.add_argument("--max-regression", type=float, default=0.5, metavar="PTS",
                   help="allowed accuracy drop on --regression-data, in points (default 0.5)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("monitor", help="sentiment over a text stream, alerts on negative surges")
    p.add_argument("--input", required=True, metavar="FILE|DIR|-",
                   help="JSONL or CSV file, a folder of them (tailed with --follow), or - (stdin)")
    p.add_argument("--format", choices=["jsonl", "csv"], help="default: from the extension")
    _classifier_args(p)
    p.add_argument("--alerts", metavar="FILE.jsonl", help="append alerts here (also on stdout)")
    p.add_argument("--webhook", metavar="URL", help="POST each alert as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="timeline at the end (and on SIGUSR1)")
    p.add_argument("--window", default="1h", help="judged period (default: %(default)s)")
    p.add_argument("--baseline", default="6h",
                   help="period before the window giving the usual share (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=2.0,
                   help="alert when the share reaches this x baseline (default: %(default)s)")
    p.add_argument("--z", type=float, default=3.0, help="and this z-score (default: %(default)s)")
    p.add_argument("--min-count", type=int, default=30,
                   help="texts needed in window and baseline (default: %(default)s)")
    p.add_argument("--cooldown", default="1h", help="quiet time after an alert (default: %(default)s)")
    p.add_argument("--negative-label", default="negative")
    p.add_argument("--text-field", default="text")
    p.add_argument("--time-field", default="time", help="ISO 8601 or epoch seconds")
    p.add_argument("--entity-field", default="entity", help="per-entity windows (or `ticker`)")
    p.add_argument("--follow", action="store_true", help="keep reading new lines and files")
    p.add_argument("--idle-exit", type=float, default=0.0, metavar="SECONDS",
                   help="with --follow, stop after this long without input (0 = never)")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("recommend", help="recommend items from ratings (popularity, item-kNN, "
                       "content, hybrid), measured leave-last-out; or serve POST /recommend")
    p.add_argument("--ratings", required=True, help="ratings.csv: userId,movieId,rating,timestamp")
    p.add_argument("--items", required=True, help="movies.csv: movieId,title,genres")
    p.add_argument("--tags", help="tags.csv: userId,movieId,tag,timestamp (item text)")
    p.add_argument("--model", required=True, help="sentence embedder for the item text (INIT, "
                   "RUN_DIR or REPO/NAME[/VERSION])")
    p.add_argument("--report", required=True, metavar="DIR",
                   help="recommend_report.json, recommend_report.png, item_embeddings.npy")
    p.add_argument("--seed", type=int, default=0, help="the sampled-negatives seed")
    p.add_argument("--min-cold-hr", type=float, default=0.25,
                   help="the hybrid is the best validation NDCG@10 among settings whose cold "
                        "validation users reach this HR@10 among sampled items")
    p.add_argument("--serve", action="store_true",
                   help="answer POST /recommend with the report's hybrid (made first if absent)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8800)
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("route", help="route customer messages to queues by intent")
    _classifier_args(p)
    p.add_argument("--routes", required=True, metavar="YAML", help="e.g. configs/route/banking77.yaml")
    p.add_argument("--threshold", type=float, help="override the table's confidence threshold")
    p.add_argument("--input", metavar="FILE", help="csv, tsv, jsonl or one message per line")
    p.add_argument("--out", metavar="FILE.jsonl", help="intent, confidence and route per message")
    p.add_argument("--text-column", default=None, help="name or index (default: text-like column)")
    p.add_argument("--label-column", help="true intents: report routing accuracy")
    p.add_argument("--report", metavar="DIR", help="route_report.json + threshold_sweep.png")
    p.add_argument("--serve", action="store_true", help="answer POST /route instead")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8600)
    p.set_defaults(func=cmd_route)

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
    from tfllm_serving.errors import InvalidInput  # tfllm.errors.InputError is one too

    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except InvalidInput as err:
        print(f"tfllm {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
