"""Group statistics see every distinct input of a group's members once per model call."""

from __future__ import annotations

import torch

from modeloptim.torch.quantization.algorithms.stats import collect_group_stats
from modeloptim.torch.trace import shared_input_groups

from ...trace.shared_models import TinyMoE, Unusual


def test_experts_reading_row_subsets_cover_all_rows():
    torch.manual_seed(0)
    model = TinyMoE()
    x = torch.randn(2, 6, 16)
    groups = shared_input_groups(model, x, predicate=lambda n, _m: n.startswith("experts."))
    assert len(groups) == 1
    (st,) = collect_group_stats(model, groups, lambda m: m(x))
    h = model.ln(x).reshape(-1, 16)
    # top-1 routing: the experts' row subsets partition h, so the union is every row once
    assert st.count == h.shape[0]
    torch.testing.assert_close(st.abs_max, h.abs().amax(0), rtol=0, atol=0)
    torch.testing.assert_close(st.abs_mean, h.abs().mean(0), rtol=1e-6, atol=1e-7)


def test_members_reading_one_tensor_count_it_once_per_call():
    torch.manual_seed(0)
    model = Unusual()
    data = [torch.randn(2, 5, 16), torch.randn(3, 5, 16)]
    groups = shared_input_groups(model, data[0], predicate=lambda n, _m: n in {"alpha", "zz.1"})
    assert [g.names for g in groups] == [["alpha", "zz.1"]]
    (st,) = collect_group_stats(model, groups, lambda m: [m(x) for x in data])
    rows = torch.cat([model.zz[0](x).reshape(-1, 16) for x in data])
    assert st.count == rows.shape[0]
    torch.testing.assert_close(st.abs_mean, rows.abs().mean(0), rtol=1e-6, atol=1e-7)
