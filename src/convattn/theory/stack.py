"""Layer stacks: parse "conv:8:5 pool:4:2 linear:10", derive shapes and parameter counts.

Every conv and pool output size is what torch computes, floor((in + 2*pad - k) / stride) + 1;
when the stride does not tile the input, the formula says that it floors and how many
input rows/columns the last window never reaches. `strict=True` refuses such a layer
instead. The derived total and output shape are cross-checked against the same stack
built in torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from convattn.common.errors import UserError

_INT = re.compile(r"^[0-9]+$")
_FORMS = "conv:OUT:K[:STRIDE[:PAD]], pool:K[:STRIDE] or linear:N"


@dataclass
class Layer:
    kind: str  # "conv" | "pool" | "linear"
    spec: str  # as written by the user, for messages
    out: int = 0  # conv: kernels; linear: units
    kernel: int = 0
    stride: int = 1
    pad: int = 0


def parse_input(text: str) -> tuple[int, int, int]:
    """'28x28x3' -> (28, 28, 3) as (H, W, C)."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(_INT.match(p) and int(p) > 0 for p in parts):
        raise UserError(f"--input {text}: expected HxWxC with positive integers, e.g. 28x28x3")
    h, w, c = (int(p) for p in parts)
    return h, w, c


def parse_stack(text: str) -> list[Layer]:
    """Parse 'conv:OUT:K[:STRIDE[:PAD]] pool:K[:STRIDE] linear:N' into layers."""
    tokens = text.split()
    if not tokens:
        raise UserError('--stack: empty; give layers such as "conv:8:5 pool:4:2 linear:10"')
    layers = []
    for i, token in enumerate(tokens, 1):
        kind, *fields = token.split(":")
        where = f"--stack layer {i} '{token}'"
        if not all(_INT.match(f) for f in fields):
            raise UserError(f"{where}: every field after the kind must be a non-negative integer")
        values = [int(f) for f in fields]
        if kind == "conv" and 2 <= len(values) <= 4:
            out, k, stride, pad = values + [1, 0][len(values) - 2:]  # stride 1, padding 0 unless given
            layer = Layer("conv", token, out=out, kernel=k, stride=stride, pad=pad)
        elif kind == "pool" and 1 <= len(values) <= 2:
            k = values[0]
            layer = Layer("pool", token, kernel=k, stride=values[1] if len(values) == 2 else k)
        elif kind == "linear" and len(values) == 1:
            layer = Layer("linear", token, out=values[0])
        else:
            raise UserError(f"{where}: expected {_FORMS}")
        positive = values[:3] if kind == "conv" else values  # a conv's padding may be 0
        if min(positive) < 1:
            raise UserError(f"{where}: sizes, kernels and strides must be at least 1")
        layers.append(layer)
    return layers


def _axis(size: int, k: int, s: int, p: int) -> tuple[int, int, str]:
    """Output size along one axis, input rows (or columns) left unused, and the formula."""
    span = size + 2 * p - k
    out, unused = span // s + 1, span % s
    ratio = f"({size}+2*{p}-{k})/{s}" if p else f"({size}-{k})/{s}"
    return out, unused, (f"floor({ratio})+1 = {out}" if unused else f"({ratio})+1 = {out}")


def _unused_note(count: int, pad: int, noun: str, nouns: str) -> str:
    if not count:
        return ""
    where = f"{noun if count == 1 else nouns} of the padded input" if pad else \
        f"input {noun if count == 1 else nouns}"
    return f"; {count} {where} unused"


def _window(where: str, layer: Layer, h: int, w: int, strict: bool) -> tuple[int, int, list[int], str]:
    """A conv or pool window over an h x w input: output size, unused rows/columns, formula."""
    k, s, p = layer.kernel, layer.stride, layer.pad
    if k > h + 2 * p or k > w + 2 * p:
        padded = f" padded by {p}" if p else ""
        raise UserError(f"{where}: kernel {k} is larger than its input {h}x{w}{padded}; "
                        "use a smaller kernel or more padding")
    oh, unused_h, formula_h = _axis(h, k, s, p)
    ow, unused_w, formula_w = _axis(w, k, s, p)
    if strict and (unused_h or unused_w):
        size = h if unused_h else w
        ratio = f"({size}+2*{p}-{k})/{s}"
        raise UserError(f"{where}: {ratio} is not an integer, so stride {s} does not tile the input "
                        "(--strict); change the stride, kernel or padding, or drop --strict to floor like torch")
    if h == w:
        formula = formula_h + _unused_note(unused_h, p, "row/column", "rows/columns")
    else:
        formula = (f"rows {formula_h}{_unused_note(unused_h, p, 'row', 'rows')}; "
                   f"columns {formula_w}{_unused_note(unused_w, p, 'column', 'columns')}")
    return oh, ow, [unused_h, unused_w], formula


