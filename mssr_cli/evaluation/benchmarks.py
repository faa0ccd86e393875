"""The benchmarks ``mssr eval`` runs: where each lives, its real schema, its prompt and its scoring.

One ``Benchmark`` per name. Each reads the dataset's own columns as the Hub repository stores
them (checked against the sources named in ``schema``), builds the user prompt (one ``<image>``
placeholder per image of the row: a copy whose image column holds a list of images gives every
one, in order; then the question with its options, and the training instruction to box the answer),
and grades a response with the training grader (``mssr_cli.rewards``: one implementation):

- ``digits``: the training reward itself (boxed or ``<answer>`` form only), so eval accuracy is
  the run's ``val/accuracy``;
- the others: ``extract_final_answer`` (``<think>`` stripped; ``<answer>``, last box, "the answer
  is", then the question type's fallback: option letter, number or yes/no) and ``match_answer``
  (letter <-> option text, math-verify equivalence, MathVista's unit/precision/integer rules);
- any, with ``mssr eval --grader mathruler``: the paper recipes' reward (``reward.grader=mathruler``),
  mathruler on the last ``\\boxed{}`` alone, so eval accuracy on digits is such a run's ``val/accuracy``.

Nothing here imports torch; ``datasets``/PIL load only when a document is read.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mssr_cli.data.prompts import BOXED_INSTRUCTION
from mssr_cli.data.toy_suite import SHIFTS, TOY_SUITE, load_toy_benchmark
from mssr_cli.evaluation.errors import UnknownBenchmarkError

IMAGE_PLACEHOLDER = "<image>"  # lm-eval's placeholder: one per image, where the image goes
_IMAGE_TAG = re.compile(r"<image\s*\d*>", re.I)  # tags some datasets keep in their text (MathVision)
_CHOICE_LINE = re.compile(r"^\s*\(?([A-H])\s*[).:：．、]\s*(.*?)\s*$")


@dataclass(frozen=True)
class Rules:
    """How one document is scored (see ``extract_final_answer`` and ``match_answer``)."""

    choices: tuple[str, ...] = ()  # option texts for A, B, ... (empty: free form or unknown)
    fallback: str | None = None  # "letter", "number" or "yes_no": free-text rule of last resort
    num_choices: int = 0  # options the letter fallback may name (0: A-E)
    precision: int | None = None
    integer: bool = False
    unit: str | None = None
    multi_select: bool = False


@dataclass(frozen=True)
class Graded:
    extracted: str | None
    correct: bool


@dataclass(frozen=True)
class Benchmark:
    name: str
    hub_id: str | None  # Hugging Face dataset repository (None: built in)
    config: str | None  # its config name (None: default)
    split: str
    local_files: tuple[str, ...]  # glob patterns, relative to DIR/NAME, of the split's files in the Hub layout
    schema: str  # where the field names, splits and answer format were checked
    doc_id: Callable[[dict], str]
    question: Callable[[dict], str]  # the user text: question, options, instruction
    image_column: str  # the column of the row's image (or of a list of images: every one is used)
    gold: Callable[[dict], str]
    rules: Callable[[dict], Rules] = field(default=lambda doc: Rules())
    keep: tuple[str, Callable[[object], bool]] | None = None  # (column, test): rows evaluated
    file_format: str = "parquet"  # or "tsv"
    strict: bool = False  # grade with the training reward (boxed / <answer> form only)
    built_in: Callable[[int, int], object] | None = None  # (image_size, num_val) -> the documents (hub_id None)

    def prompt(self, doc: dict) -> str:
        """The prompt lm-eval and the hf backend send: the images (one placeholder each), then the text."""
        return IMAGE_PLACEHOLDER * self.image_count(doc) + self.question(doc)

    def images(self, doc: dict) -> list:
        """The row's images as PIL RGB images, in order: one, or every image of a list cell."""
        return [_rgb(value) for value in _image_cells(doc[self.image_column])]

    def image_count(self, doc: dict) -> int:
        """How many images the row has (without converting them)."""
        return len(_image_cells(doc[self.image_column]))

    def grade(self, doc: dict, response: str, judge: Callable[[str, str], str | None] | None = None,
              grader: str = "math_verify") -> Graded:
        """Extract the answer from ``response`` and compare it with the gold answer; never raises.

        ``judge(question, response)`` is asked only when the rules find no answer at all.
        ``grader="mathruler"``: every benchmark as the paper's reward grades (``_grade_by_mathruler``)."""
        from mssr_cli.rewards import accuracy_reward, extract_answer, extract_final_answer, match_answer

        gold = self.gold(doc)
        if grader == "mathruler":
            return self._grade_by_mathruler(doc, response, gold, judge)
        if self.strict:
            return Graded(extract_answer(response), accuracy_reward(response, gold) == 1.0)
        rules = self.rules(doc)
        pred = extract_final_answer(response, rules.num_choices or len(rules.choices), rules.fallback)
        if pred is None and judge is not None:
            pred = judge(self.question(doc), response)
        correct = pred is not None and match_answer(
            pred, gold, list(rules.choices), precision=rules.precision, integer=rules.integer,
            unit=rules.unit, multi_select=rules.multi_select,
        )
        return Graded(pred, correct)

    def _grade_by_mathruler(self, doc: dict, response: str, gold: str, judge) -> Graded:
        """The reference's reward (``mssr_cli.rewards.reference_grader``) on any benchmark: mathruler's
        ``grade_answer`` on the last ``\\boxed{}`` alone, none of the benchmark's rules (option
        letters, units, precision). With no box, the judge's answer (if asked) is graded the same way."""
        from mssr_cli.rewards.reference_grader import NO_BOX, boxed_content, matches

        pred = boxed_content(response) if isinstance(response, str) else NO_BOX
        if pred == NO_BOX and judge is not None:
            pred = judge(self.question(doc), response) or NO_BOX
        # mathruler grades the string "None" too (a gold "None" matches a missing box), as the reference
        return Graded(None if pred == NO_BOX else pred, matches(pred, gold))


