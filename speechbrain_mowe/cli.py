"""``speechbrain-mowe``: answer audio files with a trained model, as JSON lines.

::

    speechbrain-mowe MODEL_FOLDER --task asr a.wav b.flac --output out.jsonl
    speechbrain-mowe MODEL_FOLDER --manifest test.csv --data_root /data --output out.jsonl
    speechbrain-mowe MODEL_FOLDER --instruction "Describe the audio." --task aac \\
        --manifest test.csv --data_root /data --output out.jsonl
    speechbrain-mowe MODEL_FOLDER --lora_scale 0.5 --task asr a.wav --output out.jsonl
    speechbrain-mowe MODEL_FOLDER --export_merged MERGED_FOLDER   # LoRA merged in
    speechbrain-mowe MODEL_FOLDER --export SHARED_FOLDER   # self-contained, with a model card
    speechbrain-mowe probe --family whisper_mowe --sources "{...}" --folder CORPUS --tasks er
    speechbrain-mowe MODEL_FOLDER --benchmark mmau --manifest mmau-test-mini.json \\
        --data_root /data/mmau --output answers.jsonl --benchmark_output mmau_predictions.json

Each input gets one line ``{"id", "wav", "task", "instruction", "answer"}``
(the id is the manifest's ``ID`` or the file path). The output is appended
to and flushed after every batch, so an interrupted run is resumed by
running the same command again: inputs already answered are skipped, and a
last line cut short by the interruption is removed (with a warning) and
redone. A file that cannot be read, or is too long under
``--long_audio refuse``, gets ``{"id", "wav", "error"}`` instead; the run goes
on, ends with a non-zero exit status, and the next run tries it again.
Readers should take the last line of each id. With ``--benchmark``, the
manifest is a harness's item file (AudioBench, AIR-Bench, MMAU; see
:mod:`speechbrain_mowe.benchmark_formats`) and, once every item is answered,
its predictions file is written too.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Set

from speechbrain_mowe.errors import DEBUG_VARIABLE, one_line, run_main

logger = logging.getLogger("speechbrain_mowe.cli")


class Request(NamedTuple):
    """One input: its id, audio file, task (may be None) and instruction."""

    id: str
    wav: str
    task: Optional[str]
    instruction: Optional[str]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechbrain-mowe",
        description=(
            "Answer audio files with a trained MoWE audio LLM (the output_folder of a "
            "training run, which holds inference.yaml). Writes one JSON line per input; "
            "run the same command again to resume."
        ),
    )
    parser.add_argument("model", help="folder holding inference.yaml and the .ckpt files")
    parser.add_argument("files", nargs="*", help="audio files (or use --manifest)")
    parser.add_argument(
        "--task",
        help="task of every input (asr, ast, er, aac, ...): the router's task and, unless "
        "--instruction is given, the instruction the model was tested with for it",
    )
    parser.add_argument(
        "--instruction",
        help="instruction asked of every input (free-form answers; with a task-conditioned "
        "router, also give --task or a manifest)",
    )
    parser.add_argument(
        "--manifest",
        help="a CSV manifest (ID, wav, task, instruction columns); without --task each row's "
        "task and instruction are used",
    )
    parser.add_argument(
        "--benchmark",
        choices=("audiobench", "airbench", "mmau"),
        help="--manifest is this harness's item file (audio under --data_root); the answers "
        "are also written in its format to --benchmark_output once every item is answered",
    )
    parser.add_argument("--benchmark_output", help="the harness's predictions file")
    parser.add_argument("--data_root", help="what $data_root stands for in the manifest")
    parser.add_argument("--output", help="JSON lines file, appended to")
    parser.add_argument(
        "--export_merged",
        metavar="FOLDER",
        help="write a copy of the model with its LoRA merged into the LLM (faster decoding, "
        "the same answers) into FOLDER, and exit",
    )
    parser.add_argument(
        "--export",
        metavar="FOLDER",
        help="write a self-contained copy of the model to share (every source copied and "
        "pinned, the test metrics, a model card README.md) into the new FOLDER, and exit",
    )
    parser.add_argument("--batch_size", type=int, default=8, help="inputs per batch (default 8)")
    parser.add_argument(
        "--long_audio",
        choices=("chunk", "refuse"),
        help="audio longer than the model reads at once: answer it in pieces cut at pauses, "
        "or refuse it (default: the model's setting)",
    )
    parser.add_argument(
        "--lora_scale",
        type=float,
        help="factor of the LoRA scale: 1 as trained, 0 the bare LLM; lower values restore "
        "the LLM's own instruction following (default: the model's, as tested)",
    )
    parser.add_argument("--device", help="e.g. cpu, cuda:0 (default: a GPU if there is one)")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not one line"
    )
    return parser


def _benchmark_items(args, parser):
    """The harness's items of ``--manifest``, or an exit naming what is wrong."""
    from speechbrain_mowe.benchmark_formats import benchmark_format

    if not (args.manifest and args.benchmark_output):
        parser.error("--benchmark needs --manifest (its item file) and --benchmark_output")
    try:
        return benchmark_format(args.benchmark).read(
            args.manifest, args.data_root or Path(args.manifest).parent
        )
    except (OSError, ValueError) as err:
        parser.exit(2, f"{parser.prog}: error: {one_line(err)}\n")


