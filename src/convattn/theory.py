"""Q1 and Q2.1 of the study, answered by computation rather than restated.

- A layer-stack calculator (`--stack "conv:8:5 pool:4:2 linear:10"`) that derives every
  output shape and parameter count with its formula, and cross-checks the total against
  the same stack built in torch.
- Q1.1/Q1.2: the study's CNN against the MLP that replaces conv+pool by 100 hidden units.
- Q1.3: self-attention probabilities P = softmax(X A X^T), A = W_Q W_K^T / sqrt(d), the rank
  of A, and the invariance of P to W_Q -> W_Q B, W_K -> W_K B^{-T}; measured in float64.
- Q2.1: translation equivariance of convolution and the approximate invariance that max
  pooling adds; measured on a random layer and image.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convattn.common import io
from convattn.common.errors import UserError

STUDY_INPUT = (28, 28, 3)
STUDY_CNN = "conv:8:5 pool:4:2 linear:10"
STUDY_MLP = "linear:100 linear:10"


# ----------------------------------------------------------------------------- layer stacks


@dataclass
class Layer:
    kind: str  # "conv" | "pool" | "linear"
    spec: str  # as written by the user, for messages
    out: int = 0  # conv: kernels; linear: units
    kernel: int = 0
    stride: int = 1
    pad: int = 0


_INT = re.compile(r"^[0-9]+$")


def parse_input(text: str) -> tuple[int, int, int]:
    """'28x28x3' -> (28, 28, 3) as (H, W, C)."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(_INT.match(p) and int(p) > 0 for p in parts):
        raise UserError(f"--input {text}: expected HxWxC with positive integers, e.g. 28x28x3")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def parse_stack(text: str) -> list[Layer]:
    """Parse 'conv:OUT:K[:STRIDE[:PAD]] pool:K[:STRIDE] linear:N' into layers."""
    layers = []
    tokens = text.split()
    if not tokens:
        raise UserError('--stack: empty; give layers such as "conv:8:5 pool:4:2 linear:10"')
    for i, token in enumerate(tokens, 1):
        kind, *nums = token.split(":")
        where = f"--stack layer {i} '{token}'"
        if not all(_INT.match(n) for n in nums):
            raise UserError(f"{where}: every field after the kind must be a non-negative integer")
        values = [int(n) for n in nums]
        if kind == "conv" and 2 <= len(values) <= 4:
            out, k, stride, pad = (values + [1, 0][len(values) - 2:])[:4]
            layer = Layer("conv", token, out=out, kernel=k, stride=stride, pad=pad)
        elif kind == "pool" and 1 <= len(values) <= 2:
            k = values[0]
            layer = Layer("pool", token, kernel=k, stride=values[1] if len(values) == 2 else k)
        elif kind == "linear" and len(values) == 1:
            layer = Layer("linear", token, out=values[0])
        else:
            raise UserError(f"{where}: expected conv:OUT:K[:STRIDE[:PAD]], pool:K[:STRIDE] "
                            "or linear:N")
        if min(values) < 1 and not (kind == "conv" and len(values) == 4 and min(values[:3]) >= 1):
            raise UserError(f"{where}: sizes, kernels and strides must be at least 1")
        layers.append(layer)
    return layers