# --- field helpers ---------------------------------------------------------------------


def _text(value) -> str:
    """A text cell as a string: None and pandas' NaN (empty TSV cells) are empty."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def _image_cells(value) -> list:
    """An image cell as a list of images: a list cell as it is, one image as a list of one, none as []."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _rgb(value):
    """A PIL RGB image from a decoded image, an ``{"bytes": ...}`` cell, raw bytes or base64 text."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict) and value.get("bytes") is not None:
        value = value["bytes"]
    if isinstance(value, str):
        value = base64.b64decode(value.split(",", 1)[1] if value.startswith("data:image") else value)
    if isinstance(value, (bytes, bytearray)):
        return Image.open(io.BytesIO(value)).convert("RGB")
    raise TypeError(f"not an image: {type(value).__name__}")


def _clean_text(text: str) -> str:
    """Dataset text without image tags: the prompt's own ``<image>`` placeholders must be the only ones."""
    return _IMAGE_TAG.sub("", _text(text)).strip()


def _with_instruction(text: str) -> str:
    return f"{_clean_text(text)}\n{BOXED_INSTRUCTION}"


def _lettered(options) -> str:
    return "\n".join(f"({chr(ord('A') + i)}) {_text(o)}" for i, o in enumerate(options))


def parse_choices(text: str) -> tuple[str, ...]:
    """Option texts written into a question: lines ``A. x`` / ``A: x`` / ``(A) x``, or ``A. x; B. y``.

    Only a run of letters from A in order counts; anything else gives ``()`` (letters still work)."""
    lines = _text(text).splitlines()
    if sum(bool(_CHOICE_LINE.match(line)) for line in lines) < 2:
        lines = re.split(r";\s*(?=\(?[A-H]\s*[).:：．])", _text(text))
    found: dict[str, str] = {}
    for line in lines:
        m = _CHOICE_LINE.match(line)
        if m and m.group(1) not in found:
            found[m.group(1)] = m.group(2)
    letters = "".join(sorted(found))
    if len(letters) < 2 or not "ABCDEFGH".startswith(letters):
        return ()
    return tuple(found[letter] for letter in letters)


def _letter_rules(choices: tuple[str, ...]) -> Rules:
    return Rules(choices=choices, fallback="letter", num_choices=len(choices))


def _is_letter(answer: str) -> bool:
    return re.fullmatch(r"\s*\(?[A-H]\)?\s*", _text(answer)) is not None


# --- the benchmarks --------------------------------------------------------------------


def _digits_question(doc) -> str:
    return doc["prompt"][0]["content"]  # "Which digit is shown? Put the final answer in \boxed{}."


def _digits_docs(image_size: int, num_val: int):
    from mssr_cli.data.digits import load_digits_split

    return load_digits_split("validation", image_size, num_val)


def _toy(name: str) -> Benchmark:
    """A toy-suite benchmark (``mssr_cli.data.toy_suite``): digits' question and grading on shifted held-out images."""
    return Benchmark(
        name=name,
        hub_id=None,
        config=None,
        split="test",
        local_files=(),
        schema=f"built in: mssr_cli.data.toy_suite ({SHIFTS[name].shift} on the digits validation images)",
        doc_id=lambda d: str(d["id"]),
        question=_digits_question,
        image_column="image",
        gold=lambda d: d["answer"],
        strict=True,
        built_in=lambda image_size, num_val: load_toy_benchmark(name, image_size, num_val),
    )