def _requests(args, parser) -> List[Request]:
    if bool(args.files) == bool(args.manifest):
        parser.error("give audio files or --manifest (one of them)")
    if args.benchmark:
        items = _benchmark_items(args, parser)
        return [Request(item.id, item.wav, args.task, item.instruction) for item in items]
    if args.manifest:
        from speechbrain_mowe.dataio import check_columns, load_manifest

        given = {"task": args.task, "instruction": args.task or args.instruction}
        required = [column for column in ("ID", "wav", "task", "instruction")
                    if not given.get(column)]  # fmt: skip
        try:
            check_columns(args.manifest, required, "inference")
            rows = load_manifest(args.manifest, args.data_root or "$data_root")
        except (OSError, ValueError) as err:
            parser.exit(2, f"{parser.prog}: error: {one_line(err)}\n")
        if args.data_root is None and any("$data_root" in row["wav"] for row in rows.values()):
            parser.error(f"{args.manifest} writes its paths with $data_root: give --data_root")
        return [
            Request(
                utt_id,
                row["wav"],
                args.task or row["task"],
                args.instruction or (None if args.task else row["instruction"]),
            )
            for utt_id, row in rows.items()
        ]
    if not (args.task or args.instruction):
        parser.error("give --task or --instruction (or both)")
    return [Request(path, path, args.task, args.instruction) for path in args.files]


def read_answered(path: Path) -> Set[str]:
    """The ids a previous run answered in ``path``.

    A last line without its newline (the run was killed while writing it)
    is cut off, with a warning; other lines must be JSON. Lines with an
    ``error`` instead of an ``answer`` do not count, so they are retried.
    """
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        complete = data.rfind(b"\n") + 1
        logger.warning(
            "The last line of %s was cut short (an interrupted run?): removed it; its input "
            "is answered again",
            path,
        )
        os.truncate(path, complete)
        data = data[:complete]
    answered = set()
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}, line {number}, is not JSON ({err}); fix or remove it, or write to "
                "another --output"
            ) from None
        if "answer" in record:
            answered.add(record["id"])
    return answered


def _prepare(model, request: Request, long_audio: Optional[str]):
    """A request's clip pieces, instruction and join; a ``ValueError`` or
    ``KeyError`` says why it cannot be answered."""
    if request.task is not None and request.task not in model.hparams.tasks:
        raise ValueError(
            f"unknown task '{request.task}' (the model's tasks: {', '.join(model.hparams.tasks)})"
        )
    instruction = request.instruction or model.instruction(request.task)
    pieces = model.load_pieces(request.wav, long_audio)
    # Free-form answers of a long file's pieces are joined with a space.
    join = model.join(None if request.instruction is not None else request.task)
    return pieces, instruction, join


