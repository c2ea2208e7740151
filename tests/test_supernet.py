import numpy as np
import pytest
import torch

from hwnas.job.checks import load_job_config as load_config
from hwnas.data import load_data
from hwnas.errors import ArchError
from hwnas.ir import count
from hwnas.spaces.registry import op_graph
from hwnas.spaces.cnn import CNNSupernet
from hwnas.train.evaluation import recalibrate_bn
from hwnas.spaces.ops.quant import fake_quantize, qrange
from hwnas.spaces.registry import build_space
from hwnas.train.trainer import SupernetTrainer


@pytest.fixture(scope="module")
def setup():
    cfg = load_config(None)
    data = load_data()
    space = build_space(cfg.space, data.input_shape, data.num_classes)
    torch.manual_seed(0)
    return cfg, data, space, CNNSupernet(space)


def _archs(space, n=6):
    rng = np.random.default_rng(3)
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(n)]


def test_extracted_weights_are_the_sliced_supernet_weights(setup):
    _, _, space, net = setup
    for arch in _archs(space):
        net.set_active(arch)
        net.eval()
        with torch.no_grad():
            net(torch.randn(2, 1, 8, 8))  # initialize every quantizer step at this arch
        sub = net.extract()
        spec = net.spec
        for block, module in zip(spec["blocks"], sub.blocks):
            i, j = (int(p[1:]) for p in block["name"].split("."))
            elastic = net.stages[i][j].core
            dw = block["layers"]["depthwise"]
            k, kmax = dw["kernel"], elastic.depthwise.max_kernel
            lo = (kmax - k) // 2
            raw = elastic.depthwise.weight[: dw["cout"], :, lo:lo + k, lo:lo + k]
            if dw["wbits"] < 32:
                raw = fake_quantize(raw, elastic.depthwise.wq.step(dw["wbits"]), *qrange(dw["wbits"], True))
            assert torch.equal(module.depthwise.conv.weight, raw)
            proj = block["layers"]["project"]
            assert module.project.conv.weight.shape == (proj["cout"], proj["cin"], 1, 1)
            assert torch.equal(module.project.bn.running_mean, elastic.project.bn.running_mean[: proj["cout"]])


def test_exported_model_equals_supernet_after_recalibration(setup, tmp_path):
    cfg, data, space, net = setup
    x = torch.stack([data.test[i][0] for i in range(32)])
    for arch in _archs(space, 3):
        net.set_active(arch)
        recalibrate_bn(net, data.train, 256, 64)
        with torch.no_grad():
            expected = net(x)
            got = net.extract()(x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_exported_model_holds_only_its_weights_and_op_graph_counts_them(setup):
    _, _, space, net = setup
    for arch in _archs(space):
        net.set_active(arch)
        sub = net.extract()
        counted = count(op_graph(space.subnet_spec(arch)))
        assert sum(p.numel() for p in sub.parameters()) == counted["params"]
        supernet_weights = sum(p.numel() for n, p in net.named_parameters() if ".steps." not in n)
        assert counted["params"] == supernet_weights if arch == space.largest() else counted["params"] < supernet_weights


def test_macs_match_a_hook_count(setup):
    _, _, space, net = setup
    arch = space.sample(np.random.default_rng(9))
    net.set_active(arch)
    sub = net.extract()
    macs = 0

    def hook(module, inputs, output):
        nonlocal macs
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, torch.nn.Linear):
            macs += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in sub.modules()]
    sub(torch.randn(1, 1, 8, 8))
    for h in handles:
        h.remove()
    assert count(op_graph(space.subnet_spec(arch)))["macs"] == macs


def test_set_active_rejects_unknown_and_out_of_range(setup):
    _, _, space, net = setup
    good = space.largest().to_dict()
    with pytest.raises(ArchError, match="unknown dimension 'width_mult'"):
        net.set_active({**good, "width_mult": 1.0})
    with pytest.raises(ArchError, match="s1.b0.expand=5"):
        net.set_active({**good, "s1.b0.expand": 5})
    with pytest.raises(ArchError, match="s0.b0.wbits=16"):
        net.set_active({**good, "s0.b0.wbits": 16})