def _mathvista_rules(doc) -> Rules:
    unit = _text(doc.get("unit")) or None
    if doc.get("question_type") == "multi_choice":
        return Rules(choices=tuple(_text(c) for c in doc.get("choices") or ()), fallback="letter",
                     num_choices=len(doc.get("choices") or ()), unit=unit)
    answer_type = doc.get("answer_type")
    precision = doc.get("precision")
    if answer_type == "float" and precision is not None and precision == precision:
        return Rules(fallback="number", precision=int(precision), unit=unit)
    if answer_type == "integer":
        return Rules(fallback="number", integer=True, unit=unit)
    return Rules(unit=unit)  # list and text answers: no free-text fallback


def _mathverse_rules(doc) -> Rules:
    if doc.get("question_type") == "multi-choice":
        return _letter_rules(parse_choices(doc.get("question") or doc.get("query_cot")))
    return Rules(fallback="number")


def _mathvision_rules(doc) -> Rules:
    options = tuple(_text(o) for o in doc.get("options") or ())
    return _letter_rules(options) if options else Rules(fallback="number")


def _mathvision_question(doc) -> str:
    options = doc.get("options") or []
    text = _clean_text(doc["question"])
    return _with_instruction(f"{text}\nChoices:\n{_lettered(options)}" if options else text)


def _mmk12_rules(doc) -> Rules:
    choices = parse_choices(doc["question"])
    if choices or _is_letter(doc["answer"]):  # the test split is all multiple choice, options inline
        return _letter_rules(choices)
    return Rules(fallback="number")


def _r1_onevision_choices(doc) -> tuple[str, ...]:
    return parse_choices(doc.get("choices")) or parse_choices(doc.get("question"))


def _r1_onevision_question(doc) -> str:
    question, choices = _clean_text(doc["question"]), _clean_text(doc.get("choices"))
    if choices and choices not in question:
        question = f"{question}\nChoices:\n{choices}"
    return _with_instruction(question)


def _r1_onevision_rules(doc) -> Rules:
    choices = _r1_onevision_choices(doc)
    if choices or _is_letter(_text(doc["answer"])):
        return _letter_rules(choices)
    return Rules(fallback="number")


def _hallusion_id(doc) -> str:
    return "_".join(_text(doc.get(k)) for k in ("category", "subcategory", "set_id", "figure_id", "question_id"))


