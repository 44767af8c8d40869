"""Detection on regions: motion boxes to crops, tiles, mapping detections back, suppression across crops."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detektr.workers._regions import (
    Detection,
    boxes_from,
    covered_area,
    detect_in_crops,
    detect_in_regions,
    plan_regions,
    square_around,
    suppress,
    tiles,
)

frames = st.tuples(st.integers(64, 2000), st.integers(64, 2000))


@st.composite
def box_in(draw, width: int, height: int):
    x = draw(st.integers(0, width - 1))
    y = draw(st.integers(0, height - 1))
    return (x, y, draw(st.integers(1, width - x)), draw(st.integers(1, height - y)))


@st.composite
def frame_and_boxes(draw, most: int = 6):
    width, height = draw(frames)
    return width, height, draw(st.lists(box_in(width, height), min_size=1, max_size=most))


def inside(inner, outer) -> bool:
    return (inner[0] >= outer[0] and inner[1] >= outer[1] and inner[0] + inner[2] <= outer[0] + outer[2]
            and inner[1] + inner[3] <= outer[1] + outer[3])


def in_frame(box, width, height) -> bool:
    return inside(box, (0, 0, width, height)) and box[2] > 0 and box[3] > 0


@given(frame_and_boxes(most=1), st.integers(16, 640), st.floats(0, 1))
def test_a_square_around_a_box_holds_it_with_context_inside_the_frame(case, min_side, context):
    width, height, (box,) = case
    crop = square_around(box, context, min_side, width, height)
    assert in_frame(crop, width, height)
    side = max(round(max(box[2], box[3]) * (1 + context)), min_side)
    assert crop[2] == min(side, width) and crop[3] == min(side, height)  # square unless the frame is smaller
    if side <= min(width, height):
        assert inside(box, crop)


@settings(max_examples=200)
@given(frame_and_boxes(), st.integers(32, 416))
def test_planned_regions_hold_every_moving_box_or_the_whole_frame_is_used(case, min_side):
    width, height, boxes = case
    regions = plan_regions(boxes, width, height, min_side, max_share=1.0, max_regions=100)
    assert regions is not None
    for region in regions:
        assert in_frame(region, width, height)
    for box in boxes:
        if max(box[2], box[3]) * 1.5 <= min(width, height):  # a square with context fits the frame
            assert any(inside(box, region) for region in regions), (box, regions)
    for i, a in enumerate(regions):  # merged until no two overlap by more than 30% of the smaller
        for b in regions[i + 1 :]:
            w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
            h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
            assert max(w, 0) * max(h, 0) <= 0.3 * min(a[2] * a[3], b[2] * b[3])


def test_nearby_boxes_share_one_crop_and_distant_ones_get_their_own():
    regions = plan_regions([(600, 300, 30, 40), (640, 330, 20, 20), (100, 100, 40, 40)], 1280, 720, 192)
    assert len(regions) == 2
    near = next(r for r in regions if inside((600, 300, 60, 50), r))
    assert near[2] == near[3] == 192 and any(inside((100, 100, 40, 40), r) for r in regions)


@given(st.lists(box_in(64, 48), min_size=1, max_size=6))
def test_the_covered_area_counts_overlaps_once(boxes):
    mask = np.zeros((48, 64), dtype=bool)
    for x, y, w, h in boxes:
        mask[y : y + h, x : x + w] = True
    assert covered_area(boxes) == mask.sum()


def test_the_whole_frame_is_used_without_boxes_or_when_motion_covers_much_of_it():
    assert plan_regions(None, 640, 360, 192) is None
    assert plan_regions([], 640, 360, 192) is None
    assert plan_regions([(0, 0, 600, 300)], 640, 360, 192) is None  # one crop over most of the frame
    assert plan_regions([(10, 10, 20, 20)], 640, 360, 192, max_share=0.1) is None  # 192x192 is 16% of it
    many = [(x, y, 8, 8) for x in range(0, 1280, 200) for y in range(0, 720, 300)]
    assert plan_regions(many, 1280, 720, 100, max_share=1.0, max_regions=8) is None
    clustered = [(600 + x, 300, 4, 4) for x in range(0, 60, 6)]  # ten boxes that make one crop
    assert plan_regions(clustered, 1280, 720, 192, max_regions=2) is None  # more than four times max_regions
    assert len(plan_regions(clustered, 1280, 720, 192, max_regions=3)) == 1
    assert plan_regions([(10, 10, 20, 20)], 1280, 720, 192) == [(0, 0, 192, 192)]


@settings(max_examples=200)
@given(frames, st.integers(64, 640), st.integers(0, 200), st.data())
def test_tiles_cover_the_frame_and_hold_whole_every_thing_no_larger_than_the_overlap(size, side, overlap, data):
    width, height = size
    overlap = min(overlap, side // 2)
    crops = tiles(width, height, side, overlap)
    covered = np.zeros((height, width), dtype=bool)
    for x, y, w, h in crops:
        assert in_frame((x, y, w, h), width, height) and w == min(side, width) and h == min(side, height)
        covered[y : y + h, x : x + w] = True
    assert covered.all()
    thing = data.draw(box_in(width, height))
    if max(thing[2], thing[3]) <= overlap:
        assert any(inside(thing, crop) for crop in crops)


def test_a_frame_no_larger_than_a_tile_is_one_tile():
    assert tiles(320, 200, 384, 64) == [(0, 0, 320, 200)]
    assert len(tiles(640, 360, 384, 67)) == 2 and len(tiles(1280, 720, 384, 134)) == 15


def test_suppression_keeps_the_best_of_overlapping_boxes_of_one_label():
    a = Detection((10, 10, 50, 50), 0.9)
    b = Detection((12, 12, 50, 50), 0.8)
    c = Detection((12, 12, 50, 50), 0.7, label=1)
    d = Detection((200, 200, 50, 50), 0.6)
    assert suppress([d, b, c, a], 0.5) == [a, c, d]


def test_the_gates_boxes_are_read_defensively():
    assert boxes_from({"boxes": [[1, 2, 3, 4], [5.4, 6, 7, 8]]}) == [(1, 2, 3, 4), (5, 6, 7, 8)]
    assert boxes_from({"boxes": [[1, 2, 0, 4], "x", [1, 2, 3], [1, 2, True, 4], [1, 2, float("nan"), 4]]}) is None
    assert boxes_from({"motion": True}) is None and boxes_from(None) is None and boxes_from({"boxes": "1,2"}) is None
    assert boxes_from({"boxes": [[1, 2, 3, 4]] * 300}) is None  # too many: the whole frame


class Squares:
    """A stand-in detector for these unit tests: every white square in the picture, in its pixels."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, crop: np.ndarray) -> list[Detection]:
        import cv2

        self.calls.append(crop.shape[:2])
        mask = (crop[:, :, 0] == 255).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        return [Detection(tuple(float(v) for v in stats[i, :4]), 0.9, points=(tuple(float(v) for v in stats[i, :2]),))
                for i in range(1, count)]


