"""Elementwise activations: what the graph recognises, how torch computes them, and their C in every width.

An activation is a short spec string ("relu", "silu", "leaky_relu:0.01", "hardtanh:0:6"): hashable, printable in
reports and stable inside generated C. Every kernel epilogue applies one through :func:`c_vector` /
:func:`c_scalar`; the C helpers come once per unit from :data:`C_HELPERS`. Vector exp, erf and tanh (and so
sigmoid and SiLU) are polynomials on GCC/Clang vector extensions (no intrinsics, so every target builds them);
scalars use libm.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import fx, nn

NONE = "none"

_MODULES: dict[type, str] = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu", nn.Hardswish: "hardswish",
                             nn.Sigmoid: "sigmoid", nn.Hardsigmoid: "hardsigmoid", nn.Tanh: "tanh"}
_FUNCTIONS: dict = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu6: "relu6", F.silu: "silu",
                    F.hardswish: "hardswish", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
                    F.hardsigmoid: "hardsigmoid", torch.tanh: "tanh", F.tanh: "tanh"}
_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid", "tanh": "tanh"}


def canon(act: str | bool | None) -> str:
    """Old callers pass a ReLU flag: True is "relu", False / None no activation."""
    if act is True:
        return "relu"
    return NONE if act in (False, None, "") else str(act)


def _spec(name: str, *args: float) -> str:
    return ":".join([name, *(repr(float(a)) for a in args)])


def _hardtanh(lo: float, hi: float) -> str:
    return "relu6" if (lo, hi) == (0.0, 6.0) else _spec("hardtanh", lo, hi)


def activation_of(node: fx.Node, modules: dict) -> str | None:
    """The spec of the activation ``node`` computes on its single tensor input, or None when it is not one."""
    if node.op == "call_module":
        m = modules.get(node.target)
        if type(m) in _MODULES:
            return _MODULES[type(m)]
        if isinstance(m, nn.GELU):
            return "gelu_tanh" if m.approximate == "tanh" else "gelu"
        if isinstance(m, nn.LeakyReLU):
            return _spec("leaky_relu", m.negative_slope)
        if isinstance(m, nn.Hardtanh):
            return _hardtanh(m.min_val, m.max_val)
        return None
    kw = dict(node.kwargs)
    kw.pop("inplace", None)
    extra = node.args[1:]
    if node.op == "call_function" and node.target in _FUNCTIONS and not kw and \
            all(isinstance(a, bool) for a in extra):  # relu(x, inplace) forms
        return _FUNCTIONS[node.target]
    if node.op == "call_method" and node.target in _METHODS and len(node.args) == 1 and not kw:
        return _METHODS[node.target]
    if node.op == "call_function" and node.target is F.gelu and len(node.args) == 1:
        return "gelu_tanh" if kw.get("approximate", "none") == "tanh" else ("gelu" if set(kw) <= {"approximate"}
                                                                            else None)
    if node.op == "call_function" and node.target is F.leaky_relu:
        slope = node.args[1] if len(node.args) > 1 else kw.get("negative_slope", 0.01)
        return _spec("leaky_relu", slope) if isinstance(slope, int | float) else None
    if node.op == "call_function" and node.target is F.hardtanh:
        lo = node.args[1] if len(node.args) > 1 else kw.get("min_val", -1.0)
        hi = node.args[2] if len(node.args) > 2 else kw.get("max_val", 1.0)
        return _hardtanh(lo, hi) if all(isinstance(v, int | float) for v in (lo, hi)) else None
    if node.op == "call_function" and node.target in (torch.clamp, torch.clip) and len(node.args) >= 1:
        lo = node.args[1] if len(node.args) > 1 else kw.get("min")
        hi = node.args[2] if len(node.args) > 2 else kw.get("max")
        if isinstance(lo, int | float) and isinstance(hi, int | float):
            return _hardtanh(lo, hi)
    return None


def _parse(act: str) -> tuple[str, list[float]]:
    name, *args = canon(act).split(":")
    return name, [float(a) for a in args]


def apply_torch(act: str, y: torch.Tensor) -> torch.Tensor:
    """The activation in torch (the fallback path and the reference)."""
    name, a = _parse(act)
    fns = {"none": lambda t: t, "relu": torch.relu, "relu6": F.relu6, "silu": F.silu, "hardswish": F.hardswish,
           "sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid, "tanh": torch.tanh, "gelu": F.gelu,
           "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
           "leaky_relu": lambda t: F.leaky_relu(t, a[0]), "hardtanh": lambda t: F.hardtanh(t, a[0], a[1])}
    if name not in fns:
        raise ValueError(f"unknown activation {act!r}")
    return fns[name](y)


def keeps_zero(act: str) -> bool:
    """f(0) == 0: applied to a whole padded buffer, the zero borders stay zero (sigmoid's 0.5 would not)."""
    return float(apply_torch(act, torch.zeros(1))) == 0.0


def _c_float(x: float) -> str:
    return f"{float(x)!r}f" if math.isfinite(x) else ("INFINITY" if x > 0 else "-INFINITY")


def c_vector(act: str, e: str, half: bool = False) -> str:
    """C expression applying ``act`` to the vector expression ``e`` (a half vector when ``half``)."""
    name, a = _parse(act)
    if name == NONE:
        return f"({e})"
    prefix = "acth_" if half else "act_"
    return f"{prefix}{name}({e}{''.join(', ' + _c_float(v) for v in a)})"


def c_scalar(act: str, v: str = "v") -> str:
    """C statement applying ``act`` to the float variable ``v`` in place ("" for none)."""
    name, a = _parse(act)
    if name == NONE:
        return ""
    return f" {v} = acts_{name}({v}{''.join(', ' + _c_float(x) for x in a)});"


_VECTOR = r"""
#define TSR_ACTS(V, VI, P) \
static inline V P##sel(VI m, V a, V b) { return (V)(((VI)a & m) | ((VI)b & ~m)); } \
static inline V P##relu(V v) { V z = {0}; return (V)((VI)v & (VI)(v > z)); } \
static inline V P##hardtanh(V v, float lo, float hi) { V l = (V){0} + lo, h = (V){0} + hi; \
    v = P##sel((VI)(v > l), v, l); return P##sel((VI)(v < h), v, h); } \
static inline V P##relu6(V v) { return P##hardtanh(v, 0.f, 6.f); } \
static inline V P##leaky_relu(V v, float a) { V z = {0}; return P##sel((VI)(v > z), v, v * a); } \
static inline V P##hardsigmoid(V v) { return P##hardtanh(v + 3.f, 0.f, 6.f) * (1.f / 6.f); } \
static inline V P##hardswish(V v) { return v * P##hardsigmoid(v); } \
static inline V P##exp(V x) { /* Cephes expf: 2^n * p(r), |r| <= ln2/2 */ \
    V z = {0}, one = z + 1.f; \
    x = P##hardtanh(x, -87.3365f, 88.3762626647949f); \
    V fx = x * 1.44269504088896341f + 0.5f; \
    V t = __builtin_convertvector(__builtin_convertvector(fx, VI), V); \
    t = t - P##sel((VI)(t > fx), one, z); \
    x = x - t * 0.693359375f + t * 2.12194440e-4f; \
    V y = z + 1.9875691500E-4f; \
    y = y * x + 1.3981999507E-3f; y = y * x + 8.3334519073E-3f; y = y * x + 4.1665795894E-2f; \
    y = y * x + 1.6666665459E-1f; y = y * x + 5.0000001201E-1f; \
    y = y * x * x + x + 1.f; \
    VI e = (__builtin_convertvector(t, VI) + 127) << 23; \
    return y * (V)e; } \
static inline V P##tanh(V v) { /* a rational fit (Eigen's fast tanh): |error| < 4e-7, one division */ \
    V x = P##hardtanh(v, -7.90531110763549805f, 7.90531110763549805f), x2 = x * x; \
    V p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f; p = p * x2 + -8.60467152213735e-11f; \
    p = p * x2 + 5.12229709037114e-08f; p = p * x2 + 1.48572235717979e-05f; p = p * x2 + 6.37261928875436e-04f; \
    p = (p * x2 + 4.89352455891786e-03f) * x; \
    V q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f; q = q * x2 + 2.26843463243900e-03f; \
    q = q * x2 + 4.89352518554385e-03f; \
    return p / q; } \
static inline V P##sigmoid(V v) { return 0.5f + 0.5f * P##tanh(0.5f * v); } \
static inline V P##silu(V v) { return v * P##sigmoid(v); } \
static inline V P##erf(V x) { /* Abramowitz-Stegun 7.1.26, |error| < 1.5e-7 */ \
    V z = {0}; VI neg = (VI)(x < z); V ax = P##sel(neg, -x, x); \
    V t = 1.f / (1.f + 0.3275911f * ax); \
    V p = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f)))); \
    V r = 1.f - p * P##exp(-ax * ax); return P##sel(neg, -r, r); } \
static inline V P##gelu(V v) { return 0.5f * v * (1.f + P##erf(v * 0.70710678118654752f)); } \
static inline V P##gelu_tanh(V v) { \
    return 0.5f * v * (1.f + P##tanh(0.7978845608028654f * (v + 0.044715f * v * v * v))); }
TSR_ACTS(vf, vi, act_)
TSR_ACTS(vh, vhi, acth_)
"""

_SCALAR = r"""
static inline float acts_relu(float v) { return v > 0.f ? v : 0.f; }
static inline float acts_hardtanh(float v, float lo, float hi) { v = v > lo ? v : lo; return v < hi ? v : hi; }
static inline float acts_relu6(float v) { return acts_hardtanh(v, 0.f, 6.f); }
static inline float acts_leaky_relu(float v, float a) { return v > 0.f ? v : v * a; }
static inline float acts_hardsigmoid(float v) { return acts_hardtanh(v + 3.f, 0.f, 6.f) * (1.f / 6.f); }
static inline float acts_hardswish(float v) { return v * acts_hardsigmoid(v); }
static inline float acts_sigmoid(float v) { return 1.f / (1.f + expf(-v)); }
static inline float acts_silu(float v) { return v * acts_sigmoid(v); }
static inline float acts_tanh(float v) { return tanhf(v); }
static inline float acts_gelu(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }
static inline float acts_gelu_tanh(float v) {
    return 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v))); }
"""

C_HELPERS = "#include <math.h>\n" + _VECTOR + _SCALAR
