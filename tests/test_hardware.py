"""Hardware mode of the benchmark, exercised on CPU with a small config."""

import pytest
import torch

from infill_engine.model.configs import tiny_config
from infill_engine.model.device import Placement
from infill_engine.tools import hardware


def test_hardware_mode_times_both_loops_over_the_same_steps():
    config = tiny_config(512, 64, 2, 8, canvas_length=32)
    placement = Placement(torch.device("cpu"), torch.float32, 1)
    out = hardware.run(
        config, placement, steps=3, prompt_tokens=16, repeats=2, bandwidth_mebibytes=8
    )
    assert out["steps"] == out["reference_steps"] == 3
    assert out["ms_per_step"] > 0 and out["reference_ms_per_step"] > 0
    model = hardware.random_model(config, placement)
    everything = sum(p.numel() * p.element_size() for p in model.parameters())
    experts = sum(
        layer.experts.gate_up_proj.nbytes + layer.experts.down_proj.nbytes
        for layer in model.model.decoder.layers
    )
    # at least every dense decoder weight and the LM head, at most every weight
    assert everything - experts < out["bytes_per_step"] <= everything
    assert out["fraction_of_bound"] == pytest.approx(
        out["bandwidth_bound_ms_per_step"] / out["ms_per_step"]
    )


def test_bytes_touched_counts_only_the_experts_the_router_picked():
    config = tiny_config(512, 64, 1, 8, canvas_length=32)
    placement = Placement(torch.device("cpu"), torch.float32, 1)
    model = hardware.random_model(config, placement)
    layer = model.model.decoder.layers[0]
    per_expert = (
        layer.experts.gate_up_proj[0].nbytes + layer.experts.down_proj[0].nbytes
    )

    def route(indices):
        def step():
            output = (None, None, torch.tensor(indices))
            for hook in layer.router._forward_hooks.values():
                hook(layer.router, (), output)

        return step

    one = hardware.bytes_touched(model, route([[0, 0]]))
    three = hardware.bytes_touched(model, route([[0, 5], [7, 5]]))
    assert three - one == 2 * per_expert


def test_architecture_names():
    # transformers 5.24's default leaves num_experts None: building it raised a
    # TypeError deep in nn.Linear on the first CUDA `infill bench`.
    with pytest.raises(ValueError, match="leaves the experts unset"):
        hardware.load_config("default")
    assert hardware.load_config("tiny").get_text_config().num_experts == 4
    with pytest.raises(ValueError, match="architecture must be"):
        hardware.load_config("/no/such/config.json")