def test_training_resumes_exactly_from_a_checkpoint(tmp_path):
    cfg = load_config(None, ["space.stages.0.depth=[1]", "space.stages.1.depth=[1]", "space.stages.2.depth=[1]",
                             "train.subnets_per_step=2"])
    data = load_data()
    space = build_space(cfg.space, data.input_shape, data.num_classes)
    train_cfg = cfg.train.model_copy(update={"epochs": 2})

    def fresh():
        torch.manual_seed(0)
        return CNNSupernet(space)

    straight = fresh()
    SupernetTrainer(straight, data, train_cfg, 0, torch.device("cpu"), 64).train()
    # "killed" after the first epoch: a run with epochs=1 writes the checkpoint of epoch 0
    ckpt = tmp_path / "checkpoint.pt"
    SupernetTrainer(fresh(), data, train_cfg.model_copy(update={"epochs": 1}), 0, torch.device("cpu"), 64,
                    ckpt).train()
    resumed = fresh()
    trainer = SupernetTrainer(resumed, data, train_cfg, 0, torch.device("cpu"), 64, ckpt)
    assert trainer.try_resume() and trainer.start_epoch == 1
    trainer.train()
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_training_runs_on_the_configured_threads_and_gives_them_back(monkeypatch):
    """train.threads pins training to that many threads (the default job trains on one, see
    SupernetTrainer.train for why) and restores the caller's count afterwards."""
    cfg = load_config(None, ["space.stages.0.depth=[1]", "space.stages.1.depth=[1]", "space.stages.2.depth=[1]",
                             "train.subnets_per_step=2", "train.epochs=1", "train.threads=1"])
    assert load_config(None).train.threads == 1  # the shipped default job
    data = load_data()
    space = build_space(cfg.space, data.input_shape, data.num_classes)
    seen = []
    step = SupernetTrainer._accumulate_gradients
    monkeypatch.setattr(SupernetTrainer, "_accumulate_gradients",
                        lambda self, *a: seen.append(torch.get_num_threads()) or step(self, *a))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        SupernetTrainer(CNNSupernet(space), data, cfg.train, 0, torch.device("cpu"), 256).train()
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        unpinned = cfg.train.model_copy(update={"threads": None})
        SupernetTrainer(CNNSupernet(space), data, unpinned, 0, torch.device("cpu"), 256).train()
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(before)


def test_corrupt_checkpoint_is_reported_by_name(tmp_path):
    from hwnas.errors import HwnasError

    cfg = load_config(None)
    data = load_data()
    space = build_space(cfg.space, data.input_shape, data.num_classes)
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"not a checkpoint")
    trainer = SupernetTrainer(CNNSupernet(space), data, cfg.train, 0, torch.device("cpu"), 64, ckpt)
    with pytest.raises(HwnasError, match="checkpoint.pt is unreadable"):
        trainer.try_resume()


def test_evaluations_do_not_depend_on_their_order_even_after_too_little_training():
    """A quantizer step training never ran is set once, the same way, before any evaluation: two
    processes evaluating the same subnets in opposite orders (a resumed job, two Ray workers)
    agree. Without it the first subnet evaluated would set the step for all that follow."""
    import copy

    from hwnas.job.checks import load_job_config as load_config
    from hwnas.train.components import Components

    from .conftest import TINY

    config = load_config(copy.deepcopy(TINY))
    space = Components.build(config, torch.device("cpu")).space
    rng = np.random.default_rng(3)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(40)))[:6]

    def evaluations(order):
        parts = Components.build(config, torch.device("cpu"))  # untrained: no quantizer has run
        assert parts.settle_quantizers() > 0
        return {a.to_json(): parts.evaluate(a, "val") for a in order}

    forward, backward = evaluations(archs), evaluations(archs[::-1])
    assert forward == backward
