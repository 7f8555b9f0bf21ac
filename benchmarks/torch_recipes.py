"""The recipes of time_to_accuracy.py written in PyTorch: same data, batches, optimizer, schedule.

`train(name, epochs, seed, clock, initial)` trains recipe `name`'s model the way `splitgrad
train NAME` trains it, from the initial weights in the file `initial`, and returns its test
metrics ({"loss", "accuracy"}); `clock` gets splitgrad's callback hooks (on_train_begin,
on_epoch_begin, on_train_batch_end, on_epoch_end with the epoch's loss, accuracy and val_*
values, on_train_end). The data come from the recipe's own `load_data` (NumPy arrays), so both
sides train on the same rows; images go to NCHW for PyTorch.

Both sides start from the same weights: `built_model` builds the recipe's splitgrad model on one
sample (splitgrad's initialisation, seeded), `save_initial` writes its weights in PyTorch's
layouts to a safetensors file (in a process of its own, so that neither side's memory or time
counts it) and `copy_weights` puts them into the PyTorch network. splitgrad's generator is
reseeded after the build on one side and before the batches on the other, so irish-lstm's
random windows are the same draws on both sides too. What is left to differ is the arithmetic's
rounding (float32) and the time it takes.
"""

from __future__ import annotations

import copy
import math

import numpy as np


