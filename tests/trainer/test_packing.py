"""Packed sequences on the LLM side: the same loss as padding, samples that never see each other, a stream that
packs under a token budget and resumes in O(1), the limits the config resolves, and the GPU check on CPU."""

from __future__ import annotations

import copy
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omnivmed.data.schema import Provenance, Turn, make_sample
from omnivmed.trainer.config import ConfigError, build_config
from omnivmed.trainer.data.batch import collate, collate_packed, make_example
from omnivmed.trainer.data.chat import ChatEncoder
from omnivmed.trainer.data.order import Partition
from omnivmed.trainer.data.sources import ShardReader, load_index
from omnivmed.trainer.data.stream import DataStream, Position, filter_index
from omnivmed.trainer.data.visual import VisualSpec
from omnivmed.trainer.model.attention import flash_available
from omnivmed.trainer.train import run_stage

ROOT = Path(__file__).resolve().parents[2]


def tiny_spec(model) -> VisualSpec:
    """The tiny preset's geometry (8 frames of 64 x 64 pixels, patch 8) with the model's own mean/std."""
    arch = model.arch
    return VisualSpec(model.vision.patch_size, arch.image_mean, arch.image_std, 8, 64 * 64, 8 * 64 * 64, True, 0.1)


def text_sample(question: str, answer: str):
    return make_sample(
        source="synthetic", split="train", task="vqa", modality="unspecified", visual_kind="none", frames=[],
        frame_format=None, conversations=[Turn("user", question), Turn("assistant", answer)],
        provenance=Provenance((), question, "CC0-1.0", "https://example.org"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def index(embedded_manifest):
    return load_index([embedded_manifest])


@pytest.fixture(scope="module")
def examples(index, tiny_model):
    """Two of each visual kind from the embedded shards (images, CT/MR volumes, surgical clips) and a text-only one,
    so the packs hold samples of very different lengths."""
    reader = ShardReader(index.shards)
    chat = ChatEncoder(tiny_model.tokenizer, 1024)
    chosen = []
    for kind in ("image", "volume", "video"):
        rows = [i for i, k in enumerate(index.visual_kind) if k == kind][:2]
        chosen += [reader.sample(int(index.shard_of[i]), int(index.row_of[i])) for i in rows]
    chosen.append(text_sample("What is a CT scan?", "A stack of x-ray slices."))
    return [make_example(s, chat, tiny_spec(tiny_model)) for s in chosen]


def loss_of(model, batch) -> tuple[float, int]:
    with torch.no_grad():
        loss, count = model(batch)
    return float(loss), int(count)


def test_packed_and_padded_losses_are_equal(tiny_model, examples):
    pad, patch_dim = tiny_model.tokenizer.pad_token_id, tiny_model.vision.patch_dim
    lengths = sorted({len(e.input_ids) for e in examples})
    assert len(lengths) >= 4 and lengths[-1] > 3 * lengths[0]  # the padded layout really pads
    packed, count = loss_of(tiny_model, collate_packed(examples, patch_dim))
    padded, padded_count = loss_of(tiny_model, collate(examples, pad, patch_dim))
    assert count == padded_count > 0
    assert packed == pytest.approx(padded, rel=1e-5, abs=1e-5)


def test_packed_and_padded_gradients_are_equal(tiny_model, examples):
    pad, patch_dim = tiny_model.tokenizer.pad_token_id, tiny_model.vision.patch_dim
    grads = []
    for batch in (collate_packed(examples[:5], patch_dim), collate(examples[:5], pad, patch_dim)):
        model = copy.deepcopy(tiny_model)
        model(batch)[0].backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], rtol=1e-4, atol=1e-6), name


def test_eager_attention_takes_the_additive_form_of_the_mask(tiny_model, examples):
    model = copy.deepcopy(tiny_model)
    model.llm.set_attn_implementation("eager")
    pad, patch_dim = model.tokenizer.pad_token_id, model.vision.patch_dim
    packed = loss_of(model, collate_packed(examples, patch_dim))[0]
    assert packed == pytest.approx(loss_of(model, collate(examples, pad, patch_dim))[0], rel=1e-5)
    assert packed == pytest.approx(loss_of(tiny_model, collate_packed(examples, patch_dim))[0], rel=1e-5)


def test_samples_in_a_pack_never_see_each_other(tiny_model, examples):
    """The pack's loss is the sum of each sample's loss alone; with one causal mask over the whole row (a pack
    without per-sample offsets) it is not."""
    patch_dim = tiny_model.vision.patch_dim
    alone = sum(loss_of(tiny_model, collate_packed([e], patch_dim))[0] for e in examples)
    batch = collate_packed(examples, patch_dim)
    assert batch.position_ids[0, batch.cu_seqlens_text[1:-1].long()].tolist() == [0] * (len(examples) - 1)
    assert loss_of(tiny_model, batch)[0] == pytest.approx(alone, rel=1e-5)
    total = batch.input_ids.shape[1]
    batch.cu_seqlens_text = torch.tensor([0, total], dtype=torch.int32)
    batch.position_ids = torch.arange(total)[None]
    assert loss_of(tiny_model, batch)[0] != pytest.approx(alone, rel=1e-3)