def stack_shapes(input_shape: tuple[int, int, int], layers: list[Layer]) -> list[dict]:
    """Each layer's output shape, parameter count and the formula behind both.

    Shapes are (H, W, C) for conv/pool and (N,) for linear. A conv whose stride does not
    tile its padded input exactly is an error (pixels would be silently dropped); a pool
    floors like torch's MaxPool2d (ceil_mode=False) and says so in its formula.
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
            k, s, p = layer.kernel, layer.stride, layer.pad
            if k > h + 2 * p or k > w + 2 * p:
                raise UserError(f"{where}: kernel {k} is larger than its input {h}x{w}"
                                + (f" padded by {p}" if p else "") + "; use a smaller kernel or more padding")
            span_h, span_w = h + 2 * p - k, w + 2 * p - k
            if layer.kind == "conv" and (span_h % s or span_w % s):
                raise UserError(f"{where}: ({h}+2*{p}-{k})/{s} is not an integer, so stride {s} "
                                "does not tile the input; change the stride, kernel or padding")
            oh, ow = span_h // s + 1, span_w // s + 1
            floor = "floor" if (span_h % s or span_w % s) else ""
            size_formula = f"{floor}(({h}+2*{p}-{k})/{s})+1 = {oh}" if p else f"{floor}(({h}-{k})/{s})+1 = {oh}"
            if layer.kind == "conv":
                shape = (oh, ow, layer.out)
                params = layer.out * (k * k * c + 1)
                formula = f"{layer.out}*({k}*{k}*{c}+1)"
            else:
                shape = (oh, ow, c)
                params, formula = 0, "0 (max-pool has no weights)"
        else:
            n_in = math.prod(shape)
            flat = f"{'*'.join(map(str, shape))} = {n_in} features flattened; " if len(shape) == 3 else ""
            shape = (layer.out,)
            params = n_in * layer.out + layer.out
            formula = f"{n_in}*{layer.out}+{layer.out}"
            size_formula = f"{flat}{layer.out} units"
        rows.append({"layer": layer.spec, "kind": layer.kind, "output_shape": list(shape),
                     "params": params, "formula": formula, "shape_formula": size_formula})
    return rows


def torch_param_count(input_shape: tuple[int, int, int], layers: list[Layer]) -> tuple[int, list[int]]:
    """Build the stack in torch; return its parameter count and its output shape."""
    import torch
    from torch import nn

    h, w, c = input_shape
    modules: list[nn.Module] = []
    channels, features, flat = c, None, False
    probe = torch.zeros(1, c, h, w)
    for layer in layers:
        if layer.kind == "conv":
            modules.append(nn.Conv2d(channels, layer.out, layer.kernel, layer.stride, layer.pad))
            channels = layer.out
        elif layer.kind == "pool":
            modules.append(nn.MaxPool2d(layer.kernel, layer.stride))
        else:
            if not flat:
                modules.append(nn.Flatten())
                features = nn.Sequential(*modules)(probe).shape[1]
                flat = True
            modules.append(nn.Linear(features, layer.out))
            features = layer.out
    net = nn.Sequential(*modules)
    with torch.no_grad():
        out = net(probe)
    shape = [out.shape[1]] if flat else [out.shape[2], out.shape[3], out.shape[1]]
    return sum(p.numel() for p in net.parameters()), shape


def analyse_stack(input_shape: tuple[int, int, int], stack: str) -> dict:
    layers = parse_stack(stack)
    rows = stack_shapes(input_shape, layers)
    total = sum(r["params"] for r in rows)
    torch_total, torch_shape = torch_param_count(input_shape, layers)
    if torch_total != total or torch_shape != rows[-1]["output_shape"]:
        raise UserError(f"--stack '{stack}': derived {total} parameters / output {rows[-1]['output_shape']}"
                        f" but torch gives {torch_total} / {torch_shape}; please report this")
    return {"input": list(input_shape), "stack": stack, "layers": rows,
            "total_params": total, "torch_total_params": torch_total}


# -------------------------------------------------------------------------- self-attention


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def attention_case(rng: np.random.Generator, L: int, n: int, d: int) -> dict:
    """One random instance in float64: rank of A, softmax forms, invariance to B."""
    X = rng.standard_normal((L, n))
    Wq, Wk = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    A = Wq @ Wk.T / math.sqrt(d)  # (n, n)
    singular = np.linalg.svd(A, compute_uv=False)
    tol = singular.max() * max(A.shape) * np.finfo(np.float64).eps
    rank = int((singular > tol).sum())

    P_usual = _softmax_rows((X @ Wq) @ (X @ Wk).T / math.sqrt(d))  # softmax(Q K^T / sqrt d)
    P_bilinear = _softmax_rows(X @ A @ X.T)

    # B = U diag(s) V^T with singular values in [0.5, 2]: invertible, condition number <= 4
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    B = U @ np.diag(rng.uniform(0.5, 2.0, d)) @ V.T
    Wq2, Wk2 = Wq @ B, Wk @ np.linalg.inv(B).T
    P_head2 = _softmax_rows((X @ Wq2) @ (X @ Wk2).T / math.sqrt(d))
    return {
        "L": L, "n": n, "d": d, "rank": rank, "rank_tolerance": float(tol),
        "singular_value_after_d": float(singular[d]) if d < n else None,
        "softmax_max_abs_diff": float(np.abs(P_usual - P_bilinear).max()),
        "B_condition_number": float(np.linalg.cond(B)),
        "invariance_max_abs_diff": float(np.abs(P_head2 - P_usual).max()),
    }


ATTENTION_SIZES = [(10, 16, 4), (6, 8, 2), (12, 8, 8), (20, 32, 5), (16, 64, 1)]


def attention_checks(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cases = [attention_case(rng, *size) for size in ATTENTION_SIZES]
    first = cases[0]
    return {
        # the first instance's rank and d; every instance is listed in `cases`
        "max_rank": first["rank"], "d": first["d"], "n": first["n"],
        "all_rank_le_d": all(c["rank"] <= c["d"] for c in cases),
        "rank_tolerance": "sigma_max * max(n, n) * float64 eps (numpy's matrix_rank default)",
        "softmax_max_abs_diff": max(c["softmax_max_abs_diff"] for c in cases),
        "invariance_max_abs_diff": max(c["invariance_max_abs_diff"] for c in cases),
        "cases": cases,
    }


# ---------------------------------------------------------------------- equivariance (Q2.1)


def equivariance_checks(seed: int = 0, size: int = 28, kernel: int = 3) -> dict:
    """Measure conv(shift(x)) vs shift(conv(x)), and how much 2x2 max-pooling hides shifts.

    The image is smoothed Gaussian noise (neighbouring pixels correlated, like a photo);
    the layer is a random Conv2d(3 -> 8, k x k) in float64.
    """
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, size, size, generator=gen, dtype=torch.float64)
    blur = torch.ones(3, 1, 3, 3, dtype=torch.float64) / 9
    x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), blur, groups=3)
    weight = torch.randn(8, 3, kernel, kernel, generator=gen, dtype=torch.float64)
    bias = torch.randn(8, generator=gen, dtype=torch.float64)
    p = kernel // 2

    def conv_circular(img):
        return F.conv2d(F.pad(img, (p, p, p, p), mode="circular"), weight, bias)

    def conv_zero(img):
        return F.conv2d(img, weight, bias, padding=p)

    shifts = [(1, 0), (0, 1), (-1, 0), (0, -1), (3, -2), (5, 7)]
    circular, interior, border = 0.0, 0.0, 0.0
    for dy, dx in shifts:
        shifted = torch.roll(x, (dy, dx), dims=(2, 3))
        circular = max(circular, (conv_circular(shifted) - torch.roll(conv_circular(x), (dy, dx), (2, 3))).abs().max().item())
        diff = (conv_zero(shifted) - torch.roll(conv_zero(x), (dy, dx), (2, 3))).abs()
        m = p + max(abs(dy), abs(dx))  # rows/cols touched by padding or wrap-around
        interior = max(interior, diff[..., m:-m, m:-m].max().item())
        border = max(border, diff.max().item())

    # invariance to 1-pixel shifts, before and after 2x2 max-pooling (no ReLU, so that
    # outputs clamped at zero do not count as "unchanged"): the fraction of outputs that
    # keep their value, and the relative change of the whole map
    def shift_response(f):
        base, kept, change = f(x), [], []
        for dy, dx in shifts[:4]:
            out = f(torch.roll(x, (dy, dx), (2, 3)))
            kept.append(torch.isclose(out, base, rtol=0, atol=1e-12).double().mean().item())
            change.append(((out - base).norm() / base.norm()).item())
        return float(np.mean(kept)), float(np.mean(change))

    conv_kept, conv_change = shift_response(conv_circular)
    pool_kept, pool_change = shift_response(lambda img: F.max_pool2d(conv_circular(img), 2))
    return {
        "image": f"{size}x{size}x3 smoothed Gaussian noise", "conv": f"Conv2d(3->8, {kernel}x{kernel}), float64",
        "shifts": [list(s) for s in shifts],
        "circular_max_abs_diff": circular,
        "zero_padding_interior_max_abs_diff": interior,
        "zero_padding_border_max_abs_diff": border,
        "conv_unchanged_fraction": conv_kept,
        "pool_invariant_fraction": pool_kept,
        "conv_relative_change": conv_change,
        "pool_relative_change": pool_change,
    }


# ------------------------------------------------------------------------------- answer


def answer(input_shape: tuple[int, int, int] = STUDY_INPUT, stack: str | None = None, seed: int = 0) -> dict:
    """Everything `convattn theory` reports, as one JSON-ready dict."""
    cnn = analyse_stack(STUDY_INPUT, STUDY_CNN)
    mlp = analyse_stack(STUDY_INPUT, STUDY_MLP)
    pool = next(r for r in cnn["layers"] if r["kind"] == "pool")
    cnn["pool_output_shape"] = pool["output_shape"]
    cnn["flatten_features"] = math.prod(pool["output_shape"])
    result = {
        "cnn": cnn, "mlp": mlp,
        "ratio": round(mlp["total_params"] / cnn["total_params"], 2),
        "attention": attention_checks(seed),
        "equivariance": equivariance_checks(seed),
    }
    if stack is not None:
        result["stack"] = analyse_stack(input_shape, stack)
    return result


def _stack_table(stack: dict) -> str:
    h, w, c = stack["input"]
    lines = [f"Input {h}x{w}x{c}, stack `{stack['stack']}`:", "",
             "| layer | output shape | how | parameters | formula |", "|---|---|---|---:|---|"]
    for r in stack["layers"]:
        shape = "x".join(map(str, r["output_shape"]))
        lines.append(f"| `{r['layer']}` | {shape} | {r['shape_formula']} | {r['params']:,} | {r['formula']} |")
    lines += ["", f"Total: **{stack['total_params']:,}** parameters "
              f"(torch's count of the same stack: {stack['torch_total_params']:,})."]
    return "\n".join(lines)


def render_markdown(result: dict, stack_only: bool = False, level: int = 2) -> str:
    """The Markdown answer; `level` sets the heading depth so the report can embed it."""
    hx = "#" * level
    if stack_only:
        return _stack_table(result["stack"]) + "\n"
    cnn, mlp, att, eq = result["cnn"], result["mlp"], result["attention"], result["equivariance"]
    conv, pool, lin = cnn["layers"]
    ph, pw, pc = cnn["pool_output_shape"]
    worst_case = max(att["cases"], key=lambda c: c["rank"] - c["d"])
    att_rows = "\n".join(
        f"| {c['L']} | {c['n']} | {c['d']} | {c['rank']} | {c['softmax_max_abs_diff']:.1e} | "
        f"{c['B_condition_number']:.2f} | {c['invariance_max_abs_diff']:.1e} |" for c in att["cases"])
    return f"""{hx} Q1.1 Parameters of the CNN

