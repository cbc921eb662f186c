r"""The probe pass of `adapt`: what each chosen layer reads, and whether its layout matches the image.

`adapt` warps a layer's feature as an image-like map (eqs. 21-22): it lays the feature on an `H x W` grid
(`layouts.to_nchw`) and assumes that grid point $(i, j)$ sees the image around $(i / H, j / W)$. Reading
the layout from the model's attributes (`num_prefix_tokens`, `patch_embed`, `output_fmt`) cannot tell
whether that holds: a model may keep its tokens in another order (Hiera unrolls them by mask units), keep
channels-last features without saying so (SAM's ViT), or feed its blocks something that is not one
feature tensor (PiT, CrossViT). Warping such a feature would fail deep inside the forward pass or,
worse, silently permute it.

`probe_layers` therefore runs two passes before any hook is installed:

1. a structural pass (a zero image, `no_grad`, eval mode): each chosen layer must receive one feature tensor
   whose layout is known, and must run in the model's forward; it gives the channels of each feature;
2. a spatial pass (fixed noise images, eval mode, stopped after the last chosen layer): for 3 x 3 grid
   points $(i, j)$ of each feature laid on its grid, the centroid of $|\partial F_{ij} / \partial I|$ over
   the image (the point's receptive field) is computed; points in one row must lie side by side in the
   image (from left to right, their centroids move along x at least as far as along y), points in one
   column above each other, up to a margin of a tenth of the image side. This does not depend on how far
   the receptive fields spread (deep layers see the whole image and leave every centroid near the
   centre, which passes), and a permuted or transposed layout fails it.

Any failure raises `UnsupportedLayoutError` (a `ValueError`) naming the model, the layer and what is
unsupported.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .layouts import Layout, ModelLayout, to_nchw

__all__ = ["UnsupportedLayoutError", "default_input_size", "probe_layers"]

_SHAPES = "(B, C, H, W), (B, H, W, C) or (B, P + H*W, C)"
_FRACTIONS = (1 / 6, 1 / 2, 5 / 6)  # where the grid points are probed, along each axis
_MARGIN = 0.1  # how much further (in image sides) a centroid may move across than along the grid axis


class UnsupportedLayoutError(ValueError):
    """A chosen layer's feature cannot be laid on an `H x W` grid consistently with the image."""


def default_input_size(model: nn.Module) -> tuple[int, int, int]:
    """`(C, H, W)` of the probe image: the first convolution's channels, the patch embedding's size, else
    `pretrained_cfg["input_size"]`, else 224 x 224."""
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = first_conv.in_channels if first_conv is not None else 3
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is None:
        img_size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-2:]
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    return channels, int(height), int(width)


def probe_layers(
    model: nn.Module,
    names: list[str],
    input_size: tuple[int, int, int],
    *,
    check_outputs: bool = False,
    check_spatial: bool = True,
) -> dict[str, int]:
    """Channels of the input feature of each named layer, after checking that adapt() can warp it.

    Args:
        model: the backbone (its training flags are restored afterwards; no parameter changes).
        names: module names of the chosen layers.
        input_size: `(C, H, W)` of the probe image.
        check_outputs: also check each layer's output (the equivariant form warps it back by $S$).
        check_spatial: run the spatial pass (see the module docstring); it needs gradients, so it is
            skipped under `torch.inference_mode()` (it runs under `torch.no_grad()`).

    Returns:
        `{name: channels}`.

    Raises:
        UnsupportedLayoutError: a layer does not receive one feature tensor, does not run in the forward
            pass, has a feature of unknown layout, or one whose grid does not follow the image.
    """
    if not names:
        return {}
    model_name = type(model).__name__
    layout = ModelLayout.from_model(model)
    image_size = (int(input_size[1]), int(input_size[2]))
    channels: dict[str, int] = {}

    def on_input(name: str, feature: Any) -> None:
        if not isinstance(feature, torch.Tensor):
            raise UnsupportedLayoutError(
                f"adapt() cannot adapt layer {name!r} of {model_name}: its first positional input is "
                f"{type(feature).__name__}, not one feature tensor {_SHAPES}"
            )
        channels[name] = _as_map(model_name, name, "input", feature, layout, image_size)[0].shape[1]

    def on_output(name: str, output: Any) -> None:
        if check_outputs:
            if not isinstance(output, torch.Tensor):
                raise UnsupportedLayoutError(
                    f"adapt() cannot adapt layer {name!r} of {model_name} in the equivariant form: it "
                    f"returns {type(output).__name__}, not one feature tensor {_SHAPES}"
                )
            _as_map(model_name, name, "output", output, layout, image_size)

    with _Probe(model, names, on_input, on_output) as probe, torch.no_grad():
        probe.run(torch.zeros(1, *input_size, **probe.kwargs))
    if check_spatial and not torch.is_inference_mode_enabled():  # no gradients under inference_mode
        _check_spatial(model, names, input_size, layout, check_outputs)
    return channels


# ------------------------------------------------------------------------------------------------- private
class _ProbeDone(Exception):
    """Stops a probe forward once every chosen layer has run."""


