"""SmolLM2-135M: ``minitron`` width pruning to ~75% of parameters, then a short distillation.

Prints perplexity (stdlib-docstring EVAL split, disjoint from the CALIB text used for
importance and fine-tuning) of the unpruned model, the one-shot pruned model, and the pruned
model after ``--steps`` steps of logit distillation from the unpruned one (KL on the teacher's
softmax, AdamW). CPU-feasible; not part of CI::

    python benchmarks/prune_minitron.py --params 75% --steps 60
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

import modeloptim.torch.prune as mtp
from modeloptim.torch.utils.default_model import load_default_model
from modeloptim.torch.utils.perplexity import perplexity, token_windows
from modeloptim.torch.utils.profile import count_params
from modeloptim.utils.text_corpus import stdlib_docstring_corpus


def distill(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    windows: torch.Tensor,
    steps: int,
    lr: float,
    bs: int,
) -> list[float]:
    """KL(teacher || student) on next-token distributions; returns the losses."""
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(0)
    losses = []
    student.train()
    for _ in range(steps):
        idx = torch.randint(0, len(windows), (bs,), generator=g)
        x = windows[idx]
        with torch.no_grad():
            t_logits = teacher(input_ids=x).logits.float()
        s_logits = student(input_ids=x).logits.float()
        loss = (
            F.kl_div(
                F.log_softmax(s_logits, -1),
                F.log_softmax(t_logits, -1),
                log_target=True,
                reduction="batchmean",
            )
            / x.shape[1]
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
    student.eval()
    return losses


def main() -> None:
    """Run and print the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="75%")
    ap.add_argument("--prune", default="hidden,ffn", help="kinds: hidden, ffn, heads")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--eval-windows", type=int, default=24)
    ap.add_argument("--calib-windows", type=int, default=16)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--bs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tok = load_default_model()
    eval_w = token_windows(tok, stdlib_docstring_corpus("eval"), args.seq_len, args.eval_windows)
    train_w = token_windows(tok, stdlib_docstring_corpus("calib"), args.seq_len, 512)
    calib = [{"input_ids": train_w[i : i + 4]} for i in range(0, args.calib_windows, 4)]
    p0 = count_params(model)
    t = time.time()
    ppl0 = perplexity(model, eval_w, batch_size=4)
    print(f"unpruned: {p0:,} params, perplexity {ppl0:.2f} ({time.time() - t:.0f}s)")
    teacher = copy.deepcopy(model)
    t = time.time()
    pruned, state = mtp.prune(
        model,
        [("minitron", {"prune": args.prune.split(",")})],
        {"params": args.params},
        {"input_ids": eval_w[:1]},
        {"data_loader": calib},
    )
    t_prune = time.time() - t
    p1 = count_params(pruned)
    ppl1 = perplexity(pruned, eval_w, batch_size=4)
    t = time.time()
    losses = distill(pruned, teacher, train_w, args.steps, args.lr, args.bs)
    t_ft = time.time() - t
    ppl2 = perplexity(pruned, eval_w, batch_size=4)
    sub = state["best"]["subnet"]
    ffn = sorted({v for k, v in sub.items() if k.endswith(".ffn")})
    print(
        f"\nminitron to {args.params} params (pruned kinds: {args.prune}); hidden "
        f"{sub['hidden']}, FFN widths {ffn}; prune time {t_prune:.0f}s\n"
    )
    print(f"{'model':<34} {'params':>12} {'ratio':>7} {'ppl':>9}")
    print(f"{'unpruned SmolLM2-135M':<34} {p0:>12,} {1:>7.3f} {ppl0:>9.2f}")
    print(f"{'minitron one-shot':<34} {p1:>12,} {p1 / p0:>7.3f} {ppl1:>9.2f}")
    print(
        f"{f'+ distill {args.steps} steps ({t_ft:.0f}s)':<34} {p1:>12,} {p1 / p0:>7.3f} "
        f"{ppl2:>9.2f}"
    )
    print(f"\ndistillation loss {losses[0]:.4f} -> {sum(losses[-5:]) / 5:.4f}")


if __name__ == "__main__":
    main()
