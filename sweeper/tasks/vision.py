"""Image classification (the paper's Appendix D): forget one class of CIFAR-10/100, or of the 8x8 digits.

A grid's data entry::

    data: [{name: digits0, kind: vision, source: digits, forget_class: 0}]                 # offline
    data: [{name: cifar10-dog, kind: vision, source: /data/cifar-10-batches-py, forget_class: 5}]
    data: [{name: cifar100-bed, kind: vision, source: /data/cifar-100-python, forget_class: 5}]
    models: [{name: resnet-tiny}]          # or resnet50 (sweeper/models/vision.py)

Sources: ``digits`` (alias ``builtin``) is scikit-learn's bundled 8x8 digits (1797 real images, shipped
with the package, offline); a folder is CIFAR's python version, either CIFAR-10's layout
(``data_batch_1`` .. ``data_batch_5``, ``test_batch``, labels under ``b"labels"``) or CIFAR-100's
(``train``, ``test``, labels under ``b"fine_labels"``). The pickles are read with an unpickler that only
builds dicts, lists, strings, numbers and numpy arrays, so a folder cannot run code.

Splits (rows ``{"x": flat list of floats in [0, 1], "y": int, "shape": [C, H, W]}``):

* ``forget``: up to ``n_forget`` training images of ``forget_class`` (a seeded sample; the paper: 500
  images of CIFAR-10's "dog" = 5, of CIFAR-100's "bed" = 5);
* ``forget_class_rest``: the forget class's other training images, present only when ``n_forget`` is
  smaller than the class. The No-unlearn target is trained on them too (the paper trains on the whole
  training set from scratch); unlearning and metrics never use them;
* ``retain``: the training images of every other class (at most ``n_retain``, all by default);
* ``forget_test``, ``retain_test``: held-out images of the forget class and of the others (CIFAR's test
  batch; for digits a seeded, per-class ``test_fraction`` of the images).

Metrics. ``accuracy_forget`` / ``accuracy_retain`` (the paper's Table 4 "Forget Acc" / "Retain Acc")
are top-1 accuracies on the **held-out** splits ``forget_test`` / ``retain_test`` (train splits when a
source has no held-out images). The paper calls them "forget/retain data accuracy", but its No-unlearn
values (CIFAR-10 0.926 / 0.956, CIFAR-100 0.745 / 0.750 for a ResNet-50 trained from scratch) are test
accuracies: a trained ResNet-50 fits its CIFAR training images almost perfectly. The train-split
accuracies are in ``samples.parquet`` (metric ``correct``, splits ``forget`` and ``retain``), so either
reading can be tabulated. ``rouge_forget`` / ``rouge_retain`` repeat the two accuracies so the generic
plots and step curves work unchanged; ``final_loss_*`` are the mean cross-entropies on the train splits
``forget`` / ``retain``, the sets L_F and L_R are defined on (the step curves' units).

The tokenizer slot holds a ``LabelSpace`` (number of classes, image shape, per-channel mean and std),
since ``build_model`` has no other way to learn them; ``len()`` of it is the number of classes, so a
target's ``vocab_size`` is C and the plots' random-guess line ln|V| is ln C, the cross-entropy of a
uniform guess.
"""
from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from sweeper.tasks.base import Task, register_task
from sweeper.models.vision import VISION_MODELS, ResNet, build_vision_model, vision_model_problem

DIGITS_SOURCES = ("digits", "builtin")
GATE_SAMPLE = 512   # training images (half forget, half retain; retain only for the retrained model) behind the gate
CURVE_SAMPLE = 1000  # images per split behind the cheap per-step accuracy curves
EVAL_BATCH = 256


@dataclass(frozen=True)
class LabelSpace:
    """What the vision task keeps in the tokenizer slot: the classes and the image format."""

    num_classes: int
    shape: tuple = (1, 8, 8)
    mean: list = field(default_factory=lambda: [0.0])
    std: list = field(default_factory=lambda: [1.0])

    def __len__(self) -> int:
        return self.num_classes