class _Probe:
    """Hooks on the chosen layers for one probe forward in eval mode; restores the model on exit."""

    def __init__(
        self,
        model: nn.Module,
        names: list[str],
        on_input: Callable[[str, Any], None],
        on_output: Callable[[str, Any], None],
    ) -> None:
        self.model, self.names = model, names
        self.finished: set[str] = set()
        self.handles: list[Any] = []
        reference = next(iter(model.parameters()), None)
        self.kwargs = {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
        for name in names:
            module = model.get_submodule(name)
            self.handles.append(module.register_forward_pre_hook(self._before(name, on_input)))
            self.handles.append(module.register_forward_hook(self._after(name, on_output)))

    def _before(self, name: str, fn: Callable[[str, Any], None]) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            fn(name, args[0] if args else None)

        return hook

    def _after(self, name: str, fn: Callable[[str, Any], None]) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            fn(name, output)
            self.finished.add(name)
            if len(self.finished) == len(self.names):
                raise _ProbeDone

        return hook

    def __enter__(self) -> _Probe:
        self.training = {m: m.training for m in self.model.modules()}
        self.model.eval()
        return self

    def run(self, image: torch.Tensor) -> None:
        try:
            self.model(image)
        except _ProbeDone:
            pass
        missing = [n for n in self.names if n not in self.finished]
        if missing:
            raise UnsupportedLayoutError(
                f"adapt() cannot adapt layers {missing} of {type(self.model).__name__}: they did not run in "
                "a forward pass of the model (the model calls them in another way, or not at all)"
            )

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        for module, mode in self.training.items():
            module.training = mode


def _as_map(
    model_name: str,
    name: str,
    what: str,
    feature: torch.Tensor,
    layout: ModelLayout,
    image_size: tuple[int, int],
) -> tuple[torch.Tensor, Layout]:
    try:
        found = layout.detect(feature, image_size)
    except (TypeError, ValueError) as err:
        raise UnsupportedLayoutError(
            f"adapt() cannot adapt layer {name!r} of {model_name}: its {what} has no layout it can lay on an "
            f"H x W grid: {err}"
        ) from None
    return to_nchw(feature, found)[0], found


def _check_spatial(
    model: nn.Module,
    names: list[str],
    input_size: tuple[int, int, int],
    layout: ModelLayout,
    check_outputs: bool,
) -> None:
    """The spatial pass: receptive-field centroids of four grid points per feature must follow the image."""
    image_size = (int(input_size[1]), int(input_size[2]))
    maps: list[tuple[str, str, torch.Tensor]] = []

    def on_input(name: str, feature: Any) -> None:
        maps.append(
            (name, "input", _as_map(type(model).__name__, name, "input", feature, layout, image_size)[0])
        )

    def on_output(name: str, output: Any) -> None:
        if check_outputs:
            fmap = _as_map(type(model).__name__, name, "output", output, layout, image_size)[0]
            maps.append((name, "output", fmap))

    with _Probe(model, names, on_input, on_output) as probe, torch.enable_grad():
        generator = torch.Generator().manual_seed(0)
        noise = torch.rand(len(_FRACTIONS) ** 2, *input_size, generator=generator).to(**probe.kwargs)
        image = noise.requires_grad_(True)
        probe.run(image)
        for name, what, fmap in maps:
            problem = _grid_problem(fmap, image)
            if problem is not None:
                raise UnsupportedLayoutError(
                    f"adapt() cannot adapt layer {name!r} of {type(model).__name__}: its {what} feature, "
                    f"laid on a {fmap.shape[2]}x{fmap.shape[3]} grid, does not follow the image ({problem}); "
                    "tokens not in raster order, undeclared channels-last features or a grid of another "
                    "shape are not supported"
                )


def _grid_problem(fmap: torch.Tensor, image: torch.Tensor) -> str | None:
    """None if the grid of `fmap` `(9, C, h, w)` follows `image` `(9, C', H, W)`, else what is wrong."""
    h, w = fmap.shape[2], fmap.shape[3]
    if (h < 2 and w < 2) or not fmap.requires_grad:
        return None  # one grid point, or a feature that does not depend on the image: nothing to check
    rows = sorted({round(f * (h - 1)) for f in _FRACTIONS})
    cols = sorted({round(f * (w - 1)) for f in _FRACTIONS})
    points = [(i, j) for i in rows for j in cols]
    direction = torch.randn(fmap.shape[1], generator=torch.Generator().manual_seed(1)).to(fmap)
    # sample b of the batch probes point b: one backward gives every point's receptive field
    picked = torch.stack([fmap[b, :, i, j] for b, (i, j) in enumerate(points)])
    (grad,) = torch.autograd.grad((picked * direction).sum(), image, retain_graph=True, allow_unused=True)
    if grad is None:
        return None
    weight = grad[: len(points)].abs().sum(1)  # (points, H, W)
    total = weight.flatten(1).sum(1)
    if not bool((total > 0).all()) or not bool(torch.isfinite(total).all()):
        return None
    ys = torch.linspace(0, 1, weight.shape[1], device=weight.device, dtype=weight.dtype)
    xs = torch.linspace(0, 1, weight.shape[2], device=weight.device, dtype=weight.dtype)
    cy = (weight.sum(2) * ys).sum(1) / total
    cx = (weight.sum(1) * xs).sum(1) / total
    index = {p: k for k, p in enumerate(points)}
    pairs = [("x", index[(i, a)], index[(i, b)]) for i in rows for a, b in itertools.pairwise(cols)]
    pairs += [("y", index[(a, j)], index[(b, j)]) for j in cols for a, b in itertools.pairwise(rows)]
    for axis, a, b in pairs:
        along, across = (cx, cy) if axis == "x" else (cy, cx)
        step, drift = float(along[b] - along[a]), abs(float(across[b] - across[a]))
        # deep layers see the whole image and leave all centroids near the centre: small shifts are noise
        if drift - step > _MARGIN:
            (ia, ja), (ib, jb) = points[a], points[b]
            return (
                f"grid points ({ia}, {ja}) and ({ib}, {jb}) see the image around (x, y) = "
                f"({float(cx[a]):.2f}, {float(cy[a]):.2f}) and ({float(cx[b]):.2f}, {float(cy[b]):.2f})"
            )
    return None
