"""Each notebook app redraws in under a second at its default sizes (Foundation issue §4).

The redraw is what a slider change triggers: the lorakit runs plus the altair charts. Measured as
the median of five redraws after one warm-up (the first sgd/adamw chain in a process imports
torch._dynamo once). Run with ``make bench``; not part of ``make test``.
"""

import os
import statistics

import pytest

from lorakit import widgets


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(widgets.why_lora_fails_app, id="01_why_lora_fails"),
        pytest.param(widgets.bernoulli_explorer_app, id="02_bernoulli_explorer"),
        pytest.param(widgets.federated_app, id="04_federated_sketching"),
        pytest.param(widgets.random_walks_app, id="05_random_walks"),
        pytest.param(widgets.async_app, id="06_async_federated"),
    ],
)
def test_widget_redraw_under_one_second(build, monkeypatch):
    monkeypatch.delenv("LORAKIT_FAST", raising=False)  # default sizes, not the CI fast mode
    assert not widgets.fast_mode()
    app = build()
    times = []
    for _ in range(5):
        app.redraw()
        times.append(app.redraw_seconds)
    median = statistics.median(times)
    print(f"\n{build.__name__}: median redraw {median:.3f} s over 5 (cores: {os.cpu_count()})")
    assert median < 1.0