def _model(name, nn, data):
    """The recipe's network: digits-cnn, fashion-mlp, fashion-cnn (NCHW) or irish-lstm (its
    sizes from `data.sizes`, as the recipe's)."""
    if name == "digits-cnn":
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10),
        )  # fmt: skip
    if name == "fashion-mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "fashion-cnn":
        return nn.Sequential(
            nn.Conv2d(1, 24, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(24, 36, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(36 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 10),
        )  # fmt: skip

    class Music(nn.Module):  # irish-lstm: Embedding(83, 256) → LSTM(1024) → Dense(83)
        def __init__(self, vocab, embedding, units):
            super().__init__()
            self.emb = nn.Embedding(vocab, embedding)
            self.lstm = nn.LSTM(embedding, units, batch_first=True)
            self.out = nn.Linear(units, vocab)

        def forward(self, t):
            return self.out(self.lstm(self.emb(t))[0])

    return Music(len(data.vocab), data.sizes["embedding"], data.sizes["units"])


# (height, width, channels) of the image a Flatten turns into the first Dense layer's input:
# splitgrad flattens (H, W, C), PyTorch (C, H, W), so that layer's rows are reordered.
FLATTENED = {"digits-cnn": (2, 2, 32), "fashion-cnn": (5, 5, 36)}


def built_model(name, recipe, settings, data, seed):
    """The recipe's splitgrad model, built (weights drawn) on one test sample from `seed`; the
    generator is then reseeded, so what draws next (random windows) starts at the same place
    on both sides."""
    from splitgrad import random as sg_random

    sg_random.seed(seed)
    model = recipe.build_model(settings["learning_rate"], data)
    model.build_from_sample(data.x_test)  # (one row, inference mode; builds the optimizer too)
    sg_random.seed(seed)
    return model


def torch_layouts(name, sg_model) -> list:
    """splitgrad's weights as PyTorch's parameters, in PyTorch's registration order: a Conv2D
    kernel (kh, kw, in, out) → (out, in, kh, kw), a Dense kernel (in, out) → its transpose (after
    a Flatten also reordered to PyTorch's (C, H, W) flattening), LSTM w_ih/w_hh → transposes."""
    out = []
    flattened = FLATTENED.get(name)
    for layer in sg_model.layers:
        w = {k: p.data for k, p in layer.named_weights().items()}
        kind = type(layer).__name__
        if kind == "Conv2D":
            out += [w["kernel"].transpose(3, 2, 0, 1), w["bias"]]
        elif kind == "Dense":
            kernel = w["kernel"]
            if flattened is not None:  # the Dense after the Flatten: rows (H, W, C) → (C, H, W)
                kernel = kernel.reshape(*flattened, -1).transpose(2, 0, 1, 3)
                kernel, flattened = kernel.reshape(len(w["kernel"]), -1), None
            out += [kernel.T, w["bias"]]
        elif kind == "Embedding":
            out.append(w["embeddings"])
        elif kind == "LSTM":
            out += [w["w_ih"].T, w["w_hh"].T, w["b_ih"], w["b_hh"]]
        elif w:
            raise TypeError(f"torch_recipes: no PyTorch layout for splitgrad layer {kind}")
    return out


def save_initial(name, path, seed):
    """Build recipe `name`'s splitgrad model (as time_to_accuracy's splitgrad side does) and
    save its weights in PyTorch's layouts and order to the safetensors file `path`."""
    from safetensors.numpy import save_file

    from splitgrad import recipes

    recipe = recipes.get(name)
    data, _ = recipes.load_recipe_data(name, recipe, False, seed)
    model = built_model(name, recipe, recipes.settings_for(recipe), data, seed)
    arrays = torch_layouts(name, model)
    save_file({f"{i:03d}": np.ascontiguousarray(a) for i, a in enumerate(arrays)}, str(path))


def load_initial(path) -> list:
    """The arrays save_initial wrote, in order."""
    from safetensors.numpy import load_file

    arrays = load_file(str(path))
    return [arrays[k] for k in sorted(arrays)]


def copy_weights(torch, name, arrays, torch_model):
    """Put `arrays` (splitgrad's weights in PyTorch's layouts) into the PyTorch network, in
    registration order, shapes checked one by one."""
    params = list(torch_model.parameters())
    if len(params) != len(arrays):
        raise ValueError(f"{name}: {len(arrays)} splitgrad weights for {len(params)} parameters")
    with torch.no_grad():
        for p, a in zip(params, arrays):
            if tuple(p.shape) != a.shape:
                raise ValueError(f"{name}: weight {a.shape} for parameter {tuple(p.shape)}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(a)))


def evaluate(torch, model, loss_fn, x, y, batch) -> dict:
    """{"loss", "accuracy"}: the row-weighted mean cross-entropy and the share of right argmax."""
    model.eval()
    loss_sum, right, rows = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(x[i : i + batch])
            target = y[i : i + batch]
            n = target.numel()
            loss_sum += float(loss_fn(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))) * n
            right += int((logits.argmax(-1) == target).sum())
            rows += n
    model.train()
    return {"loss": loss_sum / rows, "accuracy": right / rows}


def train(name, epochs, seed, clock, initial) -> dict:
    """Train recipe `name` in PyTorch (see the module docstring); returns its test metrics."""
    import torch
    from torch import nn

    from splitgrad import random as sg_random
    from splitgrad import recipes
    from splitgrad.data import ArrayBatches

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    sg_random.seed(seed)
    recipe = recipes.get(name)
    settings = recipes.settings_for(recipe, epochs=epochs)
    data, _ = recipes.load_recipe_data(name, recipe, False, seed)
    model = _model(name, nn, data)
    copy_weights(torch, name, load_initial(initial), model)
    sg_random.seed(seed)  # as built_model leaves it: the same random windows
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=settings["learning_rate"])
    epochs, batch = settings["epochs"], settings["batch_size"]

    def tensor(a):
        a = np.asarray(a)
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2) if a.ndim == 4 else a))

    if name == "irish-lstm":
        source = recipe.batches(data, settings)  # RandomWindows over the training ids
        val = test = (tensor(data.x_test), tensor(data.y_test))
        val_batch, schedule = recipes.eval_batch(recipe), None  # as fit_recipe
    else:
        cut = int(len(data.x_train) * (1.0 - 0.1))  # Model.fit's validation_split=0.1
        source = ArrayBatches(data.x_train[:cut], data.y_train[:cut], batch, True, seed)
        val = (tensor(data.x_train[cut:]), tensor(data.y_train[cut:]))
        test = (tensor(data.x_test), tensor(data.y_test))
        val_batch, schedule = batch, None
        if name.startswith("fashion"):  # fashion_mlp.fit_options: cosine decay to 0, per batch
            train_rows = len(data.x_train) - int(len(data.x_train) * 0.1)  # as fit_options
            steps = math.ceil(train_rows / batch) * epochs
            schedule = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps))
            )
    best, best_state, wait = None, None, 0  # fashion-cnn: EarlyStopping(patience 3, restore)
    clock.on_train_begin()
    model.train()
    for epoch in range(epochs):
        clock.on_epoch_begin(epoch)
        loss_sum, right, rows = 0.0, 0, 0
        for i, (xb, yb) in enumerate(source.batches(epoch)):
            xb, yb = tensor(xb), tensor(yb)
            opt.zero_grad()
            logits = model(xb)
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))
            loss.backward()
            opt.step()
            if schedule is not None:
                schedule.step()
            n = len(xb)  # splitgrad's loop weighs each batch's loss by its examples
            loss_sum += loss.item() * n
            right += int((logits.argmax(-1) == yb).sum())
            rows += n
            clock.on_train_batch_end(i)
        logs = {"loss": loss_sum / rows, "accuracy": right / (rows * (yb.numel() // len(yb)))}
        held_out = evaluate(torch, model, loss_fn, *val, val_batch)
        logs.update({f"val_{k}": v for k, v in held_out.items()})
        clock.on_epoch_end(epoch, logs)
        if name == "fashion-cnn":
            if best is None or logs["val_loss"] < best:
                best, best_state, wait = logs["val_loss"], copy.deepcopy(model.state_dict()), 0
            else:
                wait += 1
                if wait >= 3 and epoch > 0:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    clock.on_train_end()  # as splitgrad's fit: after EarlyStopping restored the best weights
    return evaluate(torch, model, loss_fn, *test, recipes.eval_batch(recipe))  # as test_metrics
