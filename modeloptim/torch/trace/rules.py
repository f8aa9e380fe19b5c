"""`SymInfo` rules for the standard ``torch.nn`` layers (one tiny function per family)."""

from __future__ import annotations

from torch import nn

from modeloptim.torch.trace.symbols import SYM_RULES, CLType, Symbol, SymInfo

IN, OUT, NONE = CLType.INCOMING, CLType.OUTGOING, CLType.NONE


@SYM_RULES.register(nn.Linear)
def _linear(m: nn.Linear) -> SymInfo:
    i, o = Symbol("in_features", m.in_features, IN), Symbol("out_features", m.out_features, OUT)
    return SymInfo.of(
        i,
        o,
        tensors={"weight": {0: o, 1: i}, "bias": {0: o}},
        inputs={"input": {-1: i}},
        outputs={(): {-1: o}},
        attrs={"in_features": i, "out_features": o},
    )


@SYM_RULES.register(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv(m: nn.Conv1d) -> SymInfo:
    # in/out_channels count channels per group: a grouped conv's dims are (groups, per group)
    g = Symbol("groups", m.groups, NONE)
    i = Symbol("in_channels", m.in_channels // m.groups, IN)
    o = Symbol("out_channels", m.out_channels // m.groups, OUT)
    return SymInfo.of(
        g,
        i,
        o,
        tensors={"weight": {0: (g, o), 1: i}, "bias": {0: (g, o)}},
        inputs={"input": {1: (g, i)}},
        outputs={(): {1: (g, o)}},
        attrs={"in_channels": (g, i), "out_channels": (g, o), "groups": g},
    )


@SYM_RULES.register(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def _conv_transpose(m: nn.ConvTranspose1d) -> SymInfo:
    g = Symbol("groups", m.groups, NONE)
    i = Symbol("in_channels", m.in_channels // m.groups, IN)
    o = Symbol("out_channels", m.out_channels // m.groups, OUT)
    return SymInfo.of(
        g,
        i,
        o,
        tensors={"weight": {0: (g, i), 1: o}, "bias": {0: (g, o)}},
        inputs={"input": {1: (g, i)}},
        outputs={(): {1: (g, o)}},
        attrs={"in_channels": (g, i), "out_channels": (g, o), "groups": g},
    )


@SYM_RULES.register(
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)
def _batch_norm(m: nn.BatchNorm2d) -> SymInfo:
    c = Symbol("num_features", m.num_features, IN)
    per_channel = {0: c}
    return SymInfo.of(
        c,
        tensors=dict.fromkeys(("weight", "bias", "running_mean", "running_var"), per_channel),
        inputs={"input": {1: c}},
        outputs={(): {1: c}},
        attrs={"num_features": c},
    )


@SYM_RULES.register(nn.LayerNorm, nn.RMSNorm)
def _layer_norm(m: nn.LayerNorm) -> SymInfo:
    syms = [Symbol(f"normalized_shape_{k}", s, IN) for k, s in enumerate(m.normalized_shape)]
    n = len(syms)
    dims = {k - n: s for k, s in enumerate(syms)}
    return SymInfo.of(
        *syms,
        tensors={"weight": dict(enumerate(syms)), "bias": dict(enumerate(syms))},
        inputs={"input": dims},
        outputs={(): dims},
        attrs={"normalized_shape": [(s,) for s in syms]},
    )


@SYM_RULES.register(nn.GroupNorm)
def _group_norm(m: nn.GroupNorm) -> SymInfo:
    g = Symbol("num_groups", m.num_groups, NONE)
    c = Symbol("channels_per_group", m.num_channels // m.num_groups, IN)
    return SymInfo.of(
        g,
        c,
        tensors={"weight": {0: (g, c)}, "bias": {0: (g, c)}},
        inputs={"input": {1: (g, c)}},
        outputs={(): {1: (g, c)}},
        attrs={"num_groups": g, "num_channels": (g, c)},
    )


@SYM_RULES.register(nn.Embedding)
def _embedding(m: nn.Embedding) -> SymInfo:
    v = Symbol(
        "num_embeddings",
        m.num_embeddings,
        NONE,
        constant_reason="vocabulary size (indexed by token ids)",
    )
    d = Symbol("embedding_dim", m.embedding_dim, OUT)
    return SymInfo.of(
        v,
        d,
        tensors={"weight": {0: v, 1: d}},
        outputs={(): {-1: d}},
        attrs={"num_embeddings": v, "embedding_dim": d},
    )


@SYM_RULES.register(nn.MultiheadAttention)
def _mha(m: nn.MultiheadAttention) -> SymInfo:
    # torch requires embed_dim == num_heads * head_dim, so the embedding dim *is* the
    # (heads, head_dim) product: pruning it removes whole heads or head channels.
    h, d = Symbol("num_heads", m.num_heads, OUT), Symbol("head_dim", m.head_dim, OUT)
    e = (h, d)
    kd, vd = Symbol("kdim", m.kdim, IN), Symbol("vdim", m.vdim, IN)
    same = m._qkv_same_embed_dim
    t: dict[str, dict[int, object]] = {
        "in_proj_bias": {0: [e, e, e]},
        "out_proj.weight": {0: e, 1: e},
        "out_proj.bias": {0: e},
    }
    if same:
        t["in_proj_weight"] = {0: [e, e, e], 1: e}
    else:
        t.update(
            {
                "q_proj_weight": {0: e, 1: e},
                "k_proj_weight": {0: e, 1: kd},
                "v_proj_weight": {0: e, 1: vd},
            }
        )
    ins = {"query": {-1: e}, "key": {-1: e if same else kd}, "value": {-1: e if same else vd}}
    return SymInfo.of(
        h,
        d,
        *([] if same else [kd, vd]),
        tensors=t,
        inputs=ins,
        outputs={(0,): {-1: e}},
        attrs={
            "embed_dim": e,
            "num_heads": h,
            "head_dim": d,
            "kdim": e if same else kd,
            "vdim": e if same else vd,
            "out_proj.in_features": e,
            "out_proj.out_features": e,
        },
    )


@SYM_RULES.register(nn.PReLU)
def _prelu(m: nn.PReLU) -> SymInfo | None:
    if m.num_parameters == 1:  # one shared slope: an ordinary activation
        return None
    c = Symbol("num_parameters", m.num_parameters, IN)
    return SymInfo.of(
        c,
        tensors={"weight": {0: c}},
        inputs={"input": {1: c}},
        outputs={(): {1: c}},
        attrs={"num_parameters": c},
    )


@SYM_RULES.register(nn.LSTM, nn.GRU, nn.RNN)
def _rnn(m: nn.RNNBase) -> SymInfo | None:
    if getattr(m, "proj_size", 0):
        return None  # projected LSTMs: not described (their module stays a boundary)
    gates = {"LSTM": 4, "GRU": 3}.get(m.mode, 1)
    i, h = Symbol("input_size", m.input_size, IN), Symbol("hidden_size", m.hidden_size, OUT)
    g = Symbol("gates", gates, NONE, constant_reason="number of recurrent gates")
    dirs = 2 if m.bidirectional else 1
    out_spec = [(h,)] * dirs if dirs > 1 else h
    t: dict[str, dict[int, object]] = {}
    for layer in range(m.num_layers):
        for sfx in ("", "_reverse")[:dirs]:
            t[f"weight_ih_l{layer}{sfx}"] = {0: (g, h), 1: i if layer == 0 else out_spec}
            t[f"weight_hh_l{layer}{sfx}"] = {0: (g, h), 1: h}
            t[f"bias_ih_l{layer}{sfx}"] = {0: (g, h)}
            t[f"bias_hh_l{layer}{sfx}"] = {0: (g, h)}
    state: dict[int, object] = {-1: h}
    outs: dict[tuple[int, ...], dict[int, object]] = {(0,): {-1: out_spec}}
    outs.update({(1, 0): state, (1, 1): state} if m.mode == "LSTM" else {(1,): state})
    return SymInfo.of(
        i,
        h,
        g,
        tensors=t,
        inputs={"input": {-1: i}},
        outputs=outs,
        attrs={"input_size": i, "hidden_size": h},
    )
