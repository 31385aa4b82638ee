"""Topic words that read as words: Japanese segmented with SudachiPy (dictionary forms, function words dropped),
English lower-cased without stop words; c-TF-IDF English words per topic; NPMI coherence and diversity.

See pipelines/topics.py for why Sudachi and how the words were measured.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from pipelines.schema import STOP_WORDS_JA, BOILERPLATE_JA, STOP_WORDS_EN_EXTRA  # noqa: F401

_KEEP_POS = {"名詞", "動詞", "形容詞"}
_DROP_POS2 = {"非自立可能", "数詞", "代名詞"}
_LATIN = re.compile(r"^[A-Za-z][A-Za-z\-']*$")
_KANJI = re.compile(r"[\u4e00-\u9fff]")
# Formal nouns and function verbs that carry no theme, in the forms people write them; with the stop words they are
# matched against every form Sudachi gives (surface, dictionary, normalised), so ため and 為 both go.
FUNCTION_WORDS_JA = frozenset({
    "よる", "因る", "依る", "拠る", "ため", "為", "こと", "事", "もの", "物", "ところ", "所", "とき", "わけ", "訳", "はず", "筈",
    "つもり", "ほう", "うち", "たび", "度",
})


_PIECE_BREAK = re.compile(r"(?<=[^\x00-\x7f]) | (?=[^\x00-\x7f])")
_MEMO_MAX = 500_000  # remembered pieces (a 1M-verbatim assignment never tokenizes; the fit sample is 20,000)
_MAX_CHARS = 12_000  # Sudachi refuses inputs over 49,149 bytes; c-TF-IDF joins a whole topic into one text


def _chunks(text: str, limit: int = _MAX_CHARS):
    """Split at spaces (BERTopic joins documents with one) into pieces Sudachi accepts."""
    start = 0
    while len(text) - start > limit:
        cut = text.rfind(" ", start, start + limit)
        cut = cut if cut > start else start + limit
        yield text[start:cut]
        start = cut
    yield text[start:]


class Tokenizer:
    """Callable for scikit-learn's CountVectorizer: nouns, verbs, adjectives as people write them.

    A word is shown in its dictionary form (使い → 使う, ゴミ箱 stays ゴミ箱), never Sudachi's normalised form, which
    gives spellings no reader uses (塵箱, 其々, 御客様, 為). Stop words are expanded to every form Sudachi gives them
    and a word is dropped when any of its forms is a stop word.
    """

    def __init__(self, stop_words: list[str]):
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
        from sudachipy import Dictionary, SplitMode

        self._tok = Dictionary(dict="core").create(SplitMode.C)
        self._memo: dict[str, list[str]] = {}
        self._stop = self._all_forms(set(stop_words) | FUNCTION_WORDS_JA) | set(ENGLISH_STOP_WORDS) | set(STOP_WORDS_EN_EXTRA)

    def _all_forms(self, words: set[str]) -> set[str]:
        out = set(words)
        for word in words:
            morphemes = list(self._tok.tokenize(word)) if word.strip() else []
            if len(morphemes) == 1:  # a stop word Sudachi reads as one word: its other spellings are stop words too
                out |= {morphemes[0].dictionary_form(), morphemes[0].normalized_form()}
        return out

    def __call__(self, text: str) -> list[str]:
        # Words by piece, remembered: c-TF-IDF joins a topic's verbatims with spaces, twice per fit, and coherence
        # reads them one by one, so each Japanese verbatim is segmented once. Cut only at a space beside a non-ASCII
        # character: Sudachi has words with a space inside ("repair shop"), all ASCII (tests/test_topics.py).
        words: list[str] = []
        for piece in _PIECE_BREAK.split(text):
            if not piece:
                continue
            found = self._memo.get(piece)
            if found is None:
                found = [w for chunk in _chunks(piece) for w in self._words(chunk)]
                if len(self._memo) < _MEMO_MAX:
                    self._memo[piece] = found
            words += found
        return words

    def _words(self, text: str) -> list[str]:
        words: list[str] = []
        for m in self._tok.tokenize(text):
            pos = m.part_of_speech()
            if pos[0] not in _KEEP_POS or pos[1] in _DROP_POS2:
                continue
            surface = m.surface()
            if _LATIN.match(surface):
                word = surface.lower()
                if len(word) < 2 or "'" in word:  # contractions (can't, don't) are stop words
                    continue
                forms = {word}
            else:
                word = m.dictionary_form()
                # Single kana carry no meaning as topic words.
                if len(word) < 2 and not _KANJI.match(word):
                    continue
                forms = {surface, word, m.normalized_form()}
            if forms.isdisjoint(self._stop) and not word.isdigit():
                words.append(word)
        return words

    def __getstate__(self):  # Sudachi's dictionary handle cannot be pickled: rebuild on load
        return {"stop": sorted(self._stop)}

    def __setstate__(self, state):
        self.__init__(state["stop"])


def npmi_coherence(topic_words: list[list[str]], tokenized_docs: list[list[str]], top_k: int = 10) -> list[float]:
    """Mean NPMI over word pairs of each topic's top words, from document co-occurrence in ``tokenized_docs``.

    NPMI(a, b) = log(p(a,b) / (p(a) p(b))) / -log p(a,b), with p = share of documents containing the
    word(s); a pair that never co-occurs scores -1 (Bouma 2009; Röder et al. 2015 "C_NPMI" over whole documents).
    """
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    vocab = sorted({w for ws in topic_words for w in ws[:top_k]})
    if not vocab or not tokenized_docs:
        return [float("nan")] * len(topic_words)
    cv = CountVectorizer(analyzer=lambda d: d, vocabulary=vocab, binary=True)
    x = sparse.csc_matrix(cv.transform(tokenized_docs))
    n = x.shape[0]
    p = np.asarray(x.sum(axis=0)).ravel() / n
    co = (x.T @ x).toarray() / n
    index = {w: i for i, w in enumerate(vocab)}
    scores = []
    for ws in topic_words:
        ids = [index[w] for w in ws[:top_k]]
        vals = []
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                i, j = ids[a], ids[b]
                pij = co[i, j]
                if pij <= 0 or p[i] == 0 or p[j] == 0:
                    vals.append(-1.0)
                elif pij >= 1:
                    vals.append(1.0)
                else:
                    vals.append(float(np.log(pij / (p[i] * p[j])) / -np.log(pij)))
        scores.append(float(np.mean(vals)) if vals else float("nan"))
    return scores


_LATIN_WORD = re.compile(r"^[a-z][a-z\-]*$")


def english_words(topics: np.ndarray, texts: list[str], langs: list[str], tokenizer, n: int) -> dict[int, list[str]]:
    """Per topic: c-TF-IDF top words over its English verbatims only (for English labels: the mixed
    c-TF-IDF ranks Japanese words first, and a handful of English ones would be noise)."""
    from bertopic.vectorizers import ClassTfidfTransformer
    from sklearn.feature_extraction.text import CountVectorizer

    en = [i for i, lang in enumerate(langs) if lang == "en" and topics[i] != -1]
    ids = sorted({int(topics[i]) for i in en})
    if not ids:
        return {}
    joined = [" ".join(texts[i] for i in en if topics[i] == t) for t in ids]
    cv = CountVectorizer(tokenizer=tokenizer, lowercase=False, token_pattern=None)
    try:
        counts = cv.fit_transform(joined)
    except ValueError:  # no English word survived the stop lists
        return {}
    scores = ClassTfidfTransformer().fit_transform(counts).toarray()
    vocab = cv.get_feature_names_out()
    out = {}
    for row, t in enumerate(ids):
        n_docs = sum(1 for i in en if topics[i] == t)
        order = np.argsort(-scores[row], kind="stable")
        words = [vocab[j] for j in order if scores[row, j] > 0 and _LATIN_WORD.match(vocab[j])][:n]
        out[t] = words if n_docs >= 3 else []  # fewer English verbatims than that: no English words to trust
    return out


def topic_diversity(table: pl.DataFrame, top_k: int = 10) -> float:
    """Share of unique words among all topics' top words (1.0 = no word repeats across topics)."""
    words = [w for ws in table.filter(pl.col("topic") != -1)["words"].to_list() for w in ws[:top_k]]
    return len(set(words)) / len(words) if words else 0.0