def _hallusion_question(doc) -> str:
    return f"{_clean_text(doc['question'])}\nAnswer yes or no. {BOXED_INSTRUCTION}"


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            name="digits",
            hub_id=None,
            config=None,
            split="validation",
            local_files=(),
            schema="built in: mssr_cli.data.digits (scikit-learn digits, fixed seeded split)",
            doc_id=lambda d: str(d["id"]),
            question=_digits_question,
            image_column="image",
            gold=lambda d: d["answer"],
            strict=True,
            built_in=_digits_docs,
        ),
        Benchmark(
            name="mathvista",
            hub_id="AI4Math/MathVista",
            config=None,
            split="testmini",
            local_files=("data/testmini-*.parquet",),
            schema="dataset card (configs: testmini -> data/testmini-*; pid, question, decoded_image, choices, "
            "unit, precision, answer, question_type multi_choice|free_form, answer_type, query) and "
            "lmms-eval tasks/mathvista; gold is the choice text for multi_choice",
            doc_id=lambda d: _text(d["pid"]),
            question=lambda d: _with_instruction(d.get("query") or d["question"]),
            image_column="decoded_image",
            gold=lambda d: _text(d["answer"]),
            rules=_mathvista_rules,
        ),
        Benchmark(
            name="mathverse",
            hub_id="AI4Math/MathVerse",
            config="testmini",
            split="testmini",
            local_files=("testmini.parquet",),
            schema="dataset card (config testmini -> testmini.parquet, 3,940 rows = 5 versions with an image; "
            "Text Only is the separate testmini_text_only config) and lmms-eval tasks/mathverse: sample_index, "
            "problem_version, question, image, answer (a letter for multi-choice), question_type, query_cot",
            doc_id=lambda d: _text(d["sample_index"]),
            question=lambda d: _with_instruction(d.get("query_cot") or d["question"]),
            image_column="image",
            gold=lambda d: _text(d["answer"]),
            rules=_mathverse_rules,
            keep=("problem_version", lambda v: v != "Text Only"),
        ),
        Benchmark(
            name="mathvision",
            hub_id="MathLLMs/MathVision",
            config=None,
            split="test",
            local_files=("data/test-*.parquet",),
            schema="dataset card (splits test 3,040 / testmini 304 -> data/<split>-*; id, question, options "
            "(list, empty for free form), decoded_image, answer (a letter when options)) and lmms-eval tasks/mathvision",
            doc_id=lambda d: _text(d["id"]),
            question=_mathvision_question,
            image_column="decoded_image",
            gold=lambda d: _text(d["answer"]),
            rules=_mathvision_rules,
        ),
        Benchmark(
            name="mmk12",
            hub_id="FanqingM/MMK12",
            config=None,
            split="test",
            local_files=("data/test-*.parquet", "data/test.parquet"),
            schema="public loaders (MM-Eureka eval scripts, lmms-eval mmk12): test split, 2,000 multiple-choice rows; "
            "id, subject, image, question (options inline as 'A. ...' lines), answer (the letter); files under data/",
            doc_id=lambda d: _text(d["id"]),
            question=lambda d: _with_instruction(d["question"]),
            image_column="image",
            gold=lambda d: _text(d["answer"]).strip(),
            rules=_mmk12_rules,
        ),
        Benchmark(
            name="r1_onevision_bench",
            hub_id="Fancy-MLLM/R1-Onevision-Bench",
            config=None,
            split="train",
            local_files=("*.tsv",),
            schema="Hub file list (one r1-onevision.tsv; the Hub names its only split 'train') and public loaders: "
            "index, image (base64), question, choices (text, may be empty), answer (a letter or a value), level, category",
            doc_id=lambda d: _text(d["index"]),
            question=_r1_onevision_question,
            image_column="image",
            gold=lambda d: _text(d["answer"]).strip(),
            rules=_r1_onevision_rules,
            file_format="tsv",
        ),
        Benchmark(
            name="hallusionbench",
            hub_id="lmms-lab/HallusionBench",
            config=None,
            split="image",
            local_files=("data/image-*.parquet",),
            schema="dataset card (splits image 951 / non_image 178 -> data/<split>-*; category, subcategory, "
            "set_id, figure_id, question_id, question, gt_answer '1' yes / '0' no, image) and lmms-eval hallusion_bench",
            doc_id=_hallusion_id,
            question=_hallusion_question,
            image_column="image",
            gold=lambda d: "yes" if _text(d["gt_answer"]).strip() == "1" else "no",
            rules=lambda d: Rules(fallback="yes_no"),
        ),
        Benchmark(
            name="wemath",
            hub_id="We-Math/We-Math",
            config=None,
            split="testmini",
            local_files=("data/testmini-*.parquet",),
            schema="Hub file list (data/testmini-00000-of-00001-*.parquet) and lmms-eval tasks/wemath: ID, split, "
            "knowledge concept, question, option ('A. x; B. y; ...'), answer (the letter), key, image_path (the image)",
            doc_id=lambda d: _text(d["ID"]),
            question=lambda d: _with_instruction(f"{_clean_text(d['question'])}\n{_text(d['option'])}"),
            image_column="image_path",
            gold=lambda d: _text(d["answer"]).strip(),
            rules=lambda d: _letter_rules(parse_choices(d["option"])),
        ),
        Benchmark(
            name="logicvista",
            hub_id="lscpku/LogicVista",
            config=None,
            split="test",
            local_files=("data/test-*.parquet",),
            schema="lmms-eval tasks/logicvista and public loaders: test split; id, question (options written in "
            "the text), answer (letters, possibly several: 'A, C'), reasoning, image, skill",
            doc_id=lambda d: _text(d["id"]),
            question=lambda d: _with_instruction(d["question"]),
            image_column="image",
            gold=lambda d: _text(d["answer"]).strip(),
            rules=lambda d: Rules(fallback="letter", multi_select=True),
        ),
        *(_toy(name) for name in TOY_SUITE),
    )
}
BENCHMARK_NAMES: tuple[str, ...] = tuple(BENCHMARKS)
SUITES: dict[str, tuple[str, ...]] = {"toy_suite": TOY_SUITE}  # one name for several benchmarks (--benchmarks, --eval)


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARK_NAMES)}")
    return BENCHMARKS[name]


def parse_benchmarks(names) -> list[str]:
    """``"mathvista,mathverse"`` or a list of names -> checked names, in order, without repeats; a suite's name
    (``SUITES``: ``toy_suite``) stands for its benchmarks."""
    if isinstance(names, str):
        names = names.split(",")
    valid = f"valid names: {', '.join(BENCHMARK_NAMES)}; suites: {', '.join(SUITES)}"
    out: list[str] = []
    for name in (n.strip() for n in names):
        if name and name not in BENCHMARKS and name not in SUITES:
            raise UnknownBenchmarkError(f"unknown benchmark {name!r}; {valid}")
        out.extend(b for b in SUITES.get(name, (name,)) if b and b not in out)
    if not out:
        raise UnknownBenchmarkError(f"no benchmark given; {valid}")
    return out
