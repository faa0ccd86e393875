"""lm-eval hooks of the mssr tasks: every YAML beside this file names these functions.

A YAML's ``metadata.benchmark`` picks the benchmark. ``load_docs`` (lm-eval's ``custom_dataset``)
loads its documents, from local copies when ``data_dir`` is set (``lm_eval ... --metadata
'{"data_dir": "DIR"}'`` reads DIR/NAME), and tags each with ``mssr_benchmark`` so the document
hooks know which benchmark's prompt and scoring apply. The benchmarks themselves (schemas,
prompts, scoring rules) live in ``mssr_cli.evaluation.benchmarks``; nothing is defined twice.
"""

from __future__ import annotations

from mssr_cli.evaluation.benchmarks import BENCHMARKS

BENCHMARK_COLUMN = "mssr_benchmark"


def load_docs(benchmark: str, data_dir: str | None = None, image_size: int = 56, num_val: int = 300, **_metadata):
    """{split: documents} for lm-eval; other metadata (version, config_source, ...) is ignored."""
    import datasets

    from mssr_cli.evaluation.sources import load_docs as load_benchmark_docs

    docs, _source = load_benchmark_docs(benchmark, data_dir, int(image_size), int(num_val))
    docs = docs.add_column(BENCHMARK_COLUMN, [benchmark] * len(docs))
    return datasets.DatasetDict({BENCHMARKS[benchmark].split: docs})


def _benchmark(doc):
    return BENCHMARKS[doc[BENCHMARK_COLUMN]]


def doc_to_text(doc) -> str:
    return _benchmark(doc).prompt(doc)


def doc_to_image(doc) -> list:
    return _benchmark(doc).images(doc)


def doc_to_target(doc) -> str:
    return _benchmark(doc).gold(doc)


def process_results(doc, results) -> dict[str, float]:
    return {"acc": float(_benchmark(doc).grade(doc, results[0]).correct)}
