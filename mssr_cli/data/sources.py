"""Hub datasets and local parquet/JSONL files as a split with the common columns prompt, images, answer, id.

Where a split's rows come from (``data.*`` keys):

- ``hub_id`` set (``vision_r1``, ``geometry3k``): ``datasets.load_dataset(hub_id, split=...)``; with
  ``path`` set too, ``path`` is a local copy of that repository (``hf download <id>
  --repo-type dataset --local-dir DIR``) read the same way, ``load_dataset(DIR, split=...)``, so the
  split's files are found by the repository's own layout and keep its feature types.
- ``hub_id`` null (``local``): ``path`` names parquet or JSONL files (one file, a folder's files, or
  a glob), read with ``load_dataset("parquet" | "json", data_files=...)``. Validation comes from
  ``val_path`` (same forms), else ``num_val`` rows held out of ``path`` by a fixed seeded split.
- ``val_path`` set: always the validation files, whatever the training source.

Every row is then mapped (``mssr_cli.data.columns``) to the common columns; ``images`` holds every
image of the row's image cell (one image, or a list of them), in order; ``id`` is the row's index in
its source split (or file list), so it is stable across runs, limits and skipped rows. Every other
column of the source is kept under its own name (reward functions get it as a keyword argument),
except names the common columns or TRL use (``RESERVED_COLUMNS``).
A bad row (a JSON line that does not parse, a question that is not text, an answer that is not
text or a number, no image (an empty list), an image that is missing, truncated, unreadable or over
PIL's decompression-bomb limit) fails with a one-line ``DataSourceError`` naming the file, the row
(JSON Lines: the 1-based line), the column and, in a list, which image (``images[1]``), or, with
``data.skip_bad_rows``, is dropped and counted in a one-line note.
"""

from __future__ import annotations

import glob
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mssr_cli.data import json_lines
from mssr_cli.data.columns import IMAGE, IMAGES, BadRow, ColumnMap, common_row
from mssr_cli.data.images import undecoded

SPLIT_SEED = 1234  # fixed: a held-out validation split is part of the data, not of a run
FILE_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


class DataSourceError(ValueError):
    """The configured data cannot be read or mapped; the one-line message names the key, row or column."""


@dataclass
class RawSplit:
    """A source split as stored, before mapping: which rows to use and how to describe it."""

    rows: object  # datasets.Dataset, the source's own columns
    ids: list[int]  # source row index of each row used (after limits / held-out validation)
    image_root: Path | None  # where relative image paths resolve
    label: str  # e.g. "train split of Osilly/Vision-R1-rl", for messages
    files: list[Path] = field(default_factory=list)  # local files in read order, to name a row's file (empty: Hub)
    unparsed: dict[int, tuple[str, str]] = field(default_factory=dict)  # row -> (kind, why): lines read as nulls

    def where(self, row: int) -> str:
        """Source row ``row`` for a message: ``FILE line N`` (JSON Lines), ``FILE row N``, else ``LABEL, row N``."""
        return locate_row(self.files, row) or f"{self.label}, row {row}"


def load_source_split(data_cfg, split: str):
    """The ``split`` ("train" or "validation") of a Hub or local source as a ``datasets.Dataset``
    with columns prompt, images, answer, id (see the module docstring for where rows come from)."""
    if split not in ("train", "validation"):
        raise ValueError(f"data={data_cfg.name} has splits 'train' and 'validation', not {split!r}")
    with quiet_datasets():
        raw = read_split(data_cfg, split)
        return to_common(raw, data_cfg)