# --- sources -------------------------------------------------------------------------------------------

def _cifar_layout(folder: str) -> str | None:
    """"cifar10" (data_batch_1..5 + test_batch), "cifar100" (train + test), or None."""
    if os.path.isfile(os.path.join(folder, "data_batch_1")):
        return "cifar10"
    if os.path.isfile(os.path.join(folder, "train")):
        return "cifar100"
    return None


class _SafeUnpickler(pickle.Unpickler):
    """Builds only numpy arrays and plain containers; any other global is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"), ("copy_reg", "_reconstructor"),
               ("copyreg", "_reconstructor"), ("__builtin__", "object"), ("builtins", "object")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"CIFAR batch refers to {module}.{name}, which is not allowed")


def _load_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, 3, 32, 32], int64 labels [N]) of one CIFAR python batch."""
    with open(path, "rb") as f:
        d = _SafeUnpickler(f, encoding="bytes").load()
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    labels = d.get("fine_labels", d.get("labels"))
    if "data" not in d or labels is None:
        raise ValueError(f"{path} is not a CIFAR python batch (needs 'data' and 'labels' or 'fine_labels')")
    x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x, np.asarray(labels, dtype=np.int64)


def load_cifar(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels), images uint8 [N, 3, 32, 32]."""
    layout = _cifar_layout(folder)
    if layout == "cifar10":
        names = sorted((n for n in os.listdir(folder) if n.startswith("data_batch_")), key=lambda n: int(n[11:]))
        parts = [_load_batch(os.path.join(folder, n)) for n in names]
        xtr, ytr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        xte, yte = _load_batch(os.path.join(folder, "test_batch"))
    elif layout == "cifar100":
        (xtr, ytr), (xte, yte) = _load_batch(os.path.join(folder, "train")), _load_batch(os.path.join(folder, "test"))
    else:
        raise ValueError(f"{folder!r} holds no CIFAR python batches (data_batch_1 or train)")
    return xtr, ytr, xte, yte


#: Hugging Face ids of the paper's vision datasets and their label column (train and test splits).
HUB_CIFAR = {"uoft-cs/cifar10": ("label", 10), "uoft-cs/cifar100": ("fine_label", 100)}


def load_cifar_hub(source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10/100 from the Hugging Face hub (``uoft-cs/cifar10``, ``uoft-cs/cifar100``) as in ``load_cifar``."""
    import datasets
    label_key, _ = HUB_CIFAR[source]
    out = []
    for split in ("train", "test"):
        ds = datasets.load_dataset(source, split=split)
        x = np.stack([np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1) for img in ds["img"]])
        out += [x, np.asarray(ds[label_key], dtype=np.int64)]
    return tuple(out)


