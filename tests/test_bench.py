"""`syncfoley bench`: its rows measure the model they name, and the side-by-side harness runs a
reference checkout on our own tensors, reporting how far its output is from ours and how much
faster ours is."""
from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from syncfoley.cli import main
from syncfoley.perf.bench import random_dit
from syncfoley.perf.reference import ReferenceError, build_reference

# A stand-in for the public source tree: the layout and class the harness imports, with the
# reference's constructor and forward signatures, computing with our model underneath. `scale`
# makes it another function than ours (its output is `scale` times ours); `passes` makes it cost
# that many of our forwards.
FAKE_REFERENCE = textwrap.dedent('''
    from diffusers.models import ModelMixin
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from syncfoley.models import dit_config
    from syncfoley.models.dit import FoleyDiT

    class HunyuanVideoFoley(FoleyDiT, ModelMixin, ConfigMixin):
        @register_to_config
        def __init__(self, model_config, dtype=None, device=None):
            kw = model_config.model_config.model_kwargs
            assert (kw["clip_length"], kw["sync_length"]) == {lengths}  # 8 fps, 16-frame segments every 8 frames
            FoleyDiT.__init__(self, dit_config.sized(kw["hidden_size"], kw["num_heads"],
                              kw["depth_triple_blocks"], kw["depth_single_blocks"]{extra}))

        def forward(self, x, t, cond, clip_feat, sync_feat, return_dict=True):
            for _ in range({passes}):
                out = FoleyDiT.forward(self, x, t, cond, clip_feat, sync_feat) * {scale}
            return {{"x": out}} if return_dict else (out,)
''')


@pytest.fixture()
def reference_src(tmp_path, monkeypatch):
    def write(extra="", scale=1.0, passes=1, lengths=(64, 192)):  # lengths: an 8 s clip
        package = tmp_path / "hunyuanvideo_foley"
        (package / "models").mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
        (package / "models" / "__init__.py").write_text("")
        source = FAKE_REFERENCE.format(extra=extra, scale=scale, passes=passes, lengths=lengths)
        (package / "models" / "hifi_foley.py").write_text(source)
        return tmp_path

    before = set(sys.modules)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield write
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("hunyuanvideo_foley", "diffusers"):
            del sys.modules[name]


