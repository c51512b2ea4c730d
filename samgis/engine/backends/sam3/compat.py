"""Running Meta's `sam3` package (0.1.4) on a machine without CUDA, without editing it.

What in the package assumes CUDA (sam3 0.1.4 = facebookresearch/sam3 @ 99d02f2), on the image path we use:

- at build time, `PositionEmbeddingSine.__init__` precomputes its cache with `torch.zeros(..., device="cuda")`
  (model/position_encoding.py) and `TransformerDecoder.__init__` its box-RPB coordinates with
  `_get_coords(..., device="cuda")` (model/decoder.py);
- at run time, `SequenceGeometryEncoder._encode_boxes` (model/geometry_encoders.py, every exemplar box)
  calls `Tensor.pin_memory()` on a fresh CPU tensor, which raises on a machine without a CUDA driver;
- some modules keep tensors in plain attributes, not buffers (the caches above, `RoPEAttention.freqs_cis`),
  which `Module.to(device)` leaves where they were made.

The fix is scoped, not a patch of the installed files: `cpu_only()` is a thread-local `TorchFunctionMode`
(torch's own interception of every torch call, active only inside the `with` block and only on the thread
that entered it) that turns `device="cuda"` arguments into the CPU and makes `pin_memory()` return its
tensor unchanged. We enter it while building the model (always on the CPU) and around the concept decoder
when no CUDA is present. `to_device` then moves the model and those plain-attribute tensors together.
"""

from __future__ import annotations

import contextlib
import math
import weakref

import torch
from torch.overrides import TorchFunctionMode