{_stack_table(cnn)}

The convolution has {conv['params']:,} parameters: {conv['formula']} (8 kernels of 5x5x3, each with a bias).
Max-pooling 4x4 with stride 2 gives floor((24-4)/2)+1 = {ph}, so {ph}x{pw}x{pc} = **{cnn['flatten_features']:,}**
features reach the output layer, which has {lin['formula']} = {lin['params']:,} parameters.

{hx} Q1.2 The MLP instead

{_stack_table(mlp)}

The MLP has **{mlp['total_params']:,}** parameters, **{result['ratio']:.2f}x** the CNN's {cnn['total_params']:,}.
A convolution reuses the same small kernel at every position (weight sharing) and each output
sees only a 5x5 neighbourhood (local connectivity), so its cost does not grow with the image
size; a dense hidden layer pays one weight per input pixel per unit.

{hx} Q1.3 Self-attention: P = softmax(X A X^T) with rank(A) <= d

With Q = X W_Q and K = X W_K, Q K^T / sqrt(d) = X (W_Q W_K^T / sqrt(d)) X^T = X A X^T, so each
head's probabilities are P = softmax(X A X^T). A is n x n but factors through d dimensions, so
rank(A) <= rank(W_Q) <= d. If W_Q' = W_Q B and W_K' = W_K B^-T for an invertible B, then
W_Q' W_K'^T = W_Q B B^-1 W_K^T = W_Q W_K^T: both heads have the same A and the same P.
Checked on random float64 instances (rank by SVD, tolerance {att['rank_tolerance']}):