def picture_with(squares: list[tuple[int, int, int]], width: int = 1280, height: int = 720) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for x, y, side in squares:
        image[y : y + side, x : x + side] = 255
    return image


def test_detections_in_crops_come_back_in_frame_pixels_once_each():
    image = picture_with([(700, 400, 30), (100, 50, 20)])
    detect = Squares()
    found, regions = detect_in_regions(image, [(690, 390, 50, 50), (95, 45, 30, 30)], detect, 192)
    assert sorted(d.box for d in found) == [(100, 50, 20, 20), (700, 400, 30, 30)]
    assert sorted(d.points for d in found) == [((100.0, 50.0),), ((700.0, 400.0),)]
    assert regions is not None and len(regions) == 2 and detect.calls == [(192, 192), (192, 192)]


def test_without_usable_regions_the_whole_frame_runs():
    image = picture_with([(700, 400, 30)])
    detect = Squares()
    found, regions = detect_in_regions(image, None, detect, 192)
    assert regions is None and [d.box for d in found] == [(700, 400, 30, 30)] and detect.calls == [(720, 1280)]
    called = []
    found, _ = detect_in_regions(image, [(0, 0, 1280, 700)], detect, 192, whole_frame=lambda im: called.append(1) or [])
    assert found == [] and called == [1]


def test_on_tiles_a_thing_cut_by_a_tile_edge_is_dropped_where_a_neighbour_holds_it_whole():
    image = picture_with([(370, 100, 40)], width=640, height=360)  # across the first tile's right edge (384)
    crops = tiles(640, 360, 384, 67)
    assert crops == [(0, 0, 384, 360), (256, 0, 384, 360)]
    found = detect_in_crops(image, crops, Squares())
    assert [d.box for d in found] == [(370, 100, 40, 40)]
    cut = detect_in_crops(image, crops, Squares(), drop_cut=False)  # the cut piece stays, and is not a duplicate
    assert sorted(d.box for d in cut) == [(370, 100, 14, 40), (370, 100, 40, 40)]
