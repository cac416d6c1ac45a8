import torch

from omnivmed.trainer.checkpoint import load_latest, save_checkpoint
from omnivmed.trainer.data.stream import Position


def test_latest_names_the_newest_complete_checkpoint_and_old_ones_go(tmp_path):
    tied = torch.arange(4.0)
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, Position(1, step * 3), {"a": tied, "b": tied}, {"state": {}}, {"last_epoch": step}, "init", keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000004", "step-00000006"]
    (tmp_path / ".step-00000008.tmp").mkdir()  # a crash while writing step 8 leaves step 6 in use
    resumed = load_latest(tmp_path)
    assert resumed.step == 6 and resumed.position == Position(1, 18) and resumed.init == "init"
    assert torch.equal(resumed.model_state["b"], tied) and resumed.scheduler_state == {"last_epoch": 6}


def test_rng_states_come_back(tmp_path):
    torch.manual_seed(5)
    save_checkpoint(tmp_path, 1, Position(), {}, {}, {}, "init", keep=1)
    expected = torch.rand(3)
    torch.manual_seed(99)
    from omnivmed.trainer.checkpoint import restore_rng

    restore_rng(load_latest(tmp_path).rng)
    assert torch.equal(torch.rand(3), expected)


def test_no_checkpoint_is_none(tmp_path):
    assert load_latest(tmp_path) is None
