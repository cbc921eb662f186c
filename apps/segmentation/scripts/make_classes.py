"""Write ``lse_segmentation/classes.json``: the 100 object classes of the segmentation data set.

Every class is one mesh that ships in ``pybullet_data`` (the data package of pybullet, installed with it):
first the named objects (textured ones among them: duck, soccer ball, cube, sphere, domino, tray, torus,
...), then the procedurally generated ``random_urdfs`` objects in numeric order until there are 100. A mesh
that does not load, or that is made of several links or visual shapes, is left out. For each class the
script records the mesh's path (relative to ``pybullet_data``), how it is loaded (``urdf`` or ``obj``; a bare
mesh also gets the colour of its material, which pybullet does not apply by itself) and the factor that
scales its bounding sphere (half its bounding box's diagonal) to radius 1, so that every object has the same
apparent size at the reference distance.

Run it again after a pybullet update (the output is a pure function of the files in ``pybullet_data``)::

    python apps/segmentation/scripts/make_classes.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pybullet as p
import pybullet_data

NAMED: list[tuple[str, str, str]] = [
    # (class name, kind, path relative to pybullet_data)
    ("duck", "urdf", "duck_vhacd.urdf"),
    ("teddy", "urdf", "teddy_vhacd.urdf"),
    ("soccer_ball", "urdf", "soccerball.urdf"),
    ("textured_cube", "urdf", "cube.urdf"),
    ("textured_sphere", "urdf", "sphere2.urdf"),
    ("domino", "urdf", "domino/domino.urdf"),
    ("jenga_block", "urdf", "jenga/jenga.urdf"),
    ("mug", "urdf", "objects/mug.urdf"),
    ("lego_brick", "urdf", "lego/lego.urdf"),
    ("tray", "urdf", "tray/traybox.urdf"),
    ("concave_box", "urdf", "toys/concave_box.urdf"),
    ("block", "urdf", "block.urdf"),
    ("bunny", "obj", "bunny.obj"),
    ("torus", "obj", "torus/torus_textured.obj"),
    ("toy_cylinder", "obj", "toys/cylinder.obj"),
    ("shape_sorter", "obj", "toys/shape_sorter.obj"),
]
# Left out: toys/prism.obj, toys/cube.obj and stone.obj are plain boxes like textured_cube; concave_box.urdf
# does not load; the robots, tables and scenes of pybullet_data are several links or too large.
NUM_CLASSES = 100
OUT = Path(__file__).resolve().parents[1] / "src" / "lse_segmentation" / "classes.json"


def _load(client: int, kind: str, path: str) -> int:
    """Load a mesh at the origin as ``lse_segmentation.render`` does (at scale 1)."""
    root = Path(pybullet_data.getDataPath())
    if kind == "urdf":
        return p.loadURDF(str(root / path), physicsClientId=client)
    vis = p.createVisualShape(p.GEOM_MESH, fileName=str(root / path), physicsClientId=client)
    col = p.createCollisionShape(p.GEOM_MESH, fileName=str(root / path), physicsClientId=client)
    if vis < 0 or col < 0:
        raise RuntimeError(f"cannot load {path}")
    return p.createMultiBody(0.1, col, vis, physicsClientId=client)


def mtl_color(obj: Path) -> list[float] | None:
    """The diffuse colour ``Kd`` of the first material of a bare mesh (pybullet does not read it for
    ``createVisualShape``), as RGBA."""
    mtl = next(
        (
            line.split(maxsplit=1)[1].strip()
            for line in obj.read_text().splitlines()
            if line.startswith("mtllib")
        ),
        None,
    )
    if mtl is None or not (obj.parent / mtl).is_file():
        return None
    for line in (obj.parent / mtl).read_text().splitlines():
        if line.startswith("Kd"):
            return [round(float(v), 4) for v in line.split()[1:4]] + [1.0]
    return None


def describe(client: int, name: str, kind: str, path: str) -> dict | None:
    """The class record of one mesh, or ``None`` when it does not load or is not a single shape."""
    try:
        body = _load(client, kind, path)
    except Exception:  # pybullet raises plain errors for unreadable files
        return None
    try:
        if (
            p.getNumJoints(body, physicsClientId=client)
            or len(p.getVisualShapeData(body, physicsClientId=client)) != 1
        ):
            return None
        low, high = (np.asarray(v, dtype=np.float64) for v in p.getAABB(body, physicsClientId=client))
    finally:
        p.removeBody(body, physicsClientId=client)
    radius = float(np.linalg.norm(high - low) / 2)
    if not np.isfinite(radius) or radius <= 0:
        return None
    rec = {"name": name, "kind": kind, "path": path, "scale": round(1.0 / radius, 6)}
    if kind == "obj":
        color = mtl_color(Path(pybullet_data.getDataPath()) / path)
        if color is not None:
            rec["rgba"] = color
    return rec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    client = p.connect(p.DIRECT)
    classes: list[dict] = []
    for name, kind, path in NAMED:
        rec = describe(client, name, kind, path)
        if rec is not None:
            classes.append(rec)
    root = Path(pybullet_data.getDataPath()) / "random_urdfs"
    for folder in sorted(root.iterdir()):
        if len(classes) == NUM_CLASSES:
            break
        rec = describe(
            client, f"random_{folder.name}", "urdf", f"random_urdfs/{folder.name}/{folder.name}.urdf"
        )
        if rec is not None:
            classes.append(rec)
    p.disconnect(client)
    for i, rec in enumerate(classes, start=1):
        rec["id"] = i
    doc = {
        "description": "Object classes of lse_segmentation: id (mask label; 0 is the background), name, "
        "the mesh in pybullet_data (kind urdf or obj, path relative to pybullet_data), the factor that "
        "scales its bounding sphere (half its bounding box's diagonal) to radius 1 and, for bare meshes, the "
        "colour of their material. Written by "
        "apps/segmentation/scripts/make_classes.py.",
        "pybullet_api_version": p.getAPIVersion(),
        "classes": [{"id": r["id"], **{k: v for k, v in r.items() if k != "id"}} for r in classes],
    }
    rows = ",\n".join("  " + json.dumps(c) for c in doc["classes"])
    head = json.dumps({k: v for k, v in doc.items() if k != "classes"}, indent=1)[:-2]
    args.out.write_text(f'{head},\n "classes": [\n{rows}\n ]\n}}\n')
    print(f"{len(classes)} classes -> {args.out}")


if __name__ == "__main__":
    main()
