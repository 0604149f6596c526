"""tests/train/ref_dpo.py: a float64 PyTorch reference of `prefcap-dpo train` (docs/training.md).

Written from the semantics of TRL's DPOTrainer/CPOTrainer (losses, rewards, metrics), PEFT's LoRA
(key names, W + alpha/r * B A, Conv1D's fan_in_fan_out), HF Trainer (schedules, which parameters get
weight decay, grad accumulation as the mean over the step) and torch (AdamW, clip_grad_norm_), without
sharing code with the C trainer. The forward pass is tests/model/hfmodels.py's reference_logps, which
is differentiable when the weight tensors require grad.

Inputs are what the C trainer saw: the model's stored weights (hf.st_read) and the tokenized pairs it
wrote with --dump-tokens, so the comparison is of the training math alone, not of tokenization.

    pairs = load_dump_tokens(path)
    tr = RefTrainer(cfg, weights, pairs, Options(loss="sigmoid", lora_r=4, ...), init_adapter=tensors)
    (loss "sigmoid,sft" with loss_weights: a mixture; "kto": unpaired examples, pairs[i]["label"])
    g = tr.first_step_grads()        # {name: grad}, names as --dump-grads writes them
    rows = tr.train()                # per-step metrics under TRL's names (metrics.jsonl)
"""
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "model"))
import hfmodels as hf  # noqa: E402

torch.set_default_dtype(torch.float64)


@dataclass
class Options:
    loss: str = "sigmoid"            # sigmoid | ipo | hinge | robust | simpo | kto, or a list "sigmoid,sft"
    loss_weights: Optional[List[float]] = None   # one per term of loss; default 1 each
    pair_weights: bool = False       # each row's loss weighted by its "weight": sum w l / sum w per micro-batch
    desirable_weight: float = 1.0    # KTO
    undesirable_weight: float = 1.0
    beta: float = 0.1
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5
    lora_r: int = 0                  # 0 = full fine-tune
    lora_alpha: Optional[float] = None   # default 2r
    lora_targets: Optional[List[str]] = None
    lr: float = 1e-4
    weight_decay: float = 0.0
    scheduler: str = "linear"        # constant | linear | cosine
    warmup_steps: int = 0
    max_grad_norm: float = 1.0       # 0 = off
    batch_size: int = 4
    grad_accum: int = 1
    max_steps: int = 10
    # deliberate deviations, used only to show that a test is sensitive: "skip_first_completion_token"
    # (the mask one token late; one token early would not show: chosen and rejected share the prompt's
    # last token, which cancels in the DPO logits), "no_ref" (reference log-probs taken as 0),
    # "kl_no_shift" (KTO's KL sequences take each example's own completion, not the previous one's),
    # "kl_shift_next" (the next example's), "ignore_row_weights" (the row weights dropped)
    variant: Optional[str] = None
    extra: dict = field(default_factory=dict)


DEFAULT_TARGETS = {"gpt2": ["c_attn", "c_proj", "c_fc"],
                   "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def load_dump_tokens(path):
    """The pairs of --dump-tokens, in dataset order (by "index")."""
    rows = [json.loads(l) for l in open(path) if l.strip()]
    rows.sort(key=lambda r: r["index"])
    return rows


# ---- LoRA (PEFT semantics) -------------------------------------------------------------------------

def lora_modules(cfg, W, targets):
    """Module names (checkpoint weight name less ".weight") that PEFT's target_modules match: the
    module name equals a target or ends with "." + target (so GPT-2's "c_proj" matches both attn.c_proj
    and mlp.c_proj). Only 2-D weights (nn.Linear / Conv1D)."""
    out = []
    for name, t in W.items():
        if not name.endswith(".weight") or t.dim() != 2:
            continue
        mod = name[:-len(".weight")]
        if any(mod == tg or mod.endswith("." + tg) for tg in targets):
            out.append(mod)
    return out


def is_conv1d(cfg, module):
    """GPT-2's projections are transformers' Conv1D: weight stored (in, out), PEFT fan_in_fan_out."""
    return cfg["model_type"] == "gpt2" and module.split(".")[-1] in ("c_attn", "c_proj", "c_fc")


def peft_key(module, which):
    return f"base_model.model.{module}.lora_{which}.weight"


def merge_lora(cfg, W, adapter, r, alpha):
    """W (dict) with every adapter module merged: W + alpha/r * B A (Conv1D: + (alpha/r) (B A)^T).
    adapter: {peft key: tensor}. Differentiable in the adapter tensors."""
    scale = alpha / r
    out = dict(W)
    mods = sorted({k[len("base_model.model."):-len(".lora_A.weight")] for k in adapter if k.endswith(".lora_A.weight")})
    for m in mods:
        delta = scale * (adapter[peft_key(m, "B")] @ adapter[peft_key(m, "A")])
        out[m + ".weight"] = W[m + ".weight"] + (delta.T if is_conv1d(cfg, m) else delta)
    return out


def read_adapter(d):
    """(config dict, {key: float64 tensor}) of a PEFT adapter directory."""
    with open(os.path.join(d, "adapter_config.json")) as f:
        c = json.load(f)
    return c, hf.st_read(os.path.join(d, "adapter_model.safetensors"))


def st_metadata(path):
    import struct
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)).get("__metadata__", {})


