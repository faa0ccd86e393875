"""Where a benchmark's documents come from: a local copy of its Hub repository, else the Hub.

With a data folder ``DIR``, benchmark NAME is read from ``DIR/NAME``, laid out as

    hf download <hub id> --repo-type dataset --local-dir DIR/NAME

leaves it (the split's parquet files, or R1-Onevision-Bench's TSV, where the Hub keeps them), and
loaded with ``datasets`` (``load_dataset("parquet" | "csv", data_files=...)``), so columns keep the
feature types the repository declares (images decode to PIL). Without a local copy the Hub id is
loaded (network, or the ``datasets`` cache). When neither works: ``BenchmarkDataError``, one line
naming the benchmark, where it looked and the command that makes the local copy. The evaluated
rows' images are checked as training checks its own (``mssr_cli.data.images``): a truncated,
unreadable or over-the-pixel-limit image is a ``BenchmarkDataError`` naming the file, row and column
(and, where the column holds a list of images per row, which one: ``image[1]``; every image of the
list is evaluated; an empty list is a row without an image, an error too).
"""

from __future__ import annotations

from pathlib import Path

from mssr_cli import hub
from mssr_cli.evaluation.benchmarks import Benchmark, get_benchmark
from mssr_cli.evaluation.errors import BenchmarkDataError

loaded_from: dict[str, str] = {}  # benchmark -> where its documents were last loaded from (for summaries)
most_images: dict[str, int] = {}  # benchmark -> the most images one of its evaluated rows has (vLLM's per-prompt limit)


def download_command(benchmark: Benchmark, data_dir: Path | str | None) -> str:
    target = Path(data_dir) / benchmark.name if data_dir is not None else f"DIR/{benchmark.name}"
    return f"hf download {benchmark.hub_id} --repo-type dataset --local-dir {target}"


def find_local_files(benchmark: Benchmark, folder: Path) -> list[Path]:
    """The split's files in a local copy: the repository's own layout first, then generic Hub layouts."""
    split = benchmark.split
    generic = (
        f"**/{split}-*.parquet",  # push_to_hub shards anywhere (data/, <config>/)
        f"**/{split}.parquet",
        f"{benchmark.config or 'default'}/{split}/*.parquet",  # the Hub's refs/convert/parquet branch
    )
    for pattern in (*benchmark.local_files, *generic):
        found = sorted(p for p in folder.glob(pattern) if p.is_file())
        if found:
            return found
    return []


def load_docs(name: str, data_dir: Path | str | None = None, image_size: int = 56, num_val: int = 300):
    """``(documents, source)``: the benchmark's evaluated rows as a ``datasets.Dataset`` and where they came from.

    ``image_size`` and ``num_val`` shape the built-in benchmarks (digits, the toy suite) (a run's ``data.*`` settings)."""
    import datasets

    bars, verbosity = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()  # "Generating testmini split: 3 examples" per benchmark is noise here
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its "Failed to read file" errors: ours name the file
    try:
        docs, source = _load_docs(name, data_dir, image_size, num_val)
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()
    loaded_from[name] = source
    return docs, source


def _load_docs(name, data_dir, image_size, num_val):
    benchmark = get_benchmark(name)
    if benchmark.built_in is not None:
        return benchmark.built_in(image_size, num_val), "built in"
    reasons = []
    if data_dir is not None:
        folder = Path(data_dir).expanduser() / name
        files = find_local_files(benchmark, folder) if folder.is_dir() else []
        if files:
            return _checked(benchmark, _load_files(benchmark, files), files, str(folder)), f"local copy {folder}"
        wanted = ", ".join(benchmark.local_files) or f"{benchmark.split} files"
        reasons.append(f"no local copy in {folder} (looked for {wanted})" if folder.is_dir() else f"no folder {folder}")
    try:
        if not hub.hub_worth_trying():
            raise ConnectionError("no connection to the Hub")
        import datasets

        docs = datasets.load_dataset(benchmark.hub_id, benchmark.config, split=benchmark.split)
    except Exception as err:  # offline, unknown repository, gated, ...: the message says what to do
        detail = " ".join(str(err).split())[:160] or type(err).__name__
        reasons.append(f"the Hub dataset {benchmark.hub_id} could not be loaded ({type(err).__name__}: {detail})")
        hint = "" if data_dir is not None else " and pass --data-dir DIR"
        raise BenchmarkDataError(
            f"{name}: no data: {'; '.join(reasons)}; make a local copy with: {download_command(benchmark, data_dir)}{hint}"
        ) from None
    return _checked(benchmark, docs, [], f"Hub dataset {benchmark.hub_id}"), f"Hub {benchmark.hub_id}"


def _load_files(benchmark: Benchmark, files: list[Path]):
    import datasets

    data_files = {benchmark.split: [str(f) for f in files]}
    try:
        if benchmark.file_format == "tsv":
            return datasets.load_dataset("csv", data_files=data_files, split=benchmark.split, sep="\t")
        return datasets.load_dataset("parquet", data_files=data_files, split=benchmark.split)
    except Exception as err:
        from mssr_cli.data.sources import parquet_file_problem

        if benchmark.file_format != "tsv" and (problem := parquet_file_problem(files)):
            raise BenchmarkDataError(f"{benchmark.name}: {problem}") from None
        err = err.__cause__ or err  # datasets wraps the reader's own error in a DatasetGenerationError
        detail = " ".join(str(err).split())[:160]
        raise BenchmarkDataError(f"{benchmark.name}: cannot read {files[0].parent}: {type(err).__name__}: {detail}") from None


def _checked(benchmark: Benchmark, docs, files: list[Path], where: str):
    """The evaluated rows (``benchmark.keep``), each image checked, so a bad one fails here in one line
    (``FILE row N, column C``; ``where, row N`` when rows are not counted per file) rather than inside lm-eval."""
    import datasets

    from mssr_cli.data.images import BadImage, image_values
    from mssr_cli.data.sources import locate_row

    rows = list(range(len(docs)))
    if benchmark.keep is not None and benchmark.keep[0] in docs.column_names:
        column, test = benchmark.keep
        rows = [row for row, value in zip(rows, docs[column]) if test(value)]  # reads one column: no image decoding
        docs = docs.select(rows)
    most_images[benchmark.name] = 1
    for column, feature in docs.features.items():
        # one image, or a list of images per row; base64 text (TSV) is decoded only when used
        if not isinstance(feature, datasets.Image) and not isinstance(getattr(feature, "feature", None), datasets.Image):
            continue
        stored = docs.select_columns([column]).with_format("arrow")  # the stored {bytes, path} values, none decoded
        values = (value for batch in stored.iter(batch_size=256) for value in batch[column].to_pylist())
        for index, value in enumerate(values):
            try:
                count = len(image_values(value, None, column=column))
                if column == benchmark.image_column:
                    most_images[benchmark.name] = max(most_images[benchmark.name], count)
            except BadImage as err:
                at = locate_row(files, rows[index]) or f"{where}, row {rows[index]}"
                raise BenchmarkDataError(f"{benchmark.name}: {at}, column '{column}': {err} (every row is scored: "
                                         "fix the row or make the copy again)") from None
    return docs
