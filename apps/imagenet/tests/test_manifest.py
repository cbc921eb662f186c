"""The manifest: records round-trip, a cut last line is ignored, duplicates and bad fields are refused."""

from __future__ import annotations

import json

import pytest
from lse_imagenet.manifest import (
    VariantRecord,
    classes,
    group_by_image,
    read_jsonl,
    read_manifest,
    write_manifest,
)


def _record(image_id="n01/x", factor=0.7, label=0, quality=0.9):
    return VariantRecord(
        image_id=image_id,
        source=f"{image_id}.JPEG",
        label=label,
        class_name=image_id.split("/")[0],
        factor=factor,
        path=f"images/{image_id}_s{factor:.2f}.jpg",
        mask_path=f"masks/{image_id}.png",
        mask_quality=quality,
    )


def test_round_trip_sorted_and_grouped(tmp_path):
    recs = [_record("n02/b", f, label=1) for f in (1.3, 1.0)] + [
        _record("n01/a", f) for f in (0.8, 0.7000001)
    ]
    path = write_manifest(tmp_path, recs)
    assert path == tmp_path / "manifest.jsonl"
    back = read_manifest(tmp_path)
    assert back == sorted(recs, key=lambda r: (r.image_id, r.factor))
    assert back[0].factor == 0.7  # factors are kept at 2 decimals
    assert all(isinstance(json.loads(line)["factor"], float) for line in path.read_text().splitlines())
    groups = group_by_image(back)
    assert list(groups) == ["n01/a", "n02/b"] and list(groups["n02/b"]) == [1.0, 1.3]
    assert groups["n01/a"][0.7].source == "n01/a.JPEG"
    assert classes(tmp_path) == ["n01", "n02"]  # from the records when there is no summary
    (tmp_path / "summary.json").write_text(json.dumps({"classes": ["n01", "n02", "n03"]}))
    assert classes(tmp_path) == ["n01", "n02", "n03"]  # the summary knows the classes without variants


def test_cut_last_line_is_ignored_but_damage_elsewhere_is_not(tmp_path):
    write_manifest(tmp_path, [_record(), _record(factor=1.0)])
    path = tmp_path / "manifest.jsonl"
    path.write_text(path.read_text() + '{"image_id": "n01/y", "fac')
    assert len(read_manifest(tmp_path)) == 2
    lines = path.read_text().split("\n")
    path.write_text("\n".join([lines[0][:10], *lines[1:]]))
    with pytest.raises(ValueError, match="line 1: not valid JSON"):
        read_jsonl(path)
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="two manifest records"):
        write_manifest(tmp_path, [_record(), _record(factor=0.7)])
    with pytest.raises(ValueError, match="two manifest records"):
        group_by_image([_record(), _record()])
    with pytest.raises(ValueError, match="mask_quality"):
        _record(quality=1.5)
    with pytest.raises(ValueError, match="factor"):
        _record(factor=0.0)
    with pytest.raises(ValueError, match=r"missing keys \['mask_quality'\], unknown keys \['box'\]"):
        VariantRecord.from_dict(
            {**{k: v for k, v in json.loads(_record().to_json()).items() if k != "mask_quality"}, "box": 1}
        )
    with pytest.raises(FileNotFoundError, match="no manifest"):
        read_manifest(tmp_path / "empty")
