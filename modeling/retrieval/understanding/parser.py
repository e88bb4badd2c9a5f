"""Query understanding: what a shopper's words say about the product, what they rule out, and what is left.

"sneakers for women" names a type (Casual Shoes / Sports Shoes) and a gender; "running shoes that are not black"
rules a colour out. Dense encoders blur both: MiniLM places "not black" close to "black", and BM25 lets a sock whose
title says "Sneakers" beat every shoe. `QueryParser.parse` turns the text into `Intent`s — attribute (gender,
article type, colour, usage, season), catalog values, confidence, the words they came from — plus negated intents
and the free words left, and the engine adds them to the fused score as soft boosts and penalties (`boosts.py`:
`AttributeCodes.intent_scores`): an item of the intended type and gender climbs, a black one sinks, nothing is
filtered away.

Where the words come from, best first:
1. the catalog's own values ("Casual Shoes", "Navy Blue", "Women"), word by word with light plural folding;
2. a synonym lexicon kept as data (`lexicon.json`: "sneakers", "tee", "ladies", "navy", "for office"; British,
   American and Indian English), including weak hints ("wedding" -> Ethnic) that count for less;
3. spelling correction of unknown words (`spelling.py`: optimal string alignment distance, "sneekers", "tshrit",
   "sunglases") — never of a real English word ("tall", "nurse", "most" are not "fall", "purse", "mist") nor of a
   word the catalog's titles use ("puma" is a brand, not a misspelt "pumps"), and at reduced confidence;
4. a learned fallback (`IntentHeads`, `heads.py`): linear heads over the MiniLM query embedding, trained on the
   item descriptions of the training split, consulted for the article type when the words named none and some
   words nobody listed.

Spelling is corrected first (phrases then match the corrected words: "formel shoes" -> Formal Shoes), at reduced
confidence. Then the product is told from its context (`context.py`): in "sandals to go with a yellow skirt" the
skirt and its yellow are what the sandals go with, so they become context hints (`QueryIntent.context`, shown
greyed, no boost) and leave the text the encoders embed; gender and season words stay wishes.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from modeling.retrieval.common.lexical import fold
from modeling.retrieval.understanding.context import CONTEXT_ATTRIBUTES, FINDERS, WORD, marker_words
from modeling.retrieval.understanding.implied import implied_types
from modeling.retrieval.understanding.spelling import EnglishVocabulary, Speller
from modeling.retrieval.understanding.vocabulary import catalog_vocabulary, catalog_words  # noqa: F401 - re-exported

INTENT_ATTRIBUTES = ("gender", "articleType", "baseColour", "usage", "season")
NOT = "not:"  # chip key prefix of a negation
LEXICON_FILE = Path(__file__).with_name("lexicon.json")
# Words that rule out what follows them ("not black", "without heels", "no white or grey").
NEGATIONS = frozenset({"not", "no", "without", "except", "excluding", "exclude", "non", "never", "avoid", "nothing",
                       "dont", "don't", "isn't", "isnt", "aren't", "arent", "doesn't", "doesnt", "minus", "but not",
                       "other than", "anything but", "apart from"})
# Words a negation's scope runs through ("not black or brown", "no white, grey").
NEGATION_CONTINUES = frozenset({"or", "and", "nor", "any", "a", "an", "the", "in", "color", "colour", "coloured",
                                "colored", "too", "very", "that", "is", "are", "be"})
NEGATION_SCOPE = 4  # filler words a negation's scope may skip
CONJUNCTIONS = frozenset({"or", "and", "nor"})
# Confidence by where an intent came from (weak lexicon hints carry their own).
CONFIDENCE = {"catalog": 1.0, "lexicon": 0.9, "weak": 0.5, "fuzzy": 0.75, "narrow": 0.5}
# Phrase sources that name no product of their own: weak hints ("leather": wallets, belts...) and narrowing hints
# ("trip": the travel bags, only among the types of a product named broadly, "bag for a trip").
HINT_SOURCES = ("weak", "narrow")
# A catalog value needs this many items to be worth recognising ("Home" usage has one).
MIN_VALUE_ITEMS = 3
MAX_PHRASE_WORDS = 4
# How context phrases ("sandals to go with a yellow skirt") are found ("rules" or "spacy", `context.py`) and whether
# their words leave the text the encoders see; chosen on the dev files (docs/results.md).
CONTEXT_FINDER = "rules"
DROP_CONTEXT_TEXT = True


def normalise_words(text: str) -> list[str]:
    """Lower-cased words with possessives dropped ("women's" -> "women") and plurals folded ("shoes" -> "shoe")."""
    words = []
    for word in WORD.findall(str(text).lower()):
        word = re.sub(r"['\u2019](s)?$", "", word).replace("\u2019", "'")
        words.append(fold(word))
    return words


def _raw_words(text: str) -> list[str]:
    return WORD.findall(str(text).lower())


@dataclass(frozen=True)
class Intent:
    """One thing the query says (or rules out) about the product."""

    attribute: str
    values: tuple[str, ...]
    confidence: float
    phrase: str  # the words it came from, as typed
    source: str  # "catalog", "lexicon", "weak", "fuzzy" or "learned"

    @property
    def label(self) -> str:
        return " / ".join(self.values)

    def to_dict(self) -> dict:
        return {**asdict(self), "values": list(self.values), "confidence": round(float(self.confidence), 3)}


@dataclass(frozen=True)
class QueryIntent:
    """What `QueryParser.parse` understood: `intents` (boosts), `negations` (penalties), the `free_words` nothing
    explained, and `search_text`: the query without its negated words, which is what the encoders embed."""

    query: str
    search_text: str
    intents: tuple[Intent, ...] = ()
    negations: tuple[Intent, ...] = ()
    free_words: tuple[str, ...] = ()
    removed: tuple[str, ...] = field(default=())  # attributes the shopper switched off (chips removed)
    corrected: tuple[tuple[str, str], ...] = ()  # (word as typed, product word meant) per spelling correction
    context: tuple[Intent, ...] = ()  # what the product goes with or is for: hints, not wishes
    # the types of a broadly named product that the rest of the query picks out ("shoes to go with a suit": Formal
    # Shoes of the five kinds of shoe): an extra boost on those types, gone with the type or the usage chip
    implied: tuple[Intent, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.intents or self.negations)

    def chips(self) -> list[str]:
        """Short labels for the app: "Women", "Casual Shoes / Sports Shoes", "not Black"."""
        return [label for label, _ in self.chip_keys()]

    def chip_keys(self) -> list[tuple[str, str]]:
        """(label, key) per chip: the key is the attribute of an intent ("gender") or "not:" + the attribute of a
        negation ("not:baseColour"), what `without` takes to switch it off."""
        return [(i.label, i.attribute) for i in self.intents] + [(f"not {i.label}", f"{NOT}{i.attribute}")
                                                                 for i in self.negations]

    def context_chips(self) -> list[str]:
        """Labels of what the product goes with or is for ("Skirts", "Yellow"): shown apart from the chips, greyed,
        as hints that are not wished for."""
        return [i.label for i in self.context]

    def without(self, *keys: str) -> "QueryIntent":
        """The same understanding with some chips switched off: an attribute name drops its intent and its
        negation, "not:<attribute>" the negation only."""
        drop = set(keys)
        return replace(self, intents=tuple(i for i in self.intents if i.attribute not in drop),
                       implied=() if drop & {"articleType", "usage"} else self.implied,
                       negations=tuple(i for i in self.negations
                                       if i.attribute not in drop and f"{NOT}{i.attribute}" not in drop),
                       removed=tuple(dict.fromkeys([*self.removed, *keys])))

    def narrowed_to(self, reference: Mapping[str, str]) -> "QueryIntent":
        """A reference product's own value where an intent only names it more broadly: "same shoe in grey" of a
        pair of Casual Shoes keeps Casual Shoes, not every kind of shoe."""
        narrowed = tuple(replace(i, values=(str(reference[i.attribute]),)) if len(i.values) > 1
                         and str(reference.get(i.attribute, "")) in i.values else i for i in self.intents)
        return replace(self, intents=narrowed, implied=())

    def get(self, attribute: str) -> Intent | None:
        return next((i for i in self.intents if i.attribute == attribute), None)

    def to_dict(self) -> dict:
        return {"query": self.query, "search_text": self.search_text,
                "intents": [i.to_dict() for i in self.intents], "negations": [i.to_dict() for i in self.negations],
                "free_words": list(self.free_words), "chips": self.chips(), "removed": list(self.removed),
                "corrected": [list(c) for c in self.corrected], "context": [i.to_dict() for i in self.context],
                "context_chips": self.context_chips(), "implied": [i.to_dict() for i in self.implied]}


def load_lexicon(path: str | Path = LEXICON_FILE) -> dict:
    """The synonym lexicon (see `lexicon.json`'s "about"); a malformed file is an error naming what is wrong."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data.get("attributes"), dict):
        raise ValueError(f"{path}: needs an 'attributes' object of attribute -> {{phrase: [values]}}")
    return data


class QueryParser:
    """Maps free text to attribute intents over a catalog's vocabulary.

    Args:
        values: attribute -> the catalog's values (with their item counts, or a plain list).
        lexicon: the synonym lexicon (a path or the loaded dict); phrases mapping to values the catalog does not
            have are ignored, so one lexicon serves any catalog.
        known_words: words of the catalog's titles; a word listed here is never fuzzily "corrected".
        heads: the learned fallback (`IntentHeads`) or None.
        vocabulary: the English vocabulary whose words are never corrected (`spelling.EnglishVocabulary`, wordfreq
            by default).
        context: how context phrases are found ("rules", "spacy" or None for none); their type, colour and usage
            words become context hints, not wishes.
        drop_context_text: whether context words leave the text the encoders embed.
        type_usage: article type -> {usage: share of the type's items}, the catalog's own statistics from which a
            usage wish implies some types of a broadly named product (`from_items` counts them); None: no such
            implication.
    """

    def __init__(self, values: Mapping[str, Mapping[str, int] | Sequence[str]],
                 lexicon: str | Path | dict | None = None, known_words: Iterable[str] = (),
                 heads: "IntentHeads | None" = None, vocabulary: EnglishVocabulary | None = None,
                 context: str | None = CONTEXT_FINDER, drop_context_text: bool = DROP_CONTEXT_TEXT,
                 type_usage: Mapping[str, Mapping[str, float]] | None = None):
        self.values = {a: [v for v in (vals if not isinstance(vals, Mapping) else
                                       [v for v, n in vals.items() if n >= MIN_VALUE_ITEMS]) if str(v).strip()]
                       for a, vals in values.items() if a in INTENT_ATTRIBUTES}
        lexicon = load_lexicon(lexicon if lexicon is not None else LEXICON_FILE) if not isinstance(lexicon, dict) \
            else lexicon
        self.stopwords = frozenset(normalise_words(" ".join(lexicon.get("stopwords", [])))) | NEGATION_CONTINUES
        # phrase (normalised words) -> {attribute: (values, confidence, source)}
        self.phrases: dict[tuple[str, ...], dict[str, tuple[tuple[str, ...], float, str]]] = {}
        for attribute, vals in self.values.items():
            for value in vals:
                self._add(value, attribute, [value], "catalog")
        for attribute, entries in lexicon["attributes"].items():
            for phrase, targets in entries.items():
                self._add(phrase, attribute, targets, "lexicon")
        for phrase, hints in lexicon.get("weak", {}).items():
            for attribute, targets in hints.items():
                self._add(phrase, attribute, targets, "weak")
        for phrase, targets in lexicon.get("narrow", {}).items():
            self._add(phrase, "articleType", targets, "narrow")
        self.known_words = frozenset(w for word in known_words for w in normalise_words(word)) | {
            w for phrase in self.phrases for w in phrase}
        # Fuzzy matching corrects towards strong phrases only: a misspelt word is a product word, not a hint.
        # Corrections go towards the words of strong phrases only: a misspelt word is a product word, not a hint.
        product_words = {w for p, entry in self.phrases.items() for w in p if w not in self.stopwords
                         and any(source not in HINT_SOURCES for _, _, source in entry.values())}
        self.speller = Speller(product_words, self.known_words, self.stopwords, vocabulary)
        # what a context phrase implies of the product's usage ("shoes to go with a suit" are formal)
        self.context_usage = {key: known for phrase, targets in lexicon.get("context_usage", {}).items()
                              if (key := tuple(normalise_words(phrase)))
                              and (known := tuple(t for t in targets if t in self.values.get("usage", ())))}
        self.heads = heads
        if context is not None and context not in FINDERS:
            raise ValueError(f"unknown context finder {context!r}: choose one of {', '.join(FINDERS)} or None")
        self.context_finder = FINDERS[context]() if context is not None else None
        self.drop_context_text = drop_context_text
        self.type_usage = {t: dict(shares) for t, shares in (type_usage or {}).items()}
        types = values.get("articleType", {})
        self.type_share = {t: n / max(1, sum(types.values())) for t, n in types.items()} \
            if isinstance(types, Mapping) else {}

    @classmethod
    def from_items(cls, items, lexicon=None, heads: "IntentHeads | None" = None, **options) -> "QueryParser":
        """A parser over a catalog DataFrame's attribute values, title words and usage shares per article type
        (`options`: `vocabulary`, `context`, `drop_context_text`)."""
        vocabulary = catalog_vocabulary(items, INTENT_ATTRIBUTES)
        return cls.from_catalog_words(vocabulary, lexicon, heads=heads, **options)

    @classmethod
    def from_catalog_words(cls, catalog: Mapping, lexicon=None, heads: "IntentHeads | None" = None,
                           **options) -> "QueryParser":
        """A parser over a catalog's vocabulary (`vocabulary.catalog_vocabulary`)."""
        if "type_usage" not in options and catalog.get("type_usage") is not None:
            options["type_usage"] = catalog["type_usage"]
        return cls(catalog["values"], lexicon, known_words=set(catalog["known_words"]), heads=heads, **options)

    def _add(self, phrase: str, attribute: str, targets: Sequence[str], source: str) -> None:
        if attribute not in self.values:
            return
        known = [t for t in targets if t in self.values[attribute]]
        key = tuple(normalise_words(phrase))
        if not known or not key or len(key) > MAX_PHRASE_WORDS:
            return
        entry = self.phrases.setdefault(key, {})
        old = entry.get(attribute)
        confidence = CONFIDENCE[source]
        if old is None:
            entry[attribute] = (tuple(known), confidence, source)
        else:  # the catalog's own value and a lexicon entry for the same words: union, the surer confidence
            merged = tuple(dict.fromkeys([*old[0], *known]))
            entry[attribute] = (merged, max(old[1], confidence), old[2] if old[1] >= confidence else source)

    # -- parsing -----------------------------------------------------------------------------------------------------
    def parse(self, query: str, embedding: np.ndarray | None = None) -> QueryIntent:
        """Understand `query`; `embedding` (its MiniLM embedding) lets the learned heads fill attributes the words
        left open when some words matched nothing."""
        query = unicodedata.normalize("NFKC", str(query))  # full-width letters, ligatures: the words they are
        raw = _raw_words(query)
        words, corrected, joined, matches = self._spell_and_match(raw)
        consumed = {j for start, end, _, _ in matches for j in range(start, end)}
        negated_spans, negated_words = self._negated(words, matches)
        context = self._context(query, raw, matches, negated_spans)
        found: dict[str, dict[str, list[Intent]]] = {"wish": {}, "negated": {}, "context": {}}
        narrowers: list[Intent] = []  # "trip": which types of a broadly named product ("bag") it means
        for n, (start, end, entry, phrase) in enumerate(matches):
            in_context = all(j in context for j in range(start, end))
            for attribute, (vals, confidence, source) in entry.items():
                if source == "narrow":
                    if n not in negated_spans and not in_context:
                        narrowers.append(Intent(attribute, vals, confidence, phrase, source))
                    continue
                group = "negated" if n in negated_spans else \
                    "context" if in_context and attribute in CONTEXT_ATTRIBUTES else "wish"
                if group == "context" and attribute == "articleType" and tuple(words[start:end]) in self.context_usage:
                    continue  # "with a suit" says Formal (its implied usage), not the five things a suit can be
                found[group].setdefault(attribute, []).append(Intent(attribute, vals, confidence, phrase, source))
        for intent in self._implied_usage(raw, words, matches, context, found["context"].get("usage", [])):
            found["wish"].setdefault("usage", []).append(intent)
        intents, negations, hints = self._grouped(found)
        free = [raw[j] for j in range(len(words))
                if j not in consumed and j not in negated_words and words[j] not in self.stopwords
                and raw[j] not in NEGATIONS]
        if self.heads is not None and embedding is not None and free:
            for intent in self.heads.predict(embedding, exclude=set(intents) | set(negations) | set(hints)):
                self._merge(intents, intent)
        narrowers += [i for i in found["wish"].get("articleType", []) if i.source == "weak"]
        dropped = negated_words | (context if self.drop_context_text else set())
        return QueryIntent(query=str(query), search_text=self._search_text(raw, corrected, joined, consumed,
                                                                             dropped) or str(query), intents=tuple(intents.values()), negations=tuple(negations.values()),
                           free_words=tuple(free), corrected=self._corrections(raw, corrected, joined, consumed),
                           context=tuple(hints.values()), implied=self._implied(intents, narrowers, negations))

    @staticmethod
    def _search_text(raw: list[str], corrected: dict, joined: set[int], consumed: set[int], dropped: set[int]) -> str:
        """What the encoders embed: the words as typed, less the `dropped` positions, with each correction that
        named something in place of its word; a pair of words written for one ("brief case") becomes that one word
        ("briefcase"), so the encoders and the keyword match see the product and not the briefs."""
        words = []
        for j, word in enumerate(raw):
            if j in dropped or j - 1 in joined:
                continue
            words.append(corrected[j] if j in corrected and j in consumed else word)
        return " ".join(words)

    @staticmethod
    def _corrections(raw: list[str], corrected: dict, joined: set[int], consumed: set[int]):
        """(word as typed, product word meant) per spelling correction that named something; two real words joined
        ("brief case" -> "briefcase") are no misspelling and only show in the search text."""
        return tuple((raw[j], fixed) for j, fixed in sorted(corrected.items()) if j in consumed and j not in joined)

    def _spell_and_match(self, raw: list[str]):
        """The words (plural-folded, misspellings corrected), the corrections by position, the positions of the
        first of two words written for one ("brief case": its correction is "briefcase") and the phrase matches:
        (start, end, {attribute: (values, confidence, source)}, phrase as typed)."""
        words = [normalise_words(w)[0] if normalise_words(w) else w for w in raw]
        # misspelt word position -> the product word meant, which the encoders see instead when it names something
        corrected = {j: fixed for j, w in enumerate(words) if (fixed := self.speller.correct(w, raw[j])) is not None}
        words = [corrected.get(j, w) for j, w in enumerate(words)]
        matches: list[tuple[int, int, dict, str]] = []
        joined: set[int] = set()
        markers = marker_words(raw)
        i = 0
        while i < len(words):
            found = self._match_at(words, i) if i not in markers else None
            if found is not None:
                end, entry, scale, two_as_one = found
                if any(j in corrected for j in range(i, end)):  # a correction never makes a sure intent
                    scale = min(scale, CONFIDENCE["fuzzy"])
                if two_as_one:  # "brief case": the encoders see "briefcase"
                    corrected[i] = corrected.get(i, raw[i]) + corrected.pop(i + 1, raw[i + 1])
                    joined.add(i)
                if scale < 1.0:
                    entry = {a: (v, c * scale, "fuzzy") for a, (v, c, s) in entry.items()}
                matches.append((i, end, entry, " ".join(raw[i:end])))
                i = end
            else:
                i += 1
        return words, corrected, joined, matches

    def _context(self, query: str, raw: list[str], matches, negated_spans: set[int]) -> set[int]:
        """Word positions saying what the product goes with or is for (`context.py`), none without a finder."""
        if self.context_finder is None:
            return set()
        named: dict[str, set[int]] = {}
        for n, (start, end, entry, _) in enumerate(matches):
            for attribute, (_, _, source) in entry.items() if n not in negated_spans else ():
                if attribute != "articleType" or source not in HINT_SOURCES:  # "leather" names no product
                    named.setdefault(attribute, set()).update(range(start, end))
        return self.context_finder(query, raw, named)

    def _implied_usage(self, raw: list[str], words: list[str], matches, context: set[int],
                       hints: list[Intent]) -> list[Intent]:
        """What the context says of the product's usage, as weak wishes (they speak only where the product's own
        words name none): a context phrase of the lexicon's `context_usage` ("shoes to go with a suit": Formal)
        and the context's own usage words ("socks for my office shoes")."""
        spans = [(start, end) for start, end, _, _ in matches if all(j in context for j in range(start, end))]
        inside = {j for start, end in spans for j in range(start, end)}
        spans += [(j, j + 1) for j in sorted(context - inside)]
        implied = [Intent("usage", self.context_usage[key], CONFIDENCE["weak"], " ".join(raw[start:end]), "weak")
                   for start, end in spans if (key := tuple(words[start:end])) in self.context_usage]
        return implied + [replace(i, confidence=min(i.confidence, CONFIDENCE["weak"]), source="weak") for i in hints]

    def _implied(self, intents: Mapping[str, Intent], narrowers: Sequence[Intent],
                 negations: Mapping[str, Intent]) -> tuple[Intent, ...]:
        """`QueryIntent.implied`: the types the rest of the query picks (`implied.py`), as one intent or none."""
        found = implied_types(intents, narrowers, self.type_usage, self.type_share, negations)
        return () if found is None else (Intent("articleType", *found, "implied"),)

    def _grouped(self, found: dict[str, dict[str, list[Intent]]]):
        """Wishes, negations and context hints, one `Intent` per attribute each."""
        intents: dict[str, Intent] = {}
        negations: dict[str, Intent] = {}
        hints: dict[str, Intent] = {}
        for group, target in (("wish", intents), ("negated", negations), ("context", hints)):
            for attribute, candidates in found[group].items():
                # A weak hint only speaks when nothing firmer names the attribute: "watch with leather strap" is a
                # watch, not also the wallets and belts "leather" hints at.
                strong = [i for i in candidates if i.source != "weak"]
                # Ruling out a hint says nothing firm ("not leather" is about the material, not about wallets).
                for intent in strong if group == "negated" else strong or candidates:
                    if group == "context":
                        intent = replace(intent, confidence=min(intent.confidence, CONFIDENCE["weak"]),
                                         source="context")
                    self._merge(target, intent)
        self._reconcile(intents, negations)
        return intents, negations, hints

    def _match_at(self, words: list[str], i: int):
        """The longest phrase starting at word `i` (misspellings already corrected): (end, entry, confidence scale,
        whether two words were joined) or None. Phrases of 2+ words first, then two words written as one ("hand
        bag" -> "handbag"), then one word."""
        for n in range(min(MAX_PHRASE_WORDS, len(words) - i), 1, -1):
            entry = self.phrases.get(tuple(words[i:i + n]))
            if entry:
                return i + n, entry, 1.0, False
        if i + 1 < len(words):  # before the single word: "brief case" is a briefcase, not briefs
            joined = fold(words[i] + words[i + 1])
            entry = self.phrases.get((joined,))
            if entry and words[i] not in self.stopwords:
                return i + 2, entry, 0.95, True
        entry = self.phrases.get((words[i],))
        return (i + 1, entry, 1.0, False) if entry else None

    def _negated(self, words: list[str], matches) -> tuple[set[int], set[int]]:
        """Indices of the matches a negation rules out, and the word positions it covers (dropped from the text
        the encoders see, whether or not they named an attribute: "dress without prints").

        A negation rules out the next item — an attribute phrase or, failing that, one content word — and further
        items joined to it by "or" / "and" / "nor" ("no white or grey"); filler words ("a", "any", "in") may come
        between. "no logo tshirt" rules out the logo, not the t-shirt.
        """
        starts = {m[0]: n for n, m in enumerate(matches)}
        spans, covered = set(), set()

        def filler(k: int) -> bool:
            return k not in starts and (words[k] in NEGATION_CONTINUES or words[k] in self.stopwords) \
                and words[k] not in CONJUNCTIONS

        for j, word in enumerate(words):
            two = " ".join(words[j:j + 2])
            if word not in NEGATIONS and two not in NEGATIONS:
                continue
            k = end = j + (2 if two in NEGATIONS else 1)
            while True:
                while k < len(words) and k - j <= NEGATION_SCOPE and filler(k):
                    k += 1
                if k >= len(words) or k - j > NEGATION_SCOPE + 1:
                    break
                if k in starts:
                    spans.add(starts[k])
                    k = end = matches[starts[k]][1]
                elif words[k] not in CONJUNCTIONS and words[k] not in NEGATIONS:  # "without prints"
                    k = end = k + 1
                else:
                    break
                if k < len(words) and words[k] in CONJUNCTIONS:
                    k += 1
                    continue
                break
            covered.update(range(j, end))
        return spans, covered

    @staticmethod
    def _reconcile(intents: dict[str, Intent], negations: dict[str, Intent]) -> None:
        """An attribute both wanted and ruled out: a negation naming fewer values removes them from the wish
        ("sandals not flats"); one that covers the whole wish describes a feature and keeps away from it ("tshirt
        without collar" penalises the other collared types, not the t-shirts)."""
        for attribute in set(intents) & set(negations):
            wanted, ruled_out = set(intents[attribute].values), set(negations[attribute].values)
            if wanted <= ruled_out:
                values = tuple(v for v in negations[attribute].values if v not in wanted)
                target, name = negations, attribute
            elif ruled_out < wanted:
                values = tuple(v for v in intents[attribute].values if v not in ruled_out)
                target, name = intents, attribute
            else:
                continue
            if values:
                target[name] = replace(target[name], values=values)
            else:
                del target[name]

    @staticmethod
    def _merge(target: dict[str, Intent], intent: Intent) -> None:
        old = target.get(intent.attribute)
        if old is None:
            target[intent.attribute] = intent
        else:
            target[intent.attribute] = replace(
                old, values=tuple(dict.fromkeys([*old.values, *intent.values])),
                confidence=max(old.confidence, intent.confidence), phrase=f"{old.phrase}, {intent.phrase}")


__all__ = ["INTENT_ATTRIBUTES", "Intent", "NOT", "QueryIntent", "QueryParser", "catalog_words", "load_lexicon",
           "normalise_words"]