def load_digits_split(test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as float images in [0, 1] [N, 1, 8, 8], split per class (seeded)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x, y = (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[:int(round(test_fraction * len(idx)))]] = True
    return x[~test], y[~test], x[test], y[test]


def _rows(x: np.ndarray, y: np.ndarray, scale: float) -> list[dict]:
    if len(x) == 0:
        return []
    shape = list(x.shape[1:])
    flat = (x.reshape(len(x), -1).astype(np.float32) / scale).round(4)
    return [{"x": xi, "y": int(yi), "shape": shape} for xi, yi in zip(flat.tolist(), y.tolist())]


# --- the task ------------------------------------------------------------------------------------------

class VisionDataset(torch.utils.data.Dataset):
    """Rows as one float tensor [N, C, H, W] (converted once); items carry their row ``index``."""

    def __init__(self, rows: list[dict], labels: LabelSpace | None = None):
        shape = tuple(rows[0]["shape"]) if rows else tuple(labels.shape if labels else (1, 8, 8))
        if any(tuple(r["shape"]) != shape for r in rows):
            raise ValueError("vision rows must all have the same shape")
        self.x = torch.tensor(np.asarray([r["x"] for r in rows], dtype=np.float32).reshape(len(rows), *shape))
        self.y = torch.tensor([int(r["y"]) for r in rows], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "index": i}


def collate_images(items: list[dict]) -> dict:
    return {"x": torch.stack([it["x"] for it in items]), "y": torch.stack([it["y"] for it in items]),
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long)}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _strided(rows: list, most: int) -> list:
    return rows[:: max(1, -(-len(rows) // most))][:most] if len(rows) > most else rows


@register_task
class VisionTask(Task):
    kind = "vision"
    metric_columns = ("accuracy_forget", "accuracy_retain", "rouge_forget", "rouge_retain", "final_loss_forget",
                      "final_loss_retain")
    data_defaults = {"source": "digits", "forget_class": 0, "n_forget": 500, "n_retain": None, "seed": 0,
                     "test_fraction": 0.2}

    # --- validation ---
    def problems(self, data: dict, where: str) -> list[str]:
        out, src, n_classes = [], data["source"], None
        if not isinstance(src, str) or not src:
            out.append(f"{where}: source = {src!r} must be 'digits' or a folder with CIFAR python batches")
        elif src in DIGITS_SOURCES:
            n_classes = 10
        elif src in HUB_CIFAR:
            n_classes = HUB_CIFAR[src][1]
        elif not os.path.isdir(src) or _cifar_layout(src) is None:
            out.append(f"{where}: source = {src!r} is neither 'digits', {' nor '.join(map(repr, HUB_CIFAR))}, "
                       f"nor a folder with CIFAR python batches (data_batch_1 for CIFAR-10, train for CIFAR-100)")
        else:
            n_classes = 10 if _cifar_layout(src) == "cifar10" else 100
        fc = data["forget_class"]
        if not _is_int(fc) or fc < 0:
            out.append(f"{where}: forget_class = {fc!r} must be a class index, an integer >= 0")
        elif n_classes is not None and fc >= n_classes:
            out.append(f"{where}: forget_class = {fc!r} is not a class of {src!r}; allowed: 0..{n_classes - 1}")
        if not _is_int(data["n_forget"]) or data["n_forget"] < 1:
            out.append(f"{where}: n_forget = {data['n_forget']!r} must be a positive integer (the paper: 500)")
        if data["n_retain"] is not None and (not _is_int(data["n_retain"]) or data["n_retain"] < 1):
            out.append(f"{where}: n_retain = {data['n_retain']!r} must be a positive integer or null (all)")
        tf = data["test_fraction"]
        if isinstance(tf, bool) or not isinstance(tf, (int, float)) or not 0 < tf < 1:
            out.append(f"{where}: test_fraction = {tf!r} must be a number strictly between 0 and 1")
        return out

    def model_problem(self, name: str) -> str | None:
        return vision_model_problem(name)

    # --- data ---
    def prepare(self, data: dict, workdir: str) -> dict[str, list]:
        seed, fc = int(data["seed"]), int(data["forget_class"])
        if data["source"] in DIGITS_SOURCES:
            xtr, ytr, xte, yte = load_digits_split(float(data["test_fraction"]), seed)
            scale = 1.0
        else:
            load = load_cifar_hub if data["source"] in HUB_CIFAR else load_cifar
            xtr, ytr, xte, yte = load(data["source"])
            scale = 255.0
        if fc not in set(ytr.tolist()):
            raise ValueError(f"forget_class {fc} has no training images in {data['source']!r}")
        rng = np.random.default_rng(seed)
        forget_idx = np.flatnonzero(ytr == fc)
        forget_idx = forget_idx[np.sort(rng.permutation(len(forget_idx))[:data["n_forget"]])]
        rest_idx = np.setdiff1d(np.flatnonzero(ytr == fc), forget_idx)
        retain_idx = np.flatnonzero(ytr != fc)
        if data["n_retain"] is not None and data["n_retain"] < len(retain_idx):
            retain_idx = retain_idx[np.sort(rng.permutation(len(retain_idx))[:data["n_retain"]])]
        splits = {"forget": _rows(xtr[forget_idx], ytr[forget_idx], scale),
                  "forget_class_rest": _rows(xtr[rest_idx], ytr[rest_idx], scale),
                  "retain": _rows(xtr[retain_idx], ytr[retain_idx], scale),
                  "forget_test": _rows(xte[yte == fc], yte[yte == fc], scale),
                  "retain_test": _rows(xte[yte != fc], yte[yte != fc], scale)}
        return {k: v for k, v in splits.items() if v}

    def train_rows(self, splits: dict[str, list], variant: str) -> list:
        if variant == "retain_only":
            return splits["retain"]
        return splits["forget"] + splits.get("forget_class_rest", []) + splits["retain"]

    def make_tokenizer(self, model: dict, splits: dict[str, list]) -> LabelSpace:
        rows = [r for name in ("forget", "forget_class_rest", "retain") for r in splits.get(name, [])]
        num_classes = 1 + max(int(r["y"]) for rows_ in splits.values() for r in rows_)
        shape = tuple(int(s) for s in rows[0]["shape"])
        x = np.asarray([r["x"] for r in _strided(rows, 2000)], dtype=np.float64).reshape(-1, shape[0], shape[1] * shape[2])
        std = np.maximum(x.std(axis=(0, 2)), 1e-3)
        return LabelSpace(num_classes, shape, [round(float(m), 6) for m in x.mean(axis=(0, 2))],
                          [round(float(s), 6) for s in std])

    def dataset(self, rows: list, tokenizer) -> VisionDataset:
        return VisionDataset(rows, tokenizer)

    def collate(self, tokenizer):
        return collate_images

    # --- models ---
    def build_model(self, model: dict, tokenizer: LabelSpace, seed: int) -> ResNet:
        if not isinstance(tokenizer, LabelSpace):
            raise ValueError("the vision task builds its model from make_tokenizer's LabelSpace (classes, shape)")
        net = build_vision_model(model["name"], num_classes=tokenizer.num_classes, in_channels=tokenizer.shape[0],
                                 mean=tokenizer.mean, std=tokenizer.std, seed=seed)
        return net.to(getattr(torch, model.get("dtype", "float32")))

    def save_model(self, model: ResNet, tokenizer: LabelSpace, out_dir: str) -> None:
        from safetensors.torch import save_file
        d = os.path.join(out_dir, "model")
        os.makedirs(d, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                  os.path.join(d, "model.safetensors"))
        labels = asdict(tokenizer)
        labels["shape"] = list(labels["shape"])
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"model": model.config, "labels": labels}, f, indent=1)

    def load_model(self, local_dir: str, device):
        from safetensors.torch import load_file
        d = os.path.join(local_dir, "model")
        with open(os.path.join(d, "config.json")) as f:
            config = json.load(f)
        c = config["model"]
        if c["arch"] not in VISION_MODELS:
            raise ValueError(f"{d} holds an unknown vision model {c['arch']!r}")
        model = ResNet(c["arch"], c["num_classes"], c["in_channels"], c["mean"], c["std"])
        state = load_file(os.path.join(d, "model.safetensors"))
        model = model.to(next(iter(state.values())).dtype) if state else model
        model.load_state_dict(state, strict=True)
        labels = config["labels"]
        return model.to(device), LabelSpace(labels["num_classes"], tuple(labels["shape"]), labels["mean"], labels["std"])

    # --- losses and metrics ---
    def logprobs(self, model, batch: dict):
        """log softmax(logits)[y] per image, count 1 each: -sum/count is the mean cross-entropy."""
        x = batch["x"].to(next(model.parameters()).dtype)
        logp = torch.log_softmax(model(x).float(), dim=-1)
        return logp.gather(1, batch["y"].view(-1, 1)).squeeze(1), torch.ones_like(batch["y"], dtype=torch.float32)

    @torch.no_grad()
    def predict(self, model, rows: list[dict], batch_size: int = EVAL_BATCH) -> tuple[np.ndarray, np.ndarray]:
        """(correct 0/1 per row, cross-entropy per row) in eval mode."""
        if not rows:
            return np.zeros(0), np.zeros(0)
        ds, was_training = VisionDataset(rows), model.training
        device = next(model.parameters()).device
        model.eval()
        correct, nll = [], []
        for b in range(0, len(ds), batch_size):
            batch = collate_images([ds[i] for i in range(b, min(b + batch_size, len(ds)))])
            x = batch["x"].to(device, next(model.parameters()).dtype)
            logp = torch.log_softmax(model(x).float(), dim=-1).cpu()
            correct.append((logp.argmax(-1) == batch["y"]).float())
            nll.append(-logp.gather(1, batch["y"].view(-1, 1)).squeeze(1))
        model.train(was_training)
        return torch.cat(correct).numpy(), torch.cat(nll).numpy()

    def memorisation(self, model, tokenizer, splits: dict[str, list], variant: str = "full") -> float:
        """Training accuracy on up to GATE_SAMPLE images, half forget, half retain (retain only for the
        retrained model, which never sees the forget images)."""
        if variant != "full":
            return float(self.predict(model, _strided(splits["retain"], GATE_SAMPLE))[0].mean())
        half = GATE_SAMPLE // 2
        rows = _strided(splits["forget"], half) + _strided(splits["retain"], half)
        return float(self.predict(model, rows)[0].mean())

    @staticmethod
    def _acc_splits(splits: dict[str, list]) -> tuple[str, str]:
        held_out = splits.get("forget_test") and splits.get("retain_test")
        return ("forget_test", "retain_test") if held_out else ("forget", "retain")

    def _scores(self, model, splits, most: int | None, batch_size: int) -> tuple[dict, dict]:
        pick = (lambda rows: _strided(rows, most)) if most else (lambda rows: rows)
        acc_f, acc_r = self._acc_splits(splits)
        names = dict.fromkeys(["forget", "retain", acc_f, acc_r])
        per = {n: self.predict(model, pick(splits[n]), batch_size) for n in names}
        scores = {"accuracy_forget": float(per[acc_f][0].mean()), "accuracy_retain": float(per[acc_r][0].mean()),
                  "final_loss_forget": float(per["forget"][1].mean()), "final_loss_retain": float(per["retain"][1].mean())}
        scores.update(rouge_forget=scores["accuracy_forget"], rouge_retain=scores["accuracy_retain"])
        return scores, per

    def curve_metrics(self, model, tokenizer, splits: dict[str, list], eval_cfg: dict) -> dict:
        """Accuracies (held-out splits when present) as rouge_*, on up to CURVE_SAMPLE images per split."""
        return self._scores(model, splits, CURVE_SAMPLE, max(int(eval_cfg.get("batch_size", 32)), EVAL_BATCH))[0]

    def evaluate(self, model, tokenizer, splits, eval_cfg, reference=None):
        """Full-split accuracies and losses; samples: 0/1 correctness per image of every evaluated split."""
        bs = max(int(eval_cfg.get("batch_size", 32)), EVAL_BATCH)
        scores, per = self._scores(model, splits, None, bs)
        for name in ("forget_test", "retain_test"):  # both readings of Table 4 end up in the samples
            if name in splits and name not in per:
                per[name] = self.predict(model, splits[name], bs)
        samples = [{"split": name, "metric": "correct", "index": i, "value": float(v)}
                   for name, (correct, _) in per.items() for i, v in enumerate(correct)]
        return scores, samples
