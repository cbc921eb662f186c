"""A learned inpainter for the pipeline: an ONNX export of LaMa (Suvorov et al. 2022), the paper's choice.

`LamaOnnx` follows monowarp's inpainter contract, ``inpaint(image, hole) -> image`` on ``uint8`` arrays
(see `monowarp.objects`), so it plugs into `monowarp.rescale_object` and into ``lse-imagenet data`` with
``--data.inpainter lama --data.inpainter_weights FILE.onnx``. The weights are yours to provide (e.g. the
``lama_fp32.onnx`` export published on the Hugging Face hub as ``Carve/LaMa-ONNX``); nothing is downloaded.

The model takes an image `(1, 3, S, S)` with values in ``[0, 1]`` and a mask `(1, 1, S, S)` (1 in the hole)
and returns the filled image, in ``[0, 1]`` or ``[0, 255]`` (both are recognised). A model with a fixed
input size gets the picture resized to it and the result resized back; a model with free sizes gets the
picture padded to a multiple of 8.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["LamaOnnx"]


class LamaOnnx:
    """LaMa (or any inpainter with the same inputs) exported to ONNX, run by onnxruntime.

    Args:
        model: the ``.onnx`` file.
        providers: onnxruntime execution providers (default: CPU).
        threads: onnxruntime intra-op threads.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the model does not take two inputs (an image and a mask).
    """

    def __init__(
        self, model: str | os.PathLike, *, providers: list[str] | None = None, threads: int = 1
    ) -> None:
        import onnxruntime as ort

        path = Path(model).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no inpainting model at {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 2:
            raise ValueError(f"{path} takes {len(inputs)} inputs; an inpainter takes an image and a mask")
        masks = [i for i in inputs if "mask" in i.name.lower()]
        mask_input = masks[0] if masks else inputs[1]
        image_input = inputs[0] if inputs[0] is not mask_input else inputs[1]
        self.image_name, self.mask_name = image_input.name, mask_input.name
        h, w = image_input.shape[-2:]
        self.size = (int(h), int(w)) if isinstance(h, int) and isinstance(w, int) else None

    def __call__(self, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        import cv2

        gray = image.ndim == 2
        rgb = np.repeat(image[..., None], 3, axis=2) if gray else image[..., :3]
        h, w = rgb.shape[:2]
        m = (hole > 0).astype(np.uint8)
        if self.size is not None:
            sh, sw = self.size
            x = cv2.resize(
                rgb, (sw, sh), interpolation=cv2.INTER_AREA if sh * sw < h * w else cv2.INTER_CUBIC
            )
            mm = cv2.resize(m, (sw, sh), interpolation=cv2.INTER_NEAREST)
        else:
            ph, pw = -h % 8, -w % 8
            x = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="reflect")
            mm = np.pad(m, ((0, ph), (0, pw)), mode="constant")
        feed = {
            self.image_name: (x.astype(np.float32) / 255.0).transpose(2, 0, 1)[None],
            self.mask_name: mm.astype(np.float32)[None, None],
        }
        out = np.asarray(self.session.run(None, feed)[0])[0].transpose(1, 2, 0).astype(np.float32)
        if float(out.max()) <= 1.5:  # a model that returns [0, 1]
            out = out * 255.0
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        if self.size is not None:
            out = cv2.resize(out, (w, h), interpolation=cv2.INTER_CUBIC)
        else:
            out = out[:h, :w]
        out = np.ascontiguousarray(out)
        return out[..., 0] if gray else out