def stack_shapes(input_shape: tuple[int, int, int], layers: list[Layer], strict: bool = False) -> list[dict]:
    """Each layer's output shape, parameter count and the formula behind both.

    Shapes are (H, W, C) for conv/pool and (N,) for linear. conv and pool rows also give
    `unused`: the input rows and columns that no window reaches, [rows, columns].
    """
    rows = []
    shape: tuple[int, ...] = input_shape
    for i, layer in enumerate(layers, 1):
        where = f"--stack layer {i} '{layer.spec}'"
        if layer.kind in ("conv", "pool"):
            if len(shape) != 3:
                raise UserError(f"{where}: a {layer.kind} layer needs an image input, but the "
                                f"previous layer gives a flat vector of {shape[0]}")
            h, w, c = shape
            oh, ow, unused, shape_formula = _window(where, layer, h, w, strict)
            if layer.kind == "conv":
                k = layer.kernel
                shape = (oh, ow, layer.out)
                params, formula = layer.out * (k * k * c + 1), f"{layer.out}*({k}*{k}*{c}+1)"
            else:
                shape = (oh, ow, c)
                params, formula = 0, "0 (max-pool has no weights)"
        else:
            n_in = math.prod(shape)
            flat = f"{'*'.join(map(str, shape))} = {n_in} features flattened; " if len(shape) == 3 else ""
            shape = (layer.out,)
            params, formula = n_in * layer.out + layer.out, f"{n_in}*{layer.out}+{layer.out}"
            shape_formula = f"{flat}{layer.out} units"
        row = {"layer": layer.spec, "kind": layer.kind, "output_shape": list(shape), "params": params,
               "formula": formula, "shape_formula": shape_formula}
        if layer.kind != "linear":
            row["unused"] = unused
        rows.append(row)
    return rows


def torch_count(input_shape: tuple[int, int, int], layers: list[Layer]) -> tuple[int, list[int]]:
    """Build the stack in torch; return its parameter count and its output shape (H, W, C) or (N,)."""
    h, w, c = input_shape
    probe = torch.zeros(1, c, h, w)  # (batch, C, H, W)
    modules: list[nn.Module] = []
    channels, features = c, 0
    for layer in layers:
        if layer.kind == "conv":
            modules.append(nn.Conv2d(channels, layer.out, layer.kernel, layer.stride, layer.pad))
            channels = layer.out
        elif layer.kind == "pool":
            modules.append(nn.MaxPool2d(layer.kernel, layer.stride))  # ceil_mode=False: floors
        else:
            if not features:  # the first linear layer flattens what reaches it
                modules.append(nn.Flatten())
                features = nn.Sequential(*modules)(probe).shape[1]
            modules.append(nn.Linear(features, layer.out))
            features = layer.out
    net = nn.Sequential(*modules)
    with torch.no_grad():
        out = net(probe)
    shape = [out.shape[1]] if features else [out.shape[2], out.shape[3], out.shape[1]]
    return sum(p.numel() for p in net.parameters()), shape


def analyse_stack(input_shape: tuple[int, int, int], stack: str, strict: bool = False) -> dict:
    """Parse, derive and cross-check one stack; the JSON-ready result."""
    layers = parse_stack(stack)
    rows = stack_shapes(input_shape, layers, strict)
    total = sum(r["params"] for r in rows)
    torch_total, torch_shape = torch_count(input_shape, layers)
    if torch_total != total or torch_shape != rows[-1]["output_shape"]:
        raise UserError(f"--stack '{stack}': derived {total} parameters / output {rows[-1]['output_shape']}"
                        f" but torch gives {torch_total} / {torch_shape}; please report this")
    return {"input": list(input_shape), "stack": stack, "layers": rows,
            "total_params": total, "torch_total_params": torch_total}
