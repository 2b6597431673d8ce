#!/usr/bin/env python3
"""What pretraining bought: fine-tune an mlmgpu checkpoint on a small task, and the
same model from random initialisation, and print both test accuracies.

    python3 scripts/finetune_example.py                      # the quickstart's checkpoint
    python3 scripts/finetune_example.py --model DIR          # any mlmgpu (or HF) checkpoint

The task, built from the default corpus (scripts/build_corpus.sh, corpus/<package>/):
which Debian documentation package a paragraph comes from. Paragraphs are the
blank-line-separated blocks of each document, kept when they are prose (20 to 300
words, at least 70% of them plain words: no code listings or option tables). The
split is by document, fixed by a hash of the document's path (one document in five
is a test document), so no test paragraph shares a page with a training one; each
package then gives the same number of paragraphs (--train-per-class,
--test-per-class), drawn with a fixed seed, so the task is the same for every run. Text goes through the checkpoint's own
tokenizer (AutoTokenizer.from_pretrained), cut to --max-length tokens.

Both runs use AutoModelForSequenceClassification with the checkpoint's config, the
same seed, data order, steps and hyperparameters; the only difference is that one
starts from the checkpoint's encoder (the classification head, and for BERT the
pooler, are new) and the other from random weights. On the CPU with the defaults and
a bert-tiny-sized model this takes about a minute per run. Needs torch and
transformers (pip install torch transformers); exit code 2 on a bad --model or
corpus, naming it.
"""
import argparse
import hashlib
import os
import random
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ["apache2-doc", "cmake-doc", "git-doc", "perl-doc", "postgresql-doc-15", "python3.11-doc", "sqlite3-doc"]


def die(msg):
    print(f"finetune_example: {msg}", file=sys.stderr)
    sys.exit(2)


def is_prose(words):
    """A paragraph of running text: 20 to 300 words, 70% of them alphabetic once
    trailing punctuation is stripped (the measure docs/CORPUS.md uses for prose)."""
    if not 20 <= len(words) <= 300:
        return False
    plain = sum(w.strip(".,;:!?()\"'").isalpha() for w in words)
    return plain >= 0.7 * len(words)


def load_paragraphs(corpus, package):
    """(train, test) lists of paragraphs of one package; test = documents whose
    path hashes to 0 mod 5."""
    top = os.path.join(corpus, package)
    if not os.path.isdir(top):
        die(f"{top}: no such package directory (build the corpus: scripts/build_corpus.sh)")
    train, test = [], []
    seen = set()
    for d, dirs, files in sorted(os.walk(top)):
        dirs.sort()
        for f in sorted(files):
            if not f.endswith(".txt"):
                continue
            path = os.path.join(d, f)
            rel = os.path.relpath(path, corpus)
            split = test if int(hashlib.sha1(rel.encode()).hexdigest(), 16) % 5 == 0 else train
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            for para in re.split(r"\n\s*\n", text):
                words = para.split()
                joined = " ".join(words)
                if is_prose(words) and joined not in seen:
                    seen.add(joined)
                    split.append(joined)
    return train, test


def build_task(args):
    rng = random.Random(0)   # the task is fixed; --seed varies only the fine-tuning
    train, test = [], []
    for label, pkg in enumerate(args.packages):
        tr, te = load_paragraphs(args.corpus, pkg)
        if len(tr) < args.train_per_class or len(te) < args.test_per_class:
            die(f"{os.path.join(args.corpus, pkg)}: {len(tr)} training and {len(te)} test paragraphs, "
                f"fewer than --train-per-class {args.train_per_class} / --test-per-class {args.test_per_class}")
        train += [(p, label) for p in rng.sample(tr, args.train_per_class)]
        test += [(p, label) for p in rng.sample(te, args.test_per_class)]
    rng.shuffle(train)
    return train, test


def encode(tok, examples, max_length):
    import torch
    enc = tok([p for p, _ in examples], truncation=True, max_length=max_length, padding="max_length",
              return_tensors="pt")
    enc.pop("token_type_ids", None)   # one segment: zeros for BERT, absent for RoBERTa
    return enc, torch.tensor([label for _, label in examples])


def run(args, pretrained, train, test):
    """Fine-tunes one model; returns (test accuracy, seconds)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, get_linear_schedule_with_warmup
    torch.manual_seed(args.seed)
    n = len(args.packages)
    if pretrained:
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=n)
    else:
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(args.model, num_labels=n))
    xtr, ytr = train
    xte, yte = test
    steps_per_epoch = (len(ytr) + args.batch - 1) // args.batch
    total = steps_per_epoch * args.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * total), total)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.time()
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), args.batch):
            idx = order[i:i + args.batch]
            out = model(**{k: v[idx] for k, v in xtr.items()}, labels=ytr[idx])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(yte), 256):
            logits = model(**{k: v[i:i + 256] for k, v in xte.items()}).logits
            correct += int((logits.argmax(-1) == yte[i:i + 256]).sum())
    return correct / len(yte), time.time() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "runs/quickstart/checkpoints/latest"),
                    help="checkpoint directory (default: the quickstart's latest)")
    ap.add_argument("--corpus", default=os.path.join(ROOT, "corpus"), help="the default corpus (corpus/)")
    ap.add_argument("--packages", nargs="+", default=PACKAGES, help="the classes: package directories of the corpus")
    ap.add_argument("--train-per-class", type=int, default=400)
    ap.add_argument("--test-per-class", type=int, default=150)
    ap.add_argument("--max-length", type=int, default=64, help="tokens per paragraph, [CLS] and [SEP] included")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0, help="initialisation of the new weights, data order, dropout")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = ap.parse_args()

    if not os.path.isfile(os.path.join(args.model, "config.json")):
        die(f"{args.model}: not a checkpoint directory (no config.json); train one "
            f"(scripts/quickstart.sh) or pass --model DIR")
    if not os.path.isdir(args.corpus):
        die(f"{args.corpus}: no corpus (scripts/build_corpus.sh builds it)")
    try:
        import torch
        from transformers import AutoTokenizer
        from transformers.utils import logging
    except ImportError as e:
        die(f"{e}: pip install torch transformers")
    logging.set_verbosity_error()   # the load report lists the new head (docs/FINETUNE.md)
    logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)

    train, test = build_task(args)
    tok = AutoTokenizer.from_pretrained(args.model)
    xtr, xte = encode(tok, train, args.max_length), encode(tok, test, args.max_length)
    print(f"task: which of {len(args.packages)} packages a paragraph comes from ({', '.join(args.packages)}); "
          f"{len(train)} training and {len(test)} test paragraphs, {args.max_length} tokens; "
          f"chance {1 / len(args.packages):.3f}")
    print(f"fine-tuning: {args.epochs} epochs, batch {args.batch}, AdamW lr {args.lr:g} (linear, 10% warmup), "
          f"seed {args.seed}")
    acc_pre, t_pre = run(args, True, xtr, xte)
    print(f"from {args.model}: test accuracy {acc_pre:.3f} ({t_pre:.0f} s)")
    acc_rnd, t_rnd = run(args, False, xtr, xte)
    print(f"from random initialisation: test accuracy {acc_rnd:.3f} ({t_rnd:.0f} s)")
    print(f"what pretraining bought: {100 * (acc_pre - acc_rnd):+.1f} points")


if __name__ == "__main__":
    main()
