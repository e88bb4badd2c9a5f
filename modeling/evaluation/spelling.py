"""False corrections and fixed misspellings of query understanding's spelling correction.

    python -m modeling.evaluation.spelling --catalog ../shared/data

Prints, per English vocabulary (wordfreq, symspellpy's bundled list) and threshold (`--min-zipf`):
- the share of wordfreq's 20,000 most frequent English words (those of 3+ letters) that a query of that word alone
  gets rewritten (the text the encoders see changes): target <= 0.2%;
- the catalog's title words rewritten: target 0;
- the share of misspelling-tagged queries of the dev files fixed: a line with an "intended" field is fixed when the
  parse of the misspelt query finds what the intended query's parse finds (same intents and negations, same values);
  one without is fixed when the parse names an article type of the line's `match`: target >= 90%;
- real words left alone: the share of "realword"-tagged queries (real words that look like catalog words) whose
  text is not rewritten.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

from modeling.data.queries import load_queries
from modeling.retrieval.understanding.parser import QueryParser, catalog_words
from modeling.retrieval.understanding.spelling import ENGLISH_MIN_ZIPF, VOCABULARIES, EnglishVocabulary
from modeling.utils.io import atomic_write_text

DEV_FILES = ("queries/shopper_dev.jsonl", "queries/everyday_dev.jsonl")
TOP_WORDS = 20000
LOOKALIKE_TAGS = ("realword", "lookalike")


def english_top_words(n: int = TOP_WORDS) -> list[str]:
    """wordfreq's `n` most frequent English words, those of 3+ letters only."""
    from wordfreq import top_n_list

    return [w for w in top_n_list("en", n) if re.fullmatch(r"[a-z]{3,}", w)]


def rewritten(parser: QueryParser, words) -> list[str]:
    """The words a one-word query of which is rewritten by spelling correction."""
    return [w for w in words if parser.parse(w).search_text != w]


def _understood(parsed) -> tuple:
    return (frozenset((i.attribute, frozenset(i.values)) for i in parsed.intents),
            frozenset((i.attribute, frozenset(i.values)) for i in parsed.negations))


def misspelling_fixed(parser: QueryParser, line: dict) -> bool:
    parsed = parser.parse(line["query"])
    if "intended" in line:
        return _understood(parsed) == _understood(parser.parse(line["intended"]))
    wanted = set(line["match"].get("articleType", []))
    found = parsed.get("articleType")
    return found is not None and bool(set(found.values) & wanted) if wanted else True


def measure(parser: QueryParser, top: list[str], titles: set[str], dev: dict[str, list[dict]]) -> dict:
    false = rewritten(parser, top)
    out = {"top_words": len(top), "top_rewritten": len(false), "top_share": len(false) / max(len(top), 1),
           "top_examples": false[:12], "catalog_words": len(titles), "catalog_rewritten": rewritten(parser, titles),
           "misspellings": {}, "lookalikes": {}}
    for name, lines in dev.items():
        tagged = [q for q in lines if "misspelling" in q.get("tags", [])]
        fixed = [misspelling_fixed(parser, q) for q in tagged]
        out["misspellings"][name] = {"queries": len(tagged), "fixed": sum(fixed),
                                     "missed": [q["query"] for q, ok in zip(tagged, fixed) if not ok]}
        alike = [q for q in lines if set(LOOKALIKE_TAGS) & set(q.get("tags", []))]
        kept = [q["query"] for q in alike if not parser.parse(q["query"]).corrected]
        out["lookalikes"][name] = {"queries": len(alike), "left_alone": len(kept)}
    fixed = sum(m["fixed"] for m in out["misspellings"].values())
    total = sum(m["queries"] for m in out["misspellings"].values())
    out["misspelling_accuracy"] = fixed / total if total else None
    return out


def _line(vocabulary: str, zipf: float, m: dict) -> str:
    acc = "–" if m["misspelling_accuracy"] is None else f"{m['misspelling_accuracy']:.1%}"
    per_file = ", ".join(f"{n} {v['fixed']}/{v['queries']}" for n, v in m["misspellings"].items())
    alike = ", ".join(f"{n} {v['left_alone']}/{v['queries']}" for n, v in m["lookalikes"].items() if v["queries"])
    return (f"| {vocabulary} | {zipf:g} | {m['top_rewritten']}/{m['top_words']} ({m['top_share']:.2%}) | "
            f"{len(m['catalog_rewritten'])}/{m['catalog_words']} | {acc} ({per_file}) | {alike or '–'} |")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--catalog", default="../shared/data", help="folder holding metadata.csv")
    p.add_argument("--dev-files", nargs="*", default=list(DEV_FILES), help="missing files are skipped")
    p.add_argument("--vocabularies", nargs="*", default=list(VOCABULARIES), choices=VOCABULARIES)
    p.add_argument("--min-zipf", nargs="*", type=float, default=[2.5, ENGLISH_MIN_ZIPF, 3.25])
    p.add_argument("--output", default=None, help="optional JSON file for the figures")
    args = p.parse_args(argv)
    items = pd.read_csv(Path(args.catalog) / "metadata.csv", dtype=str).fillna("")
    titles = catalog_words(items["title"])
    top = english_top_words()
    dev = {Path(f).name: load_queries(f) for f in args.dev_files if Path(f).exists()}
    print(f"wordfreq's top {TOP_WORDS} words: {len(top)} of 3+ letters; {len(titles)} catalog title words; "
          f"dev files: {', '.join(dev) or 'none'}\n")
    print("| vocabulary | min Zipf | top words rewritten | catalog words rewritten | misspellings fixed | "
          "lookalikes left alone |\n|---|---:|---:|---:|---|---|")
    results = {}
    for vocabulary in args.vocabularies:
        english = EnglishVocabulary(vocabulary)
        for zipf in args.min_zipf:
            parser = QueryParser.from_items(items, vocabulary=english)
            parser.speller.min_zipf = zipf
            m = results[f"{vocabulary}@{zipf:g}"] = measure(parser, top, titles, dev)
            print(_line(vocabulary, zipf, m), flush=True)
    for name, m in results.items():
        missed = {f: v["missed"] for f, v in m["misspellings"].items() if v["missed"]}
        print(f"\n{name}: rewritten top words e.g. {m['top_examples']}; catalog words rewritten "
              f"{m['catalog_rewritten'][:10]}; misspellings missed {missed}")
    if args.output:
        atomic_write_text(Path(args.output), json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
