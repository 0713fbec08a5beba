"""Values cross as canonical MessagePack: the same bytes as the equivalent Rust values."""

import dataclasses

import pydantic
import pytest

import weir as flyte
from weir import _weir

# The same hex is pinned by weir-core's test codec::tests::bytes_the_python_front_pins, for
# the equivalent Rust struct: equal bytes, hence equal action ids and cache keys.
RUST_BYTES = "8ba3626967cf0000010000000000a4626c6f62c40200ffa4666c6167c3a46e616d65a477656972a47461677392a161a162a5636f756e7403a5706f696e7483a17801a179cb4004000000000000a56c6162656ca170a5726174696fcb3fe0000000000000a673636f72657382a161ffa17a01a76e6f7468696e67c0a86e65676174697665d1ff38"


@dataclasses.dataclass
class Point:
    label: str
    x: int
    y: float


class PointModel(pydantic.BaseModel):
    label: str
    x: int
    y: float


def inputs(point):
    return {
        "count": 3,
        "negative": -200,
        "big": 1 << 40,
        "ratio": 0.5,
        "name": "weir",
        "flag": True,
        "nothing": None,
        "blob": b"\x00\xff",
        "tags": ["a", "b"],
        "scores": {"z": 1, "a": -1},
        "point": point,
    }


def test_bytes_match_rust():
    as_dict = {"label": "p", "x": 1, "y": 2.5}
    assert _weir.encode(inputs(as_dict)).hex() == RUST_BYTES
    assert _weir.encode(inputs(Point("p", 1, 2.5))).hex() == RUST_BYTES
    assert _weir.encode(inputs(PointModel(label="p", x=1, y=2.5))).hex() == RUST_BYTES


def test_round_trip_of_plain_values():
    value = inputs({"label": "p", "x": 1, "y": 2.5})
    assert _weir.decode(_weir.encode(value)) == value


def test_a_value_that_cannot_cross_names_where_it_is():
    with pytest.raises(TypeError) as err:
        _weir.encode({"items": [1, {"when": object()}]}, "inputs of task t.x")
    msg = str(err.value)
    assert "inputs of task t.x" in msg and "['items'][1]['when']" in msg and "object" in msg, msg
    with pytest.raises(TypeError, match="64 bits"):
        _weir.encode(1 << 70)


env = flyte.TaskEnvironment("values")


@env.task
async def move(p: Point, m: PointModel, points: list[Point], by: dict[str, Point]) -> list[Point]:
    assert isinstance(p, Point) and isinstance(m, PointModel)
    assert all(isinstance(q, Point) for q in points) and isinstance(by["k"], Point)
    return [Point(p.label, p.x + 1, p.y), Point(m.label, m.x, m.y * 2), *points, by["k"]]


@env.task
async def calls_move(n: int) -> list[Point]:
    return await move(Point("a", n, 1.0), PointModel(label="b", x=2, y=3.0), [Point("c", 0, 0.0)], {"k": Point("d", 9, 9.0)})


def test_dataclasses_and_models_cross_tasks_and_runs():
    out = flyte.run(calls_move, n=1).outputs()
    assert out == [Point("a", 2, 1.0), Point("b", 2, 6.0), Point("c", 0, 0.0), Point("d", 9, 9.0)]


@env.task
async def unsupported(x: int) -> object:
    return {"when": object()}


def test_an_output_that_cannot_cross_fails_the_task_with_a_clear_error():
    with pytest.raises(flyte.TaskError) as err:
        flyte.run(unsupported, x=1).outputs()
    assert "output of task values.unsupported" in err.value.message and "['when']" in err.value.message
