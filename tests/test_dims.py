import json

import numpy as np
import pytest

from hwnas.job.checks import load_job_config as load_config
from hwnas.errors import ArchError
from hwnas.spaces.dims import Arch, Dim, SearchSpace
from hwnas.spaces.registry import build_space


@pytest.fixture
def space():
    return build_space(load_config(None).space, (1, 8, 8), 10)


def test_encode_decode_round_trip(space):
    rng = np.random.default_rng(0)
    for _ in range(200):
        arch = space.sample(rng)
        x = space.encode(arch)
        assert space.decode(x) == arch
        assert Arch.from_json(arch.to_json()) == arch
        assert hash(Arch.from_dict(json.loads(arch.to_json()))) == hash(arch)


def test_inactive_dimensions_are_canonical(space):
    arch = space.largest().to_dict()
    arch["s0.depth"] = 1
    other = dict(arch, **{"s0.b2.kernel": 5, "s0.b1.wbits": 4})
    assert space.validate(arch) == space.validate(other)
    assert (space.encode(space.validate(arch)) == space.encode(space.validate(other))).all()
    assert space.validate(other)["s0.b2.kernel"] == space.dim("s0.b2.kernel").choices[0]


def test_largest_and_smallest(space):
    big, small = space.largest(), space.smallest()
    assert big["s0.depth"] == 3 and big["s0.b0.expand"] == 6 and big["s2.b2.wbits"] == 32
    assert small["s1.depth"] == 1 and small["s0.b0.kernel"] == 3 and small["s0.b0.abits"] == 4


def test_validation_names_the_problem(space):
    values = space.largest().to_dict()
    with pytest.raises(ArchError, match="unknown dimension 'bogus'"):
        space.validate({**values, "bogus": 1})
    with pytest.raises(ArchError, match=r"s0.b0.kernel=4 is not one of its choices \[3, 5, 7\]"):
        space.validate({**values, "s0.b0.kernel": 4})
    del values["s1.depth"]
    with pytest.raises(ArchError, match="lacks dimension 's1.depth'"):
        space.validate(values)
    with pytest.raises(ArchError, match="out of range"):
        space.decode([99] * len(space))


def test_dim_rejects_empty_and_repeated_choices():
    with pytest.raises(ArchError, match="no choices"):
        Dim("x", ())
    with pytest.raises(ArchError, match="repeated"):
        SearchSpace([Dim("x", (1, 1))])