def write_adapter(d, cfg, r, alpha, tensors, targets):
    """Writes a PEFT adapter (adapter_config.json + F32 adapter_model.safetensors). tensors:
    {peft key: tensor}. Returns the tensors as stored (float32-rounded, as float64)."""
    os.makedirs(d, exist_ok=True)
    blob, stored = hf.st_bytes(sorted(tensors.items()), "F32")
    with open(os.path.join(d, "adapter_model.safetensors"), "wb") as f:
        f.write(blob)
    conv = cfg["model_type"] == "gpt2"
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
                   "bias": "none", "target_modules": list(targets), "fan_in_fan_out": conv,
                   "base_model_name_or_path": None, "inference_mode": True}, f, indent=2)
    return stored


def random_adapter(cfg, W, targets, r, gen, a_std=0.3, b_std=0.05):
    """A PEFT-shaped adapter with random A (r, in) and NONZERO random B (out, r), so that policy and
    reference differ from the first step and B's gradient is not the only nonzero one."""
    out = {}
    for m in lora_modules(cfg, W, targets):
        shape = W[m + ".weight"].shape
        out_f, in_f = (shape[1], shape[0]) if is_conv1d(cfg, m) else (shape[0], shape[1])
        out[peft_key(m, "A")] = torch.randn(r, in_f, generator=gen) * a_std / math.sqrt(in_f) * 4
        out[peft_key(m, "B")] = torch.randn(out_f, r, generator=gen) * b_std
    return out


# ---- the trainer -----------------------------------------------------------------------------------

def no_decay(name):
    """HF Trainer's rule: no weight decay on biases and on the weights of norm layers (LayerNorm,
    RMSNorm, Qwen3's q_norm/k_norm). GPT-2's norms are ln_1, ln_2, ln_f."""
    if name.endswith(".bias"):
        return True
    mod = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else name
    return "norm" in mod or mod.startswith("ln_")


def lr_at(o, k, total):
    """HF schedules (get_constant_schedule_with_warmup, get_linear_..., get_cosine_...), step k from 0."""
    W = o.warmup_steps
    if k < W:
        return o.lr * float(k) / max(1, W)
    if o.scheduler == "constant":
        return o.lr
    if o.scheduler == "linear":
        return o.lr * max(0.0, float(total - k) / max(1, total - W))
    if o.scheduler == "cosine":
        prog = float(k - W) / max(1, total - W)
        return o.lr * max(0.0, 0.5 * (1.0 + math.cos(math.pi * prog)))
    raise ValueError(o.scheduler)