def _answer_batch(model, batch: Sequence[Request], long_audio: Optional[str]) -> List[Dict]:
    """One record per request: its answer, or why it could not be answered
    (its audio, its task); the others of the batch are answered."""
    records, answered, clips, joins = [], [], [], []
    for request in batch:
        try:
            pieces, instruction, join = _prepare(model, request, long_audio)
        except (KeyError, ValueError) as err:  # AudioError and LongAudioError are ValueErrors
            message = one_line(err)
            logger.warning("%s: %s", request.id, message)
            records.append({"id": request.id, "wav": request.wav, "error": message})
            continue
        clips.append(pieces)
        joins.append(join)
        records.append(
            {"id": request.id, "wav": request.wav, "task": request.task, "instruction": instruction}
        )
        answered.append(records[-1])
    if not answered:
        return records
    tasks = [record["task"] for record in answered]
    answers = model.generate_clips(
        clips,
        [record["instruction"] for record in answered],
        None if None in tasks else tasks,
        joins,
    )
    for record, answer in zip(answered, answers):
        record["answer"] = answer
    return records


def _load_model(args, parser):
    """The model, or an exit with the reason it cannot answer (no traceback)."""
    from speechbrain_mowe.inference import PretrainedAudioLLM

    try:
        run_opts = {"device": args.device} if args.device else None
        model = PretrainedAudioLLM.from_hparams(source=args.model, run_opts=run_opts)
        if args.lora_scale is not None:
            model.lora_scale = args.lora_scale
        if args.task and not args.instruction:
            model.instruction(args.task)  # an untrained task fails before any work
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return model


def _write_benchmark(args, parser, output: Path) -> None:
    """The harness's predictions file, from the last answer of each item in ``output``."""
    from speechbrain_mowe.benchmark_formats import benchmark_format

    answers = {}
    for line in output.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "answer" in record:
            answers[record["id"]] = record["answer"]
    items = _benchmark_items(args, parser)
    path = benchmark_format(args.benchmark).write(
        args.benchmark_output, items, [answers[item.id] for item in items]
    )
    logger.info("%s predictions written to %s", args.benchmark, path)


def _export(args, parser) -> int:
    from speechbrain_mowe.deployment import export_merged, export_portable

    try:
        if args.export_merged:
            written = export_merged(args.model, args.export_merged).parent
        else:
            written = export_portable(args.model, args.export)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        parser.exit(2, f"{parser.prog}: error: {one_line(err)}\n")
    logger.info("%s model written to %s", "Merged" if args.export_merged else "Portable", written)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status (1 if any input failed).

    Arguments
    ---------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    if args.debug:
        os.environ[DEBUG_VARIABLE] = "1"
    if args.export_merged or args.export:
        return _export(args, parser)
    if args.output is None:
        parser.error("the following arguments are required: --output")
    if args.batch_size < 1:
        parser.error("--batch_size must be at least 1")
    requests = _requests(args, parser)
    output = Path(args.output)
    try:
        answered = read_answered(output)
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    pending = list({r.id: r for r in requests if r.id not in answered}.values())
    skipped = len({r.id for r in requests} & answered)
    if skipped:
        logger.info(
            "%d of %d inputs already answered in %s: skipped", skipped, len(requests), output
        )
    errors = 0
    if pending:
        model = _load_model(args, parser)
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "a", encoding="utf-8") as f:
            for start in range(0, len(pending), args.batch_size):
                records = _answer_batch(
                    model, pending[start : start + args.batch_size], args.long_audio
                )
                for record in records:
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                    errors += "error" in record
                f.flush()
    summary = (
        f"{len(pending) - errors} answered, {skipped} skipped (already in {output}), "
        f"{errors} failed"
    )
    if args.benchmark and not errors:
        _write_benchmark(args, parser, output)
    if errors:
        logger.error(
            '%s: see the lines with an "error" in %s; run again to retry them', summary, output
        )
        return 1
    logger.info("%s", summary)
    return 0


def run() -> int:
    """The ``speechbrain-mowe`` command: :func:`main`, with an error the user
    caused in one line (:func:`speechbrain_mowe.errors.run_main`);
    ``speechbrain-mowe probe ...`` is :mod:`speechbrain_mowe.probe`'s command."""
    if sys.argv[1:2] == ["probe"] and not Path("probe").exists():
        from speechbrain_mowe.probe import main as probe

        run_main(probe, sys.argv[2:])
        return 0
    return run_main(main)


if __name__ == "__main__":
    sys.exit(run())