| L | n | d | rank(A) | max \\|softmax(QK^T/sqrt d) - softmax(XAX^T)\\| | cond(B) | max \\|P(head 2) - P(head 1)\\| |
|---:|---:|---:|---:|---:|---:|---:|
{att_rows}

Every rank is at most d ({'true' if att['all_rank_le_d'] else 'FALSE'}; the largest rank - d is {worst_case['rank'] - worst_case['d']});
the two ways of computing P agree to {att['softmax_max_abs_diff']:.1e} and the two heads to
{att['invariance_max_abs_diff']:.1e}: float64 round-off.

{hx} Q2.1 Translation equivariance and pooling

A random {eq['conv']} on a {eq['image']}, shifted by {', '.join(f'({a},{b})' for a, b in eq['shifts'])} pixels:

- circular padding: max |conv(shift(x)) - shift(conv(x))| = **{eq['circular_max_abs_diff']:.1e}**: equivariance is exact;
- zero padding: {eq['zero_padding_interior_max_abs_diff']:.1e} away from the border, but up to
  {eq['zero_padding_border_max_abs_diff']:.2f} at the border, where padding and wrap-around differ;
- invariance to a 1-pixel shift: {100 * eq['conv_unchanged_fraction']:.1f}% of the conv outputs keep their value
  (relative change of the map {eq['conv_relative_change']:.2f}), against **{100 * eq['pool_invariant_fraction']:.1f}%**
  after 2x2 max-pooling (relative change {eq['pool_relative_change']:.2f}).