@contextmanager
def quiet_datasets():
    """``datasets`` without progress bars and log lines while the block runs (then as before)."""
    import datasets

    bars, verbosity = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()  # a bar per load and map would break the run's own progress display
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its "Failed to read file" errors: ours name the row
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def read_split(data_cfg, split: str) -> RawSplit:
    """The source rows of ``split`` and the ids they keep, without mapping."""
    root = Path(data_cfg.image_root).expanduser() if data_cfg.image_root else None
    limit = data_cfg.train_limit if split == "train" else data_cfg.val_limit
    if split == "validation" and data_cfg.val_path:
        files = data_files(data_cfg.val_path, "data.val_path")
        rows, unparsed = _load_files(files, "data.val_path", data_cfg.val_path)
        raw = RawSplit(rows, list(range(len(rows))), root or files[0].parent, f"validation files {data_cfg.val_path}",
                       files, unparsed)
    elif data_cfg.hub_id:
        split_name = data_cfg.train_split if split == "train" else data_cfg.val_split
        rows = _load_hub(data_cfg, split_name, "data.train_split" if split == "train" else "data.val_split")
        where = data_cfg.path or data_cfg.hub_id
        local_root = Path(data_cfg.path).expanduser() if data_cfg.path else None
        raw = RawSplit(rows, list(range(len(rows))), root or local_root, f"{split_name} split of {where}")
    elif data_cfg.path:
        files = data_files(data_cfg.path, "data.path")
        rows, unparsed = _load_files(files, "data.path", data_cfg.path)
        ids = list(range(len(rows)))
        if not data_cfg.val_path:
            ids = held_out(len(rows), data_cfg.num_val, split)
        which = split if not data_cfg.val_path else "train"
        raw = RawSplit(rows, ids, root or files[0].parent, f"{which} rows of {data_cfg.path}", files, unparsed)
    else:
        raise DataSourceError(
            f"data={data_cfg.name}: data.path is null and there is no data.hub_id; "
            "give the data: data.path=FILE|FOLDER|GLOB (parquet or JSONL)"
        )
    if limit is not None:
        raw.ids = raw.ids[:limit]
    return raw