def test_bench_reports_dit_and_guided_steps_as_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(["bench", "all", "--config", "tiny", "--seconds", "2", "--repeats", "1", "--json", str(out)])
    rows = json.loads(out.read_text())
    measures = [row["measure"] for row in rows]
    assert measures == ["dit forward", "step cfg batched", "step cfg sequential",
                        "step synccfg batched", "step synccfg sequential"]
    model = random_dit("tiny")
    assert rows[0]["params_m"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    assert rows[0]["tokens"] == model.config.latent_length(2.0) + model.config.clip_length(2.0)
    assert all(row["peak_mib"] > 0 for row in rows)
    assert all(row["step_s"] > 0 for row in rows[1:]) and rows[0]["forward_s"] > 0
    table = capsys.readouterr().out
    assert "step synccfg sequential" in table and "peak_mib" in table


def test_bench_compiles_the_blocks_when_asked(tmp_path, monkeypatch):
    from syncfoley.models.dit import FoleyDiT

    backends = []
    original = FoleyDiT.compile_blocks
    monkeypatch.setattr(FoleyDiT, "compile_blocks", lambda self, **o: backends.append(o) or original(self, **o))
    out = tmp_path / "compiled.json"
    main(["bench", "dit", "--config", "tiny", "--seconds", "2", "--repeats", "1", "--compile", "aot_eager",
          "--json", str(out)])
    row, = json.loads(out.read_text())
    assert backends == [{"backend": "aot_eager"}] and row["compile"] == "aot_eager" and row["forward_s"] > 0
    torch._dynamo.reset()


def test_bench_with_gpu_blocks_counts_only_the_resident_weights(tmp_path):
    rows = {}
    for blocks in (None, 1):
        out = tmp_path / f"bench_{blocks}.json"
        extra = [] if blocks is None else ["--gpu-blocks", str(blocks)]
        main(["bench", "dit", "--config", "tiny", "--seconds", "2", "--repeats", "1", "--json", str(out), *extra])
        rows[blocks], = json.loads(out.read_text())
    model = random_dit("tiny")
    block_mib = [sum(p.numel() * p.element_size() for p in b.parameters()) / 2**20
                 for b in [*model.triple_blocks, *model.single_blocks]]
    # Blocks 2..4 live in CPU memory; the two staged at a time show up as working memory instead.
    assert rows[1]["weights_mib"] == pytest.approx(rows[None]["weights_mib"] - sum(block_mib[1:]))
    assert rows[1]["peak_mib"] >= rows[None]["peak_mib"] + min(block_mib[1:])
    assert rows[1]["total_mib"] < rows[None]["total_mib"]


def test_reference_shares_our_tensors_and_matches_them(reference_src):
    model = random_dit("tiny")
    reference = build_reference(model, 8.0, reference_src())
    ours = dict(model.named_parameters())
    shared = [ours[name].data_ptr() == p.data_ptr() for name, p in reference.named_parameters()]
    assert shared and all(shared) and len(shared) == len(ours)


@pytest.fixture()
def work_clock(monkeypatch):
    """The harness's timer counting work instead of seconds: each DiT evaluation costs 10 ms, so
    timings do not depend on the load of the machine."""
    from syncfoley.models.dit import FoleyDiT
    from syncfoley.perf import reference

    evaluations = [0]
    velocity = FoleyDiT.velocity

    def counted(self, *args, **kwargs):
        evaluations[0] += 1
        return velocity(self, *args, **kwargs)

    def timed(fn, device, repeats, warmup=1):
        before = evaluations[0]
        fn()
        return (evaluations[0] - before) * 0.01

    monkeypatch.setattr(FoleyDiT, "velocity", counted)
    monkeypatch.setattr(reference, "time_call", timed)


TWO_SECONDS = (16, 40)  # clip and sync lengths: 16 frames at 8 fps, 5 segments of 8 tokens


def side_by_side_rows(source, tmp_path) -> dict[str, dict]:
    out = tmp_path / "side.json"
    main(["bench", "reference", "--reference-src", str(source), "--config", "tiny", "--blocks", "1,1",
          "--seconds", "2", "--repeats", "1", "--json", str(out)])
    rows = {row["implementation"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {"reference", "syncfoley step", "syncfoley forward"}
    assert all(row["config"] == "tiny[1,1]" and row["dtype"] == "fp32" for row in rows.values())
    return rows


def test_side_by_side_times_each_implementation_on_its_own_call(reference_src, work_clock, tmp_path, capsys):
    # The reference computes what ours does at the cost of two of our forwards.
    rows = side_by_side_rows(reference_src(passes=2, lengths=TWO_SECONDS), tmp_path)
    assert rows["reference"]["forward_s"] == pytest.approx(0.02)
    assert rows["reference"]["steps_per_s"] == pytest.approx(1 / 0.02)
    for name in ("syncfoley step", "syncfoley forward"):
        assert rows[name]["forward_s"] == pytest.approx(0.01) and rows[name]["speedup"] == pytest.approx(2.0)
        assert rows[name]["rel_diff"] < 1e-6  # the same function on the same weights and inputs
    assert "syncfoley forward" in capsys.readouterr().out


def test_side_by_side_reports_a_reference_that_computes_something_else(reference_src, tmp_path):
    """A reference whose output is 1.25 times ours is 0.25 / 1.25 = 20 % off its own scale."""
    rows = side_by_side_rows(reference_src(scale=1.25, lengths=TWO_SECONDS), tmp_path)
    assert rows["reference"]["rel_diff"] == 0.0
    for name in ("syncfoley step", "syncfoley forward"):
        assert rows[name]["rel_diff"] == pytest.approx(0.2, rel=1e-4)


def test_reference_errors_name_the_problem(reference_src, tmp_path):
    with pytest.raises(ReferenceError, match="not a HunyuanVideo-Foley source checkout"):
        build_reference(random_dit("tiny"), 8.0, tmp_path / "elsewhere")
    # A reference of another layout (here: another text width) cannot take our tensors.
    source = reference_src(extra=", text_dim=512")
    with pytest.raises(ReferenceError, match="parameters do not match ours"):
        build_reference(random_dit("tiny"), 8.0, source)
    with pytest.raises(SystemExit, match="give --reference-src"):
        main(["bench", "reference", "--config", "tiny"])
    with pytest.raises(SystemExit, match="applies to e2e; for the DiT alone use --gpu-blocks"):
        main(["bench", "dit", "--config", "tiny", "--offload"])



# ------------------------------------------------------------------------------------------------
# MMAudio: `bench reference --family mmaudio` against a stand-in for github.com/hkchengrex/MMAudio
# ------------------------------------------------------------------------------------------------
# The release's constructor, `preprocess_conditions` / `get_empty_conditions` / `predict_flow` and
# `update_seq_lengths`, computing with our network underneath; `scale` and `passes` as above.
FAKE_MMAUDIO = textwrap.dedent('''
    import dataclasses
    import torch
    from syncfoley.models import mmaudio_config
    from syncfoley.models.mmaudio import MMAudioNet

    @dataclasses.dataclass
    class PreprocessedConditions:
        clip: torch.Tensor
        sync: torch.Tensor
        text: torch.Tensor

    class MMAudio(MMAudioNet):
        def __init__(self, *, latent_dim, clip_dim, sync_dim, text_dim, hidden_dim, depth, fused_depth, num_heads,
                     mlp_ratio=4.0, latent_seq_len, clip_seq_len, sync_seq_len, text_seq_len=77, v2=False):
            assert hidden_dim == 64 * num_heads and mlp_ratio == 4.0
            super().__init__(mmaudio_config.sized(latent_dim, num_heads, depth, fused_depth, v2=v2, clip_dim=clip_dim,
                                                  sync_dim=sync_dim, text_dim=text_dim{extra}))
            self.update_seq_lengths(latent_seq_len, clip_seq_len, sync_seq_len)

        def update_seq_lengths(self, latent_seq_len, clip_seq_len, sync_seq_len):
            self.lengths = (latent_seq_len, clip_seq_len, sync_seq_len)

        def preprocess_conditions(self, clip_f, sync_f, text_f):
            return PreprocessedConditions(clip_f, sync_f, text_f)

        def get_empty_conditions(self, bs):
            _, clip, sync = self.lengths
            return PreprocessedConditions(self.empty_clip_feat.expand(bs, clip, -1),
                                          self.empty_sync_feat.expand(bs, sync, -1),
                                          self.empty_string_feat.expand(bs, -1, -1))

        def predict_flow(self, latent, t, conditions):
            prepared = self.prepare(conditions.clip, conditions.sync, conditions.text, self.lengths[0])
            for _ in range({passes}):
                out = self.velocity(latent, t, prepared) * {scale}
            return out
''')


@pytest.fixture()
def mmaudio_src(tmp_path, monkeypatch):
    def write(extra="", scale=1.0, passes=1):
        model = tmp_path / "mmaudio" / "model"
        model.mkdir(parents=True, exist_ok=True)
        for package in (model.parent, model):
            (package / "__init__.py").write_text("")
        (model / "networks.py").write_text(FAKE_MMAUDIO.format(extra=extra, scale=scale, passes=passes))
        return tmp_path

    before = set(sys.modules)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield write
    for name in set(sys.modules) - before:
        if name.split(".")[0] == "mmaudio" or getattr(sys.modules[name], "__syncfoley_stand_in__", False):
            del sys.modules[name]


def mmaudio_rows(source, tmp_path, *extra) -> dict[str, dict]:
    out = tmp_path / "mmaudio.json"
    main(["bench", "reference", "--family", "mmaudio", "--reference-src", str(source), "--config", "tiny",
          "--seconds", "1", "--repeats", "1", "--json", str(out), *extra])
    rows = {row["implementation"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {"reference", "syncfoley step"}
    assert all(row["config"] == "tiny" and row["seconds"] == 1 and row["peak_mib"] > 0 for row in rows.values())
    return rows


def test_mmaudio_reference_shares_our_tensors(mmaudio_src):
    from syncfoley.perf.reference_mmaudio import build_reference_network, mmaudio_size, random_network

    model = random_network(mmaudio_size("tiny"))
    reference = build_reference_network(model, 2.0, mmaudio_src())
    ours = dict(model.named_parameters())
    shared = [ours[name].data_ptr() == p.data_ptr() for name, p in reference.named_parameters()]
    assert shared and all(shared) and len(shared) == len(ours)
    assert reference.lengths == (63, 16, 40)  # 2 s: latents at 31.25/s, CLIP at 8 fps, 5 sync segments


def test_mmaudio_side_by_side_times_each_step(mmaudio_src, monkeypatch, tmp_path):
    """Each network evaluation costs 10 ms of work: the reference, at two per step, runs at half speed."""
    from syncfoley.models.mmaudio import MMAudioNet
    from syncfoley.perf import reference_mmaudio

    evaluations = [0]
    velocity = MMAudioNet.velocity
    monkeypatch.setattr(MMAudioNet, "velocity", lambda *a, **k: evaluations.__setitem__(0, evaluations[0] + 1) or velocity(*a, **k))

    def work(fn, device):
        before = evaluations[0]
        fn()
        return (evaluations[0] - before) * 0.01, 0.0

    monkeypatch.setattr(reference_mmaudio, "measure", work)
    rows = mmaudio_rows(mmaudio_src(passes=2), tmp_path)
    assert rows["reference"]["step_s"] == pytest.approx(0.02) and rows["reference"]["rel_diff"] == 0.0
    ours = rows["syncfoley step"]
    assert ours["step_s"] == pytest.approx(0.01) and ours["speedup"] == pytest.approx(2.0)
    assert ours["steps_per_s"] == pytest.approx(100.0) and ours["rel_diff"] < 1e-5


def test_mmaudio_side_by_side_reports_another_function(mmaudio_src, tmp_path):
    """A reference whose velocity is 1.25 times ours is 0.25 / 1.25 = 20 % off its own scale."""
    rows = mmaudio_rows(mmaudio_src(scale=1.25), tmp_path)
    assert rows["syncfoley step"]["rel_diff"] == pytest.approx(0.2, rel=1e-4)


def test_mmaudio_reference_errors_name_the_problem(mmaudio_src, tmp_path):
    from syncfoley.perf.reference_mmaudio import build_reference_network, mmaudio_size, random_network

    model = random_network(mmaudio_size("tiny"))
    with pytest.raises(ReferenceError, match="not an MMAudio source checkout"):
        build_reference_network(model, 2.0, tmp_path / "elsewhere")
    with pytest.raises(ReferenceError, match="parameters do not match ours"):
        build_reference_network(model, 2.0, mmaudio_src(extra=", text_length=60"))
    with pytest.raises(SystemExit, match="a clone of hkchengrex/MMAudio"):
        main(["bench", "reference", "--family", "mmaudio"])
    with pytest.raises(SystemExit, match="'xl' is not an MMAudio size"):
        main(["bench", "reference", "--family", "mmaudio", "--reference-src", str(tmp_path), "--config", "xl"])
    with pytest.raises(SystemExit, match="'small_16k' is not a HunyuanVideo-Foley size"):
        main(["bench", "reference", "--reference-src", str(tmp_path), "--config", "small_16k"])