Convolution is equivariant to translation, since the same kernel is applied at every position; a
feature detected in one place is detected, shifted, in another. Max-pooling then makes the
output approximately invariant to small shifts, since the maximum of a window often stays in it.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "theory", help="Q1 and Q2.1: parameter counts, self-attention algebra, equivariance",
        description="Answer the study's theory questions by computation. With --stack, "
                    "derive the shapes and parameters of any conv/pool/linear stack.")
    parser.add_argument("--input", default="28x28x3", help="input shape HxWxC (default: 28x28x3)")
    parser.add_argument("--stack", default=None,
                        help='layers "conv:OUT:K[:STRIDE[:PAD]] pool:K[:STRIDE] linear:N" '
                             f'(default: the study\'s CNN "{STUDY_CNN}" and MLP "{STUDY_MLP}")')
    parser.add_argument("--seed", type=int, default=0, help="seed of the random instances (default: 0)")
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    parser.add_argument("--out", default=None,
                        help="also write theory.md and theory.json to this folder")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    result = answer(parse_input(args.input), args.stack, args.seed)
    markdown = render_markdown(result, stack_only=args.stack is not None)
    if args.out:
        io.write_text(Path(args.out) / "theory.md", markdown)
        io.write_json(Path(args.out) / "theory.json", result)
    print(json.dumps(result, indent=2) if args.json else markdown, end="\n" if args.json else "")
    return 0