def held_out(n: int, num_val: int, split: str) -> list[int]:
    """Row indices of ``split`` when ``num_val`` of ``n`` rows are held out for validation (fixed, seeded)."""
    import numpy as np

    if not 0 < num_val < n:
        raise DataSourceError(
            f"data.num_val={num_val}: must be in 1..{n - 1} to hold validation rows out of {n} rows "
            "(or give validation files: data.val_path=FILE|FOLDER|GLOB)"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    part = order[:num_val] if split == "validation" else order[num_val:]
    return sorted(int(i) for i in part)


def data_files(spec: str, key: str) -> list[Path]:
    """The parquet or JSONL files ``spec`` names: one file, a folder's files (not its sub-folders), or a glob."""
    path = Path(spec).expanduser()
    if any(c in spec for c in "*?["):
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
    elif path.is_dir():
        found = sorted(path.iterdir())
    elif path.is_file():
        found = [path]
    else:
        raise DataSourceError(f"{key}={spec}: no such file or folder")
    found = [f for f in found if f.is_file() and f.suffix.lower() in FILE_FORMATS]
    if not found:
        raise DataSourceError(f"{key}={spec}: no .parquet, .jsonl or .json files there")
    if len({FILE_FORMATS[f.suffix.lower()] for f in found}) > 1:
        raise DataSourceError(f"{key}={spec}: mixes parquet and JSON files; name one kind (e.g. a glob *.parquet)")
    return found


def _load_files(files: list[Path], key: str, spec: str):
    """``(rows, unparsed)``: the files' rows as one ``datasets.Dataset``, and {row: (kind, why)} for JSON
    lines that do not parse (read as rows of nulls, so the rest keep their row numbers)."""
    import datasets

    kind = FILE_FORMATS[files[0].suffix.lower()]
    try:
        return datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train"), {}
    except Exception as err:  # pyarrow and json parsers raise many types; each is a bad file here
        if kind == "json":
            return _reload_json(files, key, spec)
        problem = parquet_file_problem(files) or f"cannot read it as {kind}: {_brief(err)}"
        raise DataSourceError(f"{key}={spec}: {problem}") from None


def _reload_json(files: list[Path], key: str, spec: str):
    """After a failed read: the JSON files read again from copies whose malformed lines are rows of nulls,
    with those rows returned as unparsed; or one line naming the first malformed line."""
    import datasets

    bad_lines, unparsed, offset = {}, {}, 0
    for path in files:
        if json_lines.is_document(path):  # one list of rows: nothing to skip, so name where it breaks
            if problem := json_lines.document_problem(path):
                raise DataSourceError(f"{key}={spec}: {path} line {problem[0]}: {problem[1]}")
            offset += len(locate_positions(path)[1])
            continue
        bad_lines[path] = json_lines.bad_lines(path)
        for row, (_, why) in bad_lines[path].items():
            unparsed[offset + row] = ("malformed JSON line", why)
        offset += len(json_lines.row_lines(path))
    first = next((f"{path} line {line}: {why}" for path, bad in bad_lines.items() for line, why in bad.values()), "")
    if unparsed and len(unparsed) == offset:
        raise DataSourceError(f"{key}={spec}: no line is a JSON object ({first})")
    with tempfile.TemporaryDirectory() as tmp:  # read into memory, so tmp can go
        copies = [Path(tmp) / f"{index}-{path.name}" for index, path in enumerate(files)]
        for path, copy in zip(files, copies):
            if path in bad_lines:
                json_lines.copy_without(path, {line for line, _ in bad_lines[path].values()}, copy)
            else:
                copy.write_bytes(path.read_bytes())
        try:
            rows = datasets.load_dataset("json", data_files=[str(c) for c in copies], split="train",
                                         cache_dir=str(Path(tmp) / "cache"), keep_in_memory=True)
        except Exception as err:
            what = f"{first}; without such lines it still cannot be read" if first else "cannot read it as json"
            raise DataSourceError(f"{key}={spec}: {what}: {_brief(err)}") from None
    return rows, unparsed


def parquet_file_problem(files: list[Path]) -> str | None:
    """Which of ``files`` cannot join the others, and why: not readable as parquet, or columns whose names or
    types cannot be cast to the first file's (the check ``datasets`` makes when it reads them). None if none."""
    import pyarrow.parquet as pq
    from datasets.table import table_cast

    schemas = []
    for path in files:
        try:
            schemas.append(pq.read_schema(path))
        except Exception as err:  # not parquet, truncated, unreadable
            return f"{path}: not a readable parquet file ({_brief(err)})"
    for path, schema in zip(files[1:], schemas[1:]):
        if set(schema.names) != set(schemas[0].names):
            return f"{path}: columns {', '.join(schema.names)}, unlike {files[0]} ({', '.join(schemas[0].names)})"
        for name in schemas[0].names:
            try:  # on no rows: only the types count
                table_cast(schema.empty_table().select([name]), schemas[0].empty_table().select([name]).schema)
            except Exception:
                return (f"{path}: column '{name}' is {schema.field(name).type}, which does not cast to "
                        f"{schemas[0].field(name).type} as in {files[0]}")
    return None


def locate_positions(path: Path) -> tuple[str, list[int] | range] | None:
    """How rows of ``path`` are named, ``("line", [1-based line of each row])`` for JSON Lines or
    ``("row", range(rows))``; None for a format whose rows are not counted here (CSV/TSV)."""
    kind = FILE_FORMATS.get(path.suffix.lower())
    if kind == "parquet":
        import pyarrow.parquet as pq

        return "row", range(pq.ParquetFile(path).metadata.num_rows)
    if kind == "json":
        if json_lines.is_document(path):
            import json

            return "row", range(len(json.loads(path.read_bytes())))
        return "line", json_lines.row_lines(path)
    return None


def locate_row(files: list[Path], row: int) -> str | None:
    """``FILE line N`` (JSON Lines, 1-based) or ``FILE row N`` (0-based, in that file) for row ``row`` of
    ``files`` read one after another; None when it cannot be told (no files, an uncounted format)."""
    for path in files:
        positions = locate_positions(path)
        if positions is None:
            return None
        unit, numbers = positions
        if row < len(numbers):
            return f"{path} {unit} {numbers[row]}"
        row -= len(numbers)
    return None


def _load_hub(data_cfg, split_name: str, split_key: str):
    import datasets

    where, hub_id = data_cfg.path, data_cfg.hub_id
    copy_hint = f"hf download {hub_id} --repo-type dataset --local-dir DIR"
    if where:
        if not Path(where).expanduser().is_dir():
            raise DataSourceError(f"data.path={where}: no such folder (a local copy of {hub_id}, made with: {copy_hint})")
        where = str(Path(where).expanduser())
    else:
        from mssr_cli import hub

        if not hub.hub_worth_trying():  # else datasets retries for ~25 s before failing
            raise DataSourceError(
                f"data.hub_id={hub_id}: the Hub cannot be reached; make a local copy with: {copy_hint}, then pass data.path=DIR"
            )
        where = hub_id
    try:
        return datasets.load_dataset(where, split=split_name)
    except ValueError as err:
        if "split" in str(err).lower():
            raise DataSourceError(f"{split_key}={split_name}: not a split of {where} ({_brief(err)})") from None
        raise DataSourceError(f"data={data_cfg.name}: cannot load {where} ({_brief(err)})") from None
    except Exception as err:  # offline, unknown repository, gated, unreadable files, ...
        hint = "" if data_cfg.path else f"; offline? make a local copy with: {copy_hint}, then pass data.path=DIR"
        raise DataSourceError(f"data={data_cfg.name}: cannot load {where} ({_brief(err)}){hint}") from None


# Column names a source's extra columns may not take: the common columns, TRL's arguments to reward functions
# and the row bookkeeping of ``to_common``.
RESERVED_COLUMNS = frozenset({"prompt", IMAGE, IMAGES, "answer", "id", "completion", "completion_ids", "prompts",
                              "completions", "trainer_state", "log_extra", "log_metric", "environments",
                              "_bad_row", "_bad_kind"})


def common_features(images: str = IMAGE):
    """The common columns' feature types: with ``images="image"`` one image per row (the built-in digits
    task's), with ``"images"`` a list of images per row (what Hub and local sources give)."""
    import datasets

    return datasets.Features(
        {
            "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            images: datasets.List(datasets.Image()) if images == IMAGES else datasets.Image(),
            "answer": datasets.Value("string"),
            "id": datasets.Value("int64"),
        }
    )


def to_common(raw: RawSplit, data_cfg):
    """Map ``raw`` to the common columns; fail on the first bad row or, with skip_bad_rows, drop and count them."""
    import datasets

    columns = ColumnMap(data_cfg.question_column, data_cfg.answer_column, data_cfg.image_column)
    keys = {"data.question_column": columns.question, "data.answer_column": columns.answer, "data.image_column": columns.image}
    for key, column in keys.items():
        if column not in raw.rows.column_names:
            raise DataSourceError(
                f"{key}={column}: no such column in the {raw.label}; its columns: {', '.join(raw.rows.column_names)}"
            )
    # Every other column rides along under its own name, for reward functions (``reward.functions`` get
    # each row's columns as keyword arguments, TRL's convention); names mssr or TRL use are left out.
    extra = [c for c in raw.rows.column_names if c not in keys.values() and c not in RESERVED_COLUMNS]
    rows = raw.rows.select_columns(list(dict.fromkeys([*keys.values(), *extra])))
    rows = undecoded(rows, columns.image)
    if raw.ids != list(range(len(raw.rows))):
        rows = rows.select(raw.ids)
    ids, image_root, unparsed = raw.ids, raw.image_root, raw.unparsed

    def convert(row: dict, index: int) -> dict:
        try:
            if ids[index] in unparsed:  # a JSON line that did not parse, read as a row of nulls
                raise BadRow("", *unparsed[ids[index]])
            out = {**common_row(row, columns, image_root), "_bad_row": "", "_bad_kind": ""}
        except BadRow as err:
            where, kind = (f", column '{err.column}'", f"{err.kind} ({err.column})") if err.column else ("", err.kind)
            out = {"prompt": [], IMAGES: [], "answer": "", "_bad_row": f"{where}: {err}", "_bad_kind": kind}
        out["id"] = ids[index]
        out.update({c: row[c] for c in extra})
        return out

    features = common_features(IMAGES)
    for c in extra:
        features[c] = rows.features[c]
    features["_bad_row"] = datasets.Value("string")  # why the row is bad ("" if it is fine)
    features["_bad_kind"] = datasets.Value("string")  # the short reason, for the skip note's counts
    # Never reuse a cached map: whether an image file exists or reads can change between runs.
    mapped = rows.map(convert, with_indices=True, remove_columns=rows.column_names, features=features,
                      load_from_cache_file=False)
    problems = list(mapped["_bad_row"])
    bad = [i for i, problem in enumerate(problems) if problem]
    if bad and (not data_cfg.skip_bad_rows or len(bad) == len(ids)):  # nothing left is never what was meant
        first = bad[0]
        what = "nothing is left to use" if data_cfg.skip_bad_rows else "data.skip_bad_rows=true skips them"
        scope = f" in the {raw.label}" if raw.files else ""  # a Hub split's label already opens the message
        raise DataSourceError(
            f"data={data_cfg.name}: {raw.where(ids[first])}{problems[first]}; "
            f"{len(bad)} bad row(s) of {len(ids)}{scope} ({what})"
        )
    if bad:
        from mssr_cli.console import stdout_console

        kinds = Counter(mapped.select(bad)["_bad_kind"])
        why = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        stdout_console().print(
            f"data={data_cfg.name}: skipped {len(bad)} of {len(ids)} rows of the {raw.label}: {why} "
            f"(first: {raw.where(ids[bad[0]])})",
            markup=False, highlight=False, soft_wrap=True,
        )
        bad_set = set(bad)
        mapped = mapped.select([i for i in range(len(mapped)) if i not in bad_set])
    return mapped.remove_columns(["_bad_row", "_bad_kind"])


def _brief(err: Exception) -> str:
    if type(err).__name__ == "DatasetGenerationError" and err.__cause__ is not None:
        err = err.__cause__  # "An error occurred while generating the dataset": the reader's own error says what
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__
