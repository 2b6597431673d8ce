"""Whole-word masking fixtures for tests/test_data.c: word starts of real
tokenizations, by mlmgpu's rule and by HF's whole-word collator, for both kinds of
vocabulary.

    tests/fixtures/wwm_words.wordpiece   tokenizer_sample.txt by BertTokenizerFast over
                                         data/sample/vocab.txt (bert-base-uncased)
    tests/fixtures/wwm_words.bpe         the same lines by RobertaTokenizerFast over
                                         tests/fixtures/bpe_vocab/

One line per sample line: A (1 when the line is printable ASCII with single spaces,
else 0), then `id:rule:hf` per token, [CLS]/<s> and [SEP]/</s> included.
rule is 1 where the issue's rule starts a word, computed here from HF's token strings:
not [PAD] [CLS] [SEP] [MASK] (or <pad> <s> </s> <mask>), and either a token that can
begin a word (WordPiece: not a "##" piece, as BERT's whole-word masking and HF's
DataCollatorForWholeWordMask of transformers 4 decide; BPE: a token starting with the
space marker U+0120) or [UNK], or the token after a special token. hf is where
transformers 5's DataCollatorForLanguageModeling(whole_word_mask=True) starts a word
(its own `_calc_word_ids_and_prob_mask`, from the fast tokenizer's character
offsets: a gap before the token, or a special token before it). The two differ: HF 5
joins punctuation to the word before it when no space separates them ("hello," is
one word; WordPiece splits it, so the rule makes "," a word), and starts a "word" at
each byte-level token inside one multi-byte character (its offsets do not advance);
on ASCII text with single spaces the BPE rule and HF 5 agree (tests/test_data.c
checks both).

Run from the repository root: python3 tests/reference/make_wwm_fixtures.py
"""
import json
import os

import numpy as np
from tokenizers import AddedToken
from transformers import BertTokenizerFast, RobertaTokenizerFast
from transformers.data.data_collator import DataCollatorForLanguageModeling

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures")


def tokenizers():
    bert = BertTokenizerFast(os.path.join(ROOT, "data", "sample", "vocab.txt"), do_lower_case=True)
    vocab, merges = os.path.join(FIX, "bpe_vocab", "vocab.json"), os.path.join(FIX, "bpe_vocab", "merges.txt")
    roberta = RobertaTokenizerFast(vocab, merges,
                                   mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False,
                                                         special=True))
    # transformers 5 silently ignores vocab files in some constructors: make sure these did not
    assert len(bert) == 30522, len(bert)
    assert len(roberta) == len(json.load(open(vocab, encoding="utf-8"))), len(roberta)
    return {"wordpiece": bert, "bpe": roberta}


def word_starts(tok, kind, line):
    """ids, the rule's flags and HF 5's flags of one line."""
    enc = tok(line, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids = enc["input_ids"]
    offsets = np.array([enc["offset_mapping"]])
    special = np.array([enc["special_tokens_mask"]])
    _, no_mask = DataCollatorForLanguageModeling._calc_word_ids_and_prob_mask(offsets, special)
    hf = (~no_mask[0]).astype(int).tolist()
    structural = {tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id}
    specials = set(tok.all_special_ids)
    rule = []
    for i, (id_, token) in enumerate(zip(ids, tok.convert_ids_to_tokens(ids))):
        begins = not token.startswith("##") if kind == "wordpiece" else token.startswith("\u0120")
        after_special = i == 0 or ids[i - 1] in specials
        rule.append(int(id_ not in structural and (begins or id_ == tok.unk_token_id or after_special)))
    return ids, rule, hf


def main():
    lines = open(os.path.join(FIX, "tokenizer_sample.txt"), encoding="utf-8", errors="replace").read().split("\n")
    lines = [l for l in lines if l.strip()]
    for kind, tok in tokenizers().items():
        path = os.path.join(FIX, "wwm_words." + kind)
        tokens = starts = differ = 0
        with open(path, "w", encoding="utf-8") as f:
            for line in lines:
                ids, rule, hf = word_starts(tok, kind, line)
                plain = all(" " <= c <= "~" for c in line) and "  " not in line
                f.write("%d " % plain + " ".join("%d:%d:%d" % p for p in zip(ids, rule, hf)) + "\n")
                tokens += len(ids)
                starts += sum(rule)
                differ += sum(a != b for a, b in zip(rule, hf))
        print("%s: %d lines, %d tokens, %d word starts, %d tokens where HF 5's collator differs"
              % (path, len(lines), tokens, starts, differ))


if __name__ == "__main__":
    main()
