"""Fixtures of the search tests: the simulated device (``fakes.MacDevice``) and a small digits
CNN trained once per session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from fakes import MacDevice


@pytest.fixture
def mac_device() -> MacDevice:
    return MacDevice()


@dataclass
class TrainedDigits:
    data: object
    net: object
    accuracy: Callable


@pytest.fixture(scope="session")
def digits():
    """A width-8 digits CNN on 16×16 inputs, trained once (a few seconds).

    The search tests run with one torch thread (a shared 2-core machine is fastest so), and
    the count is restored when the session's search tests are done."""
    import torch

    from latbench.models.digits import accuracy, load_digits_data, train_digits_cnn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_digits_data(16, seed=0)
        net = train_digits_cnn(data, width=8, epochs=3, seed=0)
        yield TrainedDigits(data, net, lambda m: accuracy(m, data.x_val, data.y_val))
    finally:
        torch.set_num_threads(threads)
