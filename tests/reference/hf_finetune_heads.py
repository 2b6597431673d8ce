#!/usr/bin/env python3
"""Loads an mlmgpu checkpoint for the three fine-tuning tasks with HF transformers.

usage: hf_finetune_heads.py CHECKPOINT_DIR...

For each directory, for the family config.json names (BERT or RoBERTa), loads CHECKPOINT_DIR as
...ForSequenceClassification, ...ForTokenClassification and ...ForQuestionAnswering
with output_loading_info=True and checks, against the checkpoint's own tensors
(read with safetensors, not through transformers):

- the newly initialised weights (missing_keys) are exactly the task head: the
  classifier / qa_outputs (and, for BERT sequence classification, the pooler, which
  a BertForMaskedLM checkpoint does not hold); nothing else, nothing mismatched;
- the weights left out (unexpected_keys) are exactly the checkpoint's MLM head;
- every encoder weight of the loaded model equals the checkpoint's tensor, bit for
  bit, and the encoder gives the hidden states AutoModelForMaskedLM's encoder gives;
- AutoTokenizer.from_pretrained(CHECKPOINT_DIR) tokenizes a sentence pair and a
  forward pass gives logits of the task's shape.

Prints "DIR: ok" or one "FAIL DIR: ..." line per failure. Exit 0 when all hold for
every directory, 1 when one does not, 77 when torch or transformers is not installed
(the test reports a skip). The test passes a good and a broken checkpoint together,
so that one Python start shows the check passing and failing.
"""
import sys

try:
    import torch
    from safetensors.numpy import load_file
    import transformers
    from transformers import AutoModelForMaskedLM, AutoTokenizer
except ImportError as e:  # the test suite needs no Python; this check does
    print(f"skip: {e}")
    sys.exit(77)

# per family: the encoder's prefix, the MLM head's prefix, and for each task the
# class and the weights it adds (beside the encoder)
FAMILIES = {
    "bert": ("bert.", ("cls.",), {
        "BertForSequenceClassification": {"bert.pooler.dense.weight", "bert.pooler.dense.bias",
                                          "classifier.weight", "classifier.bias"},
        "BertForTokenClassification": {"classifier.weight", "classifier.bias"},
        "BertForQuestionAnswering": {"qa_outputs.weight", "qa_outputs.bias"},
    }),
    "roberta": ("roberta.", ("lm_head.",), {
        "RobertaForSequenceClassification": {"classifier.dense.weight", "classifier.dense.bias",
                                             "classifier.out_proj.weight", "classifier.out_proj.bias"},
        "RobertaForTokenClassification": {"classifier.weight", "classifier.bias"},
        "RobertaForQuestionAnswering": {"qa_outputs.weight", "qa_outputs.bias"},
    }),
}

NUM_LABELS = 5
transformers.logging.set_verbosity_error()   # the load report would repeat what is checked here
transformers.logging.disable_progress_bar()


def check(ckpt):
    failures = []
    saved = load_file(f"{ckpt}/model.safetensors")
    mlm = AutoModelForMaskedLM.from_pretrained(ckpt)
    family = mlm.config.model_type
    if family not in FAMILIES:
        return [f"config.json: model_type {family!r}, expected bert or roberta"]
    base, head_prefixes, tasks = FAMILIES[family]
    mlm_head = {k for k in saved if k.startswith(head_prefixes)}
    encoder = {k for k in saved if k.startswith(base)}
    if not mlm_head or not encoder or mlm_head | encoder != set(saved):
        failures.append(f"model.safetensors: expected only {base}* and {head_prefixes[0]}* tensors, "
                        f"found {sorted(set(saved) - mlm_head - encoder)[:5]}")
    tok = AutoTokenizer.from_pretrained(ckpt)
    batch = tok(["which package documents the vacuum command?", "git rebase moves commits."],
                ["the manual of the database server.", "a version control system."],
                padding=True, truncation=True, max_length=32, return_tensors="pt")
    if family == "roberta":
        batch.pop("token_type_ids", None)
    mlm.eval()
    with torch.no_grad():
        want_hidden = getattr(mlm, family)(**batch).last_hidden_state
    B, S = batch["input_ids"].shape
    for name, head in tasks.items():
        cls = getattr(transformers, name)
        labels = {} if name.endswith("QuestionAnswering") else {"num_labels": NUM_LABELS}  # QA: start, end
        model, info = cls.from_pretrained(ckpt, output_loading_info=True, **labels)
        missing, unexpected = set(info["missing_keys"]), set(info["unexpected_keys"])
        if missing != head:
            failures.append(f"{name}: newly initialised {sorted(missing)}, expected only the head {sorted(head)}")
        if unexpected != mlm_head:
            failures.append(f"{name}: left out {sorted(unexpected)}, expected the MLM head {sorted(mlm_head)}")
        if info.get("mismatched_keys") or info.get("error_msgs"):
            failures.append(f"{name}: mismatched {info.get('mismatched_keys')}, errors {info.get('error_msgs')}")
        state = model.state_dict()
        loaded = {k for k in state if k.startswith(base)} - head
        if loaded != encoder:
            failures.append(f"{name}: encoder weights {sorted(loaded ^ encoder)[:5]} are in only one of "
                            f"the model and the checkpoint")
        differ = [k for k in sorted(loaded & encoder)
                  if not torch.equal(state[k], torch.from_numpy(saved[k]))]
        if differ:
            failures.append(f"{name}: {len(differ)} encoder weights differ from the checkpoint's, "
                            f"e.g. {differ[0]}")
        model.eval()
        with torch.no_grad():
            hidden = getattr(model, family)(**batch).last_hidden_state
            out = model(**batch)
        if not torch.equal(hidden, want_hidden):
            failures.append(f"{name}: the encoder's hidden states differ from AutoModelForMaskedLM's "
                            f"(max {float((hidden - want_hidden).abs().max()):.2e})")
        shapes = {"SequenceClassification": [("logits", (B, NUM_LABELS))],
                  "TokenClassification": [("logits", (B, S, NUM_LABELS))],
                  "QuestionAnswering": [("start_logits", (B, S)), ("end_logits", (B, S))]}
        for field, shape in next(v for k, v in shapes.items() if name.endswith(k)):
            got = tuple(getattr(out, field).shape)
            if got != shape:
                failures.append(f"{name}: {field} has shape {got}, expected {shape}")
        print(f"{ckpt}: {name}: new {sorted(missing)}; {len(loaded & encoder)} encoder weights equal the checkpoint's")
    return failures


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    rc = 0
    for ckpt in sys.argv[1:]:
        failures = check(ckpt)
        for f in failures:
            print(f"FAIL {ckpt}: {f}")
        if not failures:
            print(f"{ckpt}: ok")
        rc |= bool(failures)
    return rc


if __name__ == "__main__":
    sys.exit(main())