def _is_cuda(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return isinstance(device, str) and device.split(":")[0] == "cuda"


class CpuOnly(TorchFunctionMode):
    """Inside this mode (this thread only): a `device=` naming CUDA means the CPU, and `Tensor.pin_memory()`
    returns its tensor (pinning only speeds up host→GPU copies; there is no GPU)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.pin_memory:
            return args[0]
        if _is_cuda(kwargs.get("device")):
            kwargs = {**kwargs, "device": torch.device("cpu")}
        return func(*args, **kwargs)


def cpu_only(active: bool = True):
    """`CpuOnly()` when `active`, else a no-op context (on a CUDA machine the package runs as written)."""
    return CpuOnly() if active else contextlib.nullcontext()


def needs_cpu_shim(device: torch.device) -> bool:
    """Whether calls into the package on `device` need `cpu_only`: a CPU model on a machine without CUDA."""
    return device.type == "cpu" and not torch.cuda.is_available()


def _moved(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_moved(v, device) for v in value)
    if isinstance(value, list):
        return [_moved(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _moved(v, device) for k, v in value.items()}
    return value


def _holds_tensor(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return any(_holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    return False


def to_device(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model.to(device)`, plus every tensor a submodule keeps in a plain attribute (a tensor, or a tuple /
    list / dict of them: position-encoding caches, RoPE frequencies, box-RPB coordinates). Returns `model`."""
    model = model.to(device)
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if name.startswith("_") or not _holds_tensor(value):  # parameters, buffers, submodules live in _*
                continue
            setattr(module, name, _moved(value, device))
    return model


def plain_tensor_devices(model: torch.nn.Module) -> set[str]:
    """The device types of the tensors kept in plain attributes (what `to_device` moves); for tests."""
    found: set[str] = set()

    def walk(v):
        if isinstance(v, torch.Tensor):
            found.add(v.device.type)
        elif isinstance(v, (tuple, list)):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    for module in model.modules():
        for name, value in vars(module).items():
            if not name.startswith("_"):
                walk(value)
    return found


BANK_SIZE = 1_000_003  # a prime: rows of a weight matrix never line up with the bank's period


class FastInit(TorchFunctionMode):
    """Inside this mode (this thread only), `Tensor.uniform_` / `Tensor.normal_` — what `torch.nn.init` and
    timm's `trunc_normal_` draw with — fill from a seeded bank of BANK_SIZE draws instead of the generator.

    `mode` "fast": same distributions and scales (a uniform or normal bank, shifted per call), ~20× faster on
    a CPU than drawing 860M numbers (the package's own init takes ~1 min here); for random-weight tests and
    benchmarks. "none": leave the memory as allocated, for a model whose every tensor a checkpoint overwrites
    (`load_state` checks that): every draw and every `torch.nn.init` call that reaches the mode is skipped
    (`zeros_` and `ones_` do not reach it: biases and norms, small), and so are the in-place steps that follow
    a skipped draw on the same tensor (timm's `trunc_normal_`: `uniform_`, then `erfinv_`, `mul_`, `add_`,
    `clamp_`), so the builder writes (and the process holds) almost none of the weights' memory until the
    checkpoint's tensors replace them (0.5 GB of 3.4 GB for SAM 3, was 2.3 GB)."""

    AFTER_DRAW = frozenset({"erfinv_", "mul_", "add_", "sub_", "div_", "clamp_"})

    def __init__(self, mode: str, seed: int = 0):
        super().__init__()
        if mode not in ("fast", "none"):
            raise ValueError(f"init mode must be fast or none, not {mode!r}")
        self.mode = mode
        if mode == "fast":
            g = torch.Generator().manual_seed(seed)
            self._banks = {"uniform": torch.rand(BANK_SIZE, generator=g).repeat(2),
                           "normal": torch.randn(BANK_SIZE, generator=g).repeat(2)}
        self._offset = 0
        self._skipped: dict[int, weakref.ref] = {}  # "none": tensors whose draw was skipped, by id

    def _fill(self, t: torch.Tensor, kind: str, scale: float, shift: float = 0.0) -> torch.Tensor:
        """Write `bank * scale + shift` into `t`, the bank read from a per-call offset and wrapping around, as
        slices of the doubled bank (views: no roll, no repeat), multiplied straight into `t`."""
        if self.mode != "fast" or not t.numel():
            if self.mode == "none":
                self._skipped[id(t)] = weakref.ref(t)
            return t
        bank = self._banks[kind]  # (2 * BANK_SIZE,): the bank twice, so any BANK_SIZE-long window is a view
        n, o = t.numel(), self._offset % BANK_SIZE
        self._offset += 7919 * (1 + n % 104_729)  # a different shift for every tensor
        with torch.no_grad():
            flat = t.view(-1) if t.is_contiguous() and t.dtype == bank.dtype else torch.empty(n, dtype=bank.dtype)
            for start in range(0, n, BANK_SIZE):
                m = min(BANK_SIZE, n - start)
                torch.mul(bank[o:o + m], scale, out=flat[start:start + m])
            if shift:
                flat.add_(shift)
            if flat.data_ptr() != t.data_ptr():
                t.copy_(flat.view(t.shape))
        return t

    def _init_fn(self, func, t: torch.Tensor, args, kw):
        """`torch.nn.init` functions (they dispatch here before drawing): the same distributions from the bank.
        None for the ones not handled here (they then run as written)."""
        init = torch.nn.init
        a = lambda i, name, default: kw.get(name, args[i] if len(args) > i else default)  # noqa: E731
        if func is init.uniform_:
            lo, hi = a(0, "a", 0.0), a(1, "b", 1.0)
            return self._fill(t, "uniform", hi - lo, lo)
        if func is init.normal_:
            return self._fill(t, "normal", a(1, "std", 1.0), a(0, "mean", 0.0))
        if func is init.trunc_normal_:
            mean, std, lo, hi = a(0, "mean", 0.0), a(1, "std", 1.0), a(2, "a", -2.0), a(3, "b", 2.0)
            self._fill(t, "normal", std, mean)
            return t.clamp_(lo, hi) if self.mode == "fast" else t
        if func in (init.kaiming_uniform_, init.kaiming_normal_):
            fan_in, fan_out = init._calculate_fan_in_and_fan_out(t)
            fan = fan_in if a(1, "mode", "fan_in") == "fan_in" else fan_out
            std = init.calculate_gain(a(2, "nonlinearity", "leaky_relu"), a(0, "a", 0)) / math.sqrt(fan)
            if func is init.kaiming_uniform_:
                return self._fill(t, "uniform", 2 * math.sqrt(3.0) * std, -math.sqrt(3.0) * std)
            return self._fill(t, "normal", std)
        if func in (init.xavier_uniform_, init.xavier_normal_):
            fan_in, fan_out = init._calculate_fan_in_and_fan_out(t)
            std = a(0, "gain", 1.0) * math.sqrt(2.0 / (fan_in + fan_out))
            if func is init.xavier_uniform_:
                return self._fill(t, "uniform", 2 * math.sqrt(3.0) * std, -math.sqrt(3.0) * std)
            return self._fill(t, "normal", std)
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.mode == "none" and args and getattr(func, "__name__", None) in self.AFTER_DRAW:
            ref = self._skipped.get(id(args[0]))
            if ref is not None and ref() is args[0]:
                return args[0]
        if getattr(func, "__module__", None) == "torch.nn.init":  # dispatched with keywords: tensor=, a=, …
            t = args[0] if args else kwargs.get("tensor")
            if isinstance(t, torch.Tensor):
                if self.mode == "none":
                    return t
                done = self._init_fn(func, t, args[1:], {k: v for k, v in kwargs.items() if k != "tensor"})
                if done is not None:
                    return done
        if func is torch.Tensor.uniform_:  # timm's trunc_normal_ and others draw with the method directly
            t, rest = args[0], args[1:]
            lo, hi = kwargs.get("from", rest[0] if rest else 0.0), kwargs.get("to", rest[1] if len(rest) > 1 else 1.0)
            return self._fill(t, "uniform", hi - lo, lo)
        if func is torch.Tensor.normal_:
            t, rest = args[0], args[1:]
            mean, std = kwargs.get("mean", rest[0] if rest else 0.0), kwargs.get("std", rest[1] if len(rest) > 1 else 1.0)
            return self._fill(t, "normal", std, mean)
        return func(*args, **kwargs)


def fast_init(mode: str, seed: int = 0):
    """`FastInit(mode, seed)` for "fast" / "none", a no-op context for "random" (the package's own init)."""
    return contextlib.nullcontext() if mode == "random" else FastInit(mode, seed)
