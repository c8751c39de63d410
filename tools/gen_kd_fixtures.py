#!/usr/bin/python3
"""Golden values for the distillation losses (src/distill/losses.h), straight from their
definitions in PyTorch float64 with autograd gradients -- independent of the closed-form
gradients the C++ code uses. Writes tests/fixtures/kd/cases.json.

    /usr/bin/python3 tools/gen_kd_fixtures.py
"""
import json
import os

import torch

torch.manual_seed(0)
N, V, K = 6, 37, 5
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "kd",
                   "cases.json")


def kl(p, q):  # sum p log(p/q), 0 log 0 = 0
    return torch.where(p > 0, p * (torch.log(p) - torch.log(q)), torch.zeros_like(p)).sum(-1)


def term(kind, param, P, Q):
    if kind == "kl":
        return kl(P, Q)
    if kind == "rkl":
        return kl(Q, P)
    if kind == "jsd":
        M = param * P + (1 - param) * Q
        return param * kl(P, M) + (1 - param) * kl(Q, M)
    if kind == "tvd":
        return 0.5 * (P - Q).abs().sum(-1)
    if kind == "skl":
        return kl(P, param * P + (1 - param) * Q)
    if kind == "srkl":
        return kl(Q, param * Q + (1 - param) * P)
    raise ValueError(kind)


def loss_of(terms, T, z, P_of_T, Q_of, targets, w, normalizer):
    total = torch.zeros((), dtype=torch.float64)
    for kind, param, weight in terms:
        if kind == "ce":
            lp = torch.log_softmax(z, -1)
            valid = targets >= 0
            per = torch.zeros(N, dtype=torch.float64)
            per[valid] = -lp[valid, targets[valid]]
            total = total + weight * (w * per).sum() / normalizer
        else:
            P = P_of_T(T)
            Q = Q_of(z, T)
            per = term(kind, param, P, Q)
            total = total + weight * T * T * (w * per).sum() / normalizer
    return total


def main():
    z0 = torch.randn(N, V, dtype=torch.float64) * 2
    t_logits = torch.randn(N, V, dtype=torch.float64) * 2
    targets = torch.randint(0, V, (N,))
    targets[4] = -100
    w = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.float64)  # position 2 is a prompt token
    normalizer = 7.0  # target tokens of the whole step (other micro-batches hold the rest)
    t_lp = torch.log_softmax(t_logits, -1)
    top_lp, top_ids = t_lp.topk(K, -1)
    tail = (1 - top_lp.exp().sum(-1)).clamp_min(0)
    tail[5] = 0.0  # a row whose teacher put all mass in its top k

    def dense_P(T):
        return torch.softmax(t_logits / T, -1)

    def dense_Q(z, T):
        return torch.softmax(z / T, -1)

    def bucket_P(T):
        a = torch.cat([top_lp / T, torch.where(tail > 0, torch.log(tail.clamp_min(1e-300)) / T,
                                               torch.full_like(tail, -float("inf")))[:, None]], -1)
        return torch.softmax(a, -1)

    def bucket_Q(z, T):
        q = torch.softmax(z / T, -1)
        qk = q.gather(-1, top_ids)
        return torch.cat([qk, (1 - qk.sum(-1))[:, None]], -1)

    def ignore_P(T):
        return torch.softmax(top_lp / T, -1)

    def ignore_Q(z, T):
        qk = torch.softmax(z / T, -1).gather(-1, top_ids)
        return qk / qk.sum(-1, keepdim=True)

    specs = ["kl", "rkl", "jsd:0.5", "jsd:0.9", "tvd", "skl:0.1", "srkl:0.1", "ce",
             "kl=0.5,ce=0.5", "rkl=0.3,jsd:0.2=0.7"]
    cases = []
    for spec in specs:
        terms = []
        for item in spec.split(","):
            name, _, weight = item.partition("=")
            name, _, param = name.partition(":")
            terms.append((name, float(param) if param else (0.5 if name == "jsd" else 0.1),
                          float(weight) if weight else 1.0))
        for T in (1.0, 2.0):
            for mode, P_of, Q_of in (("dense", dense_P, dense_Q), ("bucket", bucket_P, bucket_Q),
                                     ("ignore", ignore_P, ignore_Q)):
                z = z0.clone().requires_grad_(True)
                loss = loss_of(terms, T, z, P_of, Q_of, targets, w, normalizer)
                loss.backward()
                if not torch.isfinite(loss):
                    # reverse divergences against a zero teacher tail (row 5, bucket rule) are
                    # infinite by definition; the C++ code floors log p there (tested apart)
                    continue
                cases.append({"spec": spec, "T": T, "mode": mode, "loss": loss.item(),
                              "grad": z.grad.flatten().tolist()})
    data = {"N": N, "V": V, "K": K, "normalizer": normalizer,
            "student_logits": z0.flatten().tolist(), "teacher_logits": t_logits.flatten().tolist(),
            "targets": targets.tolist(), "weights": w.tolist(),
            "top_ids": top_ids.flatten().tolist(), "top_logprobs": top_lp.flatten().tolist(),
            "tail_mass": tail.tolist(), "cases": cases}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    print(f"{len(cases)} cases -> {OUT}")


if __name__ == "__main__":
    main()