class RefTrainer:
    def __init__(self, cfg, weights, pairs, opts, init_adapter=None):
        self.cfg, self.o, self.pairs = cfg, opts, pairs
        self.W0 = {k: v.clone() for k, v in weights.items()}
        self.init_adapter = init_adapter
        o = opts
        self.lora = o.lora_r > 0
        if self.lora:
            self.alpha = o.lora_alpha if o.lora_alpha is not None else 2 * o.lora_r
            targets = o.lora_targets or DEFAULT_TARGETS["gpt2" if cfg["model_type"] == "gpt2" else "llama"]
            self.modules = lora_modules(cfg, self.W0, targets)
            if init_adapter is None:
                raise ValueError("the reference needs the initial adapter (PEFT's random init is not reproducible)")
            missing = [m for m in self.modules if peft_key(m, "A") not in init_adapter]
            if missing or len(init_adapter) != 2 * len(self.modules):
                raise ValueError(f"adapter does not match targets: missing {missing[:3]}, "
                                 f"{len(init_adapter)} tensors for {len(self.modules)} modules")
            self.params = {k: init_adapter[k].clone().requires_grad_(True)
                           for m in self.modules for k in (peft_key(m, "A"), peft_key(m, "B"))}
        else:
            self.params = {k: v.clone().requires_grad_(True) for k, v in self.W0.items()}
        decayed = {n: self.lora or not no_decay(n) for n in self.params}   # LoRA: A and B all decay
        decay = [p for n, p in self.params.items() if decayed[n]]
        nodecay = [p for n, p in self.params.items() if not decayed[n]]
        groups = [{"params": decay, "weight_decay": o.weight_decay}]
        if nodecay:
            groups.append({"params": nodecay, "weight_decay": 0.0})
        self.opt = torch.optim.AdamW(groups, lr=o.lr, betas=(0.9, 0.999), eps=o.extra.get("adam_eps", 1e-8))
        self.ref_cache = {}
        self.step = 0

    # -- log-probs
    def policy_weights(self):
        if self.lora:
            return merge_lora(self.cfg, self.W0, self.params, self.o.lora_r, self.alpha)
        return self.params

    def compact_vocab(self, W, seqs):
        """Speed only, same math: the embedding and head of a ~150k vocabulary make every sequence's
        backward write two dense (V, C) gradients. For a step's sequences, renumber the vocabulary so
        that the tokens they use come first: the embedding passed on holds only those rows, the head
        all rows in the new order (lm_head given explicitly, so a tied head is the same parameter
        through both paths), and the ids are renumbered. Returns (W', id map)."""
        emb = "model.embed_tokens.weight" if "model.embed_tokens.weight" in W else \
            next(k for k in W if k.endswith("wte.weight"))
        head = W.get("lm_head.weight", W[emb])
        used = sorted({t for s in seqs for t in s})
        V = head.shape[0]
        mark = torch.ones(V, dtype=torch.bool)
        mark[used] = False
        perm = torch.cat([torch.tensor(used, dtype=torch.long), torch.arange(V)[mark]])
        W2 = dict(W)
        W2[emb] = W[emb][perm[:len(used)]]
        W2["lm_head.weight"] = head[perm]
        return W2, {t: i for i, t in enumerate(used)}

    def seq_logp(self, W, ids, plen, idmap=None):
        """(sum of the completion's log-probs: tokens i >= max(prompt_len, 1), their count)."""
        f = plen + 1 if self.o.variant == "skip_first_completion_token" else plen
        if idmap is not None:
            ids = [idmap[t] for t in ids]
        lp = hf.reference_logps(self.cfg, W, ids, f)
        return lp.sum(), max(len(lp), 1)

    def ref_logps(self, i):
        """Reference (chosen, rejected) sums of pair i (KTO: the example's sum, rejected 0), with counts."""
        if i not in self.ref_cache:
            p = self.pairs[i]
            with torch.no_grad():
                if self.o.variant == "no_ref":
                    v = ((torch.tensor(0.0), 1), (torch.tensor(0.0), 1))
                elif not p["rejected"]:
                    v = (self.seq_logp(self.W0, p["chosen"], p["chosen_prompt_len"]), (torch.tensor(0.0), 1))
                else:
                    v = (self.seq_logp(self.W0, p["chosen"], p["chosen_prompt_len"]),
                         self.seq_logp(self.W0, p["rejected"], p["rejected_prompt_len"]))
            self.ref_cache[i] = v
        return self.ref_cache[i]

    def row_weights(self, mb):
        o = self.o
        use = o.pair_weights and o.variant != "ignore_row_weights"
        return torch.tensor([float(self.pairs[i].get("weight", 1.0)) if use else 1.0 for i in mb])

    def micro_batches(self, idx):
        B = self.o.batch_size
        return [idx[j:j + B] for j in range(0, len(idx), B)]

    # -- loss of a step's pairs: each micro-batch's loss (TRL dpo_loss / CPO simpo, the mixture of
    # --loss with --loss-weights, --pair-weights), averaged over the micro-batches as HF Trainer's grad
    # accumulation does
    def pair_term(self, term, pc, pr, rc_, rr_, nc, nr):
        """Per-pair losses of one pair loss; pc..rr_ raw sums, nc/nr token counts (ipo/simpo normalise)."""
        b, eps = self.o.beta, self.o.label_smoothing
        if term in ("ipo", "simpo"):
            pc, pr, rc_, rr_ = pc / nc, pr / nr, rc_ / nc, rr_ / nr
        if term == "simpo":
            # TRL's CPOTrainer (loss_type="simpo"): logits = (pi_c - pi_r) - simpo_gamma / beta, gamma
            # being the target reward margin (docs/training.md)
            z = (pc - pr) - self.o.simpo_gamma / b
            rc, rr = b * pc.detach(), b * pr.detach()
        else:
            z = (pc - pr) - (rc_ - rr_)
            rc, rr = b * (pc.detach() - rc_), b * (pr.detach() - rr_)
        ls = torch.nn.functional.logsigmoid
        if term in ("sigmoid", "simpo"):
            losses = -ls(b * z) * (1 - eps) - ls(-b * z) * eps
        elif term == "robust":
            losses = (-ls(b * z) * (1 - eps) + ls(-b * z) * eps) / (1 - 2 * eps)
        elif term == "hinge":
            losses = torch.relu(1 - b * z)
        elif term == "ipo":
            losses = (z - 1 / (2 * b)) ** 2
        else:
            raise ValueError(term)
        return losses, rc, rr, pc.detach(), pr.detach(), rc_, rr_

    def loss_and_metrics(self, idx):
        o = self.o
        if o.loss == "kto":
            return self.kto_loss_and_metrics(idx)
        W, idmap = self.policy_weights(), None
        if not self.lora and not o.extra.get("plain_vocab"):
            W, idmap = self.compact_vocab(W, [self.pairs[i][k] for i in idx for k in ("chosen", "rejected")])
        P = self.pairs
        terms = o.loss.split(",")
        tw = o.loss_weights or [1.0] * len(terms)
        primary = next(t for t in terms if t != "sft")
        mbs = self.micro_batches(idx)
        loss, parts = 0, []
        for mb in mbs:
            c = [self.seq_logp(W, P[i]["chosen"], P[i]["chosen_prompt_len"], idmap) for i in mb]
            r = [self.seq_logp(W, P[i]["rejected"], P[i]["rejected_prompt_len"], idmap) for i in mb]
            pc, pr = torch.stack([x[0] for x in c]), torch.stack([x[0] for x in r])
            nc = torch.tensor([float(x[1]) for x in c])
            nr = torch.tensor([float(x[1]) for x in r])
            rc_ = torch.stack([self.ref_logps(i)[0][0] for i in mb])
            rr_ = torch.stack([self.ref_logps(i)[1][0] for i in mb])
            w = self.row_weights(mb)
            L = 0
            for term, wk in zip(terms, tw):
                if term == "sft":   # TRL's nll_loss: token-mean cross-entropy over the chosen completions
                    L = L + wk * (-(w * pc).sum() / (w * nc).sum())
                    continue
                losses, rc, rr, lpc, lpr, rcn, rrn = self.pair_term(term, pc, pr, rc_, rr_, nc, nr)
                L = L + wk * (w * losses).sum() / w.sum()
                if term == primary:
                    parts.append((rc, rr, lpc, lpr, rcn, rrn))
            loss = loss + L / len(mbs)
        rc, rr, pc, pr, rc_, rr_ = (torch.cat([p[k] for p in parts]) for k in range(6))
        b = o.beta
        m = {"loss": loss.item(), "rewards/chosen": rc.mean().item(), "rewards/rejected": rr.mean().item(),
             "rewards/accuracies": (rc > rr).double().mean().item(), "rewards/margins": (rc - rr).mean().item(),
             "logps/chosen": pc.mean().item(), "logps/rejected": pr.mean().item()}
        # pairs whose reward margin is within float32 noise (1e-5 of beta times the log-probs it is made
        # of): their accuracy bit may legitimately differ in the C trainer
        scale = pc.abs() + pr.abs()
        if primary != "simpo":
            scale = scale + rc_.abs() + rr_.abs()
        m["_ambiguous"] = int(((rc - rr).abs() <= 1e-5 * b * scale).sum().item())
        return loss, m

    # -- KTO (TRL's KTOTrainer: kto_loss, _get_kl_dataset, the logged metrics)
    def kl_source(self, j, n):
        v = self.o.variant
        return j if v == "kl_no_shift" else (j + 1) % n if v == "kl_shift_next" else (j - 1) % n

    def kto_loss_and_metrics(self, idx):
        o, P = self.o, self.pairs
        W, idmap = self.policy_weights(), None
        if not self.lora and not o.extra.get("plain_vocab"):
            W, idmap = self.compact_vocab(W, [P[i]["chosen"] for i in idx])
        mbs = self.micro_batches(idx)
        loss, kls, rew, lps = 0, [], {True: [], False: []}, {True: [], False: []}
        b = o.beta
        for mb in mbs:
            n = len(mb)
            pol = torch.stack([self.seq_logp(W, P[i]["chosen"], P[i]["chosen_prompt_len"], idmap)[0] for i in mb])
            ref = torch.stack([self.ref_logps(i)[0][0] for i in mb])
            # KL sequences: example j's prompt + the completion of example j-1 of the micro-batch (cyclic)
            kl_seqs = []
            for j in range(n):
                a, s = P[mb[j]], P[mb[self.kl_source(j, n)]]
                kl_seqs.append((a["chosen"][:a["chosen_prompt_len"]] + s["chosen"][s["chosen_prompt_len"]:],
                                a["chosen_prompt_len"]))
            with torch.no_grad():
                pkl = torch.stack([self.seq_logp(W, ids, pl, idmap)[0] for ids, pl in kl_seqs])
                rkl = torch.stack([self.seq_logp(self.W0, ids, pl)[0] for ids, pl in kl_seqs])
                kl = (pkl - rkl).mean().clamp(min=0)
            r = pol - ref
            lab = [bool(P[i]["label"]) for i in mb]
            losses = torch.stack([
                o.desirable_weight * (1 - torch.sigmoid(b * (r[j] - kl))) if lab[j]
                else o.undesirable_weight * (1 - torch.sigmoid(b * (kl - r[j]))) for j in range(n)])
            w = self.row_weights(mb)
            loss = loss + (w * losses).sum() / w.sum() / len(mbs)
            kls.append(kl.item())
            for j in range(n):
                rew[lab[j]].append(b * r[j].item())
                lps[lab[j]].append(pol[j].item())
        m = {"loss": loss.item(), "kl": sum(kls) / len(kls), "count/chosen": len(rew[True]),
             "count/rejected": len(rew[False])}
        for c, name in ((True, "chosen"), (False, "rejected")):
            if rew[c]:
                m["rewards/" + name] = sum(rew[c]) / len(rew[c])
                m["logps/" + name] = sum(lps[c]) / len(lps[c])
        if rew[True] and rew[False]:
            m["rewards/margins"] = m["rewards/chosen"] - m["rewards/rejected"]
        return loss, m

    def step_indices(self, k):
        """--no-shuffle: step k (from 0) holds stream pairs k*A*B .. (k+1)*A*B-1, stream i -> pair i mod n."""
        n, BA = len(self.pairs), self.o.batch_size * self.o.grad_accum
        return [(k * BA + j) % n for j in range(BA)]

    def compute_grads(self, k):
        for p in self.params.values():
            p.grad = None
        loss, m = self.loss_and_metrics(self.step_indices(k))
        loss.backward()
        return m

    def eval_metrics(self):
        """The metrics over all the pairs (the evaluation set, here the training file itself), in
        micro-batches of batch_size in file order, with the current weights, named eval_*."""
        with torch.no_grad():
            _, m = self.loss_and_metrics(list(range(len(self.pairs))))
        return {"eval_" + k: v for k, v in m.items() if not k.startswith("_")}

    def first_step_grads(self):
        """Gradient of the first step's mean loss (unclipped), named as --dump-grads names them."""
        self.compute_grads(0)
        return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in self.params.items()}

    def train(self, steps=None):
        o = self.o
        total = o.max_steps
        rows = []
        for k in range(steps if steps is not None else total):
            m = self.compute_grads(k)
            params = list(self.params.values())
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            gn = torch.sqrt(sum((p.grad ** 2).sum() for p in params)).item()
            if o.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm)
            lr = lr_at(o, k, total)
            for g in self.opt.param_groups:
                g["lr"] = lr
            self.opt.step()
            m.update({"step": k + 1, "epoch": (k + 1) * o.batch_size * o.grad_accum / len(self.pairs),
                      "grad_norm": gn, "learning_rate": lr})
            rows.append(m)
        return rows

    def final_adapter(self):
        return {k: v.detach().clone() for k, v in self.params.items()}

    def final_weights(self):
        with torch.no_grad():
            return {k: v.detach().clone() for k, v in self.policy_weights().items()}
