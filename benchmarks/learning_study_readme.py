"""Rewrite the learning-study tables of docs/learning_study.md from the study's JSONs, so every number there comes
from a file.

Replaces what lies between ``<!-- study tables -->`` / ``<!-- /study tables -->`` (one table per study and the paired
comparisons) and ``<!-- confidence table -->`` / ``<!-- /confidence table -->`` in the page given by ``--readme``
(default: docs/learning_study.md, from the repo root); links are relative to that page::

    python benchmarks/learning_study_readme.py docs/learning_study/learning_study_g1_bottle_pick.json \
        docs/learning_study/learning_study_so101_record_test.json docs/learning_study/learning_study_fastplus_demo.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from study.tables import markdown_comparisons, markdown_confidence, markdown_study_table

COMPARISONS_INTRO = (
    "Paired per seed (MSE difference first minus second; negative favours the first; equal time: the first given the\n"
    "training time the second took for all its steps):"
)


def replace_block(text: str, marker: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {marker} -->\n).*?(\n<!-- /{marker} -->)", re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"the page has no '<!-- {marker} -->' ... '<!-- /{marker} -->' block to replace.")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def readme_blocks(paths: list[Path], readme: Path) -> dict[str, str]:
    results = [json.loads(path.read_text()) for path in paths]
    link = lambda path: Path(os.path.relpath(path, readme.parent)).as_posix()  # noqa: E731
    tables = [
        markdown_study_table(r, link(p), link(p.with_suffix(".png"))) for r, p in zip(results, paths, strict=True)
    ]
    study = "\n\n".join([*tables, COMPARISONS_INTRO + "\n\n" + markdown_comparisons(results)])
    return {"study tables": study, "confidence table": markdown_confidence(results)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rewrite the learning-study tables of a page from the study's JSONs.")
    parser.add_argument("results", nargs="+", type=Path, help="learning_study.py JSONs, in the page's order")
    parser.add_argument(
        "--readme", type=Path, default=Path("docs/learning_study.md"), help="the page holding the marker blocks"
    )
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    for marker, body in readme_blocks(args.results, args.readme).items():
        text = replace_block(text, marker, body)
    args.readme.write_text(text)
    print(f"rewrote the study and confidence tables in {args.readme}")


if __name__ == "__main__":
    main()