@pytest.mark.skipif(not flash_available(), reason="needs a CUDA device and flash-attn")
def test_flash_attention_varlen_gives_the_sdpa_loss_on_gpu(tiny_base, examples):
    from omnivmed.trainer.model.omnivmed import load_model

    losses = {}
    for impl in ("flash", "sdpa"):
        model = load_model(tiny_base / "vision", tiny_base / "llm", attention=impl, seed=0).cuda()
        assert model.llm.config._attn_implementation == ("flash_attention_2" if impl == "flash" else "sdpa")
        batch = collate_packed(examples, model.vision.patch_dim).to("cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            losses[impl] = loss_of(model, batch)[0]
    assert losses["flash"] == pytest.approx(losses["sdpa"], rel=2e-2)


# ---- the packed stream --------------------------------------------------------------------------------------------

SPEC = VisualSpec(8, (0.5,) * 3, (0.5,) * 3, 4, 32 * 32, 4 * 32 * 32, True, 0.1)


@pytest.fixture(scope="module")
def make_stream(index, tiny_model):
    chat = ChatEncoder(tiny_model.tokenizer, 512)

    def make(*, pack=True, budget=None, rank=0, world=1, workers=0, kinds=("volume", "video"), batch_size=3):
        return DataStream(
            filter_index(index, kinds), chat, SPEC, batch_size=batch_size, partition=Partition(rank, world), seed=1,
            num_workers=workers, pad_id=tiny_model.tokenizer.pad_token_id, pack=pack, token_budget=budget,
        )  # fmt: skip

    return make


def take(stream, start: Position, n: int):
    return list(itertools.islice(stream.batches(start), n))


def test_packs_stay_under_the_budget_and_resume_from_a_position(make_stream):
    stream = make_stream(budget=250)  # 16 volumes and clips of about 70-180 tokens: 1 to 3 a pack
    run = take(stream, Position(), 12)
    sizes = [b.stats["samples"] for b, _ in run]
    assert all(b.stats["tokens"] <= 250 for b, _ in run) and set(sizes) > {3}  # the budget closed some packs
    assert all(b.packed and b.input_ids.shape[0] == 1 for b, _ in run)
    assert run[-1][1].epoch == 1  # crossed into the next epoch
    for at in (2, 5, 7):
        resumed = take(stream, run[at][1], 4)
        assert [b.sample_ids for b, _ in resumed] == [b.sample_ids for b, _ in run[at + 1 : at + 5]]
        assert all(torch.equal(a.input_ids, b.input_ids) for (a, _), (b, _) in zip(resumed, run[at + 1 : at + 5]))


def test_workers_do_not_change_the_packs(make_stream):
    alone = take(make_stream(budget=250), Position(), 5)
    pooled = take(make_stream(budget=250, workers=2), Position(), 5)
    assert [b.sample_ids for b, _ in alone] == [b.sample_ids for b, _ in pooled]
    assert [p for _, p in alone] == [p for _, p in pooled]
    assert all(torch.equal(a.patches, b.patches) for (a, _), (b, _) in zip(alone, pooled))


def test_a_budget_that_never_binds_packs_exactly_the_padded_batches(make_stream):
    padded = take(make_stream(pack=False), Position(), 8)
    packed = take(make_stream(budget=3 * 512), Position(), 8)  # 3 samples of at most 512 tokens always fit
    assert [b.sample_ids for b, _ in packed] == [b.sample_ids for b, _ in padded]
    assert [p for _, p in packed] == [p for _, p in padded]  # the same positions: the same epoch remainder left out


def test_ranks_pack_disjoint_shares(make_stream):
    def first_epoch(rank: int) -> set[str]:
        run = take(make_stream(rank=rank, world=2, budget=250), Position(), 8)
        return {i for b, p in run if p.epoch == 0 for i in b.sample_ids}

    seen = [first_epoch(r) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 6 and not seen[0] & seen[1]  # 8 rows a rank, the padded layout's 6 used


# ---- configuration, and packed against padded end to end ------------------------------------------------------


def test_the_limits_the_config_resolves():
    tiny = build_config(overrides={"data": {"shards": ["x"]}}).resolved_data()
    assert (tiny.pack, tiny.max_length, tiny.token_budget, tiny.max_visual_tokens) == (True, 1024, 4096, 768)
    big = build_config(overrides={"model": {"preset": "7b"}, "data": {"shards": ["x"]}}).resolved_data()
    assert (big.max_length, big.token_budget, big.max_visual_tokens) == (16384, 16384, 12288)
    assert big.max_visual_tokens >= 16 * 27 * 27  # an unpruned 16-frame so400m clip
    longer = build_config(overrides={"model": {"preset": "1.5b"}, "data": {"shards": ["x"], "max_length": 20000}})
    assert longer.resolved_data().token_budget == 20000  # a full-length sample always fits a pack
    small = build_config(overrides={"data": {"shards": ["x"], "token_budget": 512}})
    with pytest.raises(ConfigError, match="token_budget 512 is below data.max_length 1024"):
        small.resolved_data()
    with pytest.raises(ConfigError, match="data.max_visual_tokens must be >= 1"):
        build_config(overrides={"data": {"shards": ["x"], "max_visual_tokens": 0}})


def test_training_packed_gives_the_padded_losses(embedded_manifest, tmp_path):
    def run(out: Path, pack: bool) -> list[float]:
        cfg = build_config(
            overrides={
                "data": {"shards": [str(embedded_manifest)], "batch_size": 3, "pack": pack},
                "run": {"out": str(out), "stage": 1, "progress": False, "tensorboard": False},
                "stage": {"steps": 2, "warmup_steps": 0, "visual_kinds": ["volume", "video"]},
            },
            lr_update={"projector": 1e-2, "vision": 1e-3},
        )
        return run_stage(cfg).losses

    assert run(tmp_path / "packed", True) == pytest.approx(run(tmp_path / "padded", False), rel=1e-5)


def test_gpu_check_on_cpu_says_so_in_one_line():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().count("\n") == 0 and "no CUDA device" in done.stdout
