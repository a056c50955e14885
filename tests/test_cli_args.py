"""Bad command-line values: one line naming the flag and what it may be, exit status 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_training import N_CLIPS

from selavi_core.cli import build_parser, main
from selavi_core.commands.train import FLAGS, preset_from_args
from selavi_core.config import CPU_SMALL, ConfigError


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--clusters", "0", "--clusters must be >= 1, got 0"),
        ("--heads", "0", "--heads must be >= 1, got 0"),
        ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
        ("--epochs", "-1", "--epochs must be >= 1, got -1"),
        ("--epochs", "0", "--epochs must be >= 1, got 0"),
        ("--lr", "0", "--lr must be > 0, got 0.0"),
        ("--lr", "nan", "--lr must be > 0, got nan"),
        ("--contrast-weight", "-1", "--contrast-weight must be >= 0, got -1.0"),
        ("--labellings", "0", "--labellings must be >= 1, got 0"),
        ("--groups", "0", "--groups must be >= 1, got 0"),
        ("--seed", "-1", "--seed must be an integer >= 0, got -1"),
        ("--refine-rounds", "-1", "--refine-rounds must be >= 0, got -1"),
        ("--refine-marginal-strength", "0", "--refine-marginal-strength must be in (0, 1], got 0.0"),
        ("--refine-marginal-strength", "1.5", "--refine-marginal-strength must be in (0, 1], got 1.5"),
        ("--prior", "", "--prior must be a prior (uniform, gauss"),
        ("--clusters", str(N_CLIPS + 1), "--clusters must be at most the number of usable clips in"),
        ("--batch-size", str(N_CLIPS + 1), f"({N_CLIPS}), got {N_CLIPS + 1}"),
    ],
)
def test_selavi_train_refuses_bad_values_in_one_line(
    tiny_catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, says: str
) -> None:
    out = tmp_path / "run"
    base = ["train", str(tiny_catalog), "--out", str(out), "--epochs", "1", "--batch-size", "6", "--device", "cpu"]
    assert main([*base, flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("selavi train: error: ") and says in err, err
    assert not out.exists(), "a refused value must stop train before it writes anything"


def test_the_presets_batch_size_is_named_when_it_exceeds_the_catalog(
    tiny_catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert CPU_SMALL.optim.batch_size > N_CLIPS
    assert main(["train", str(tiny_catalog), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"--batch-size must be at most the number of usable clips in {tiny_catalog} ({N_CLIPS})" in err
    assert "(the cpu-small preset's)" in err


def test_every_flag_sets_its_field() -> None:
    """Each flag given on the command line lands in its preset field (``selavi train`` trains with that preset)."""
    values = {"--heads": "3", "--clusters": "7", "--batch-size": "5", "--lr": "0.01", "--seed": "4", "--epochs": "2",
              "--workers": "1", "--labellings": "3", "--groups": "1", "--prior": "uniform", "--fusion": "concat",
              "--refine-rounds": "5", "--refine-marginal-strength": "0.7", "--contrast-weight": "0.5"}  # fmt: skip
    assert set(values) == set(FLAGS.values()), "a new flag needs a value here"
    defaults = preset_from_args(build_parser().parse_args(["train", "CAT", "--out", "RUN"]))
    for field, flag in FLAGS.items():  # a value equal to the default could not show a flag that was dropped
        section, name = field.split(".")
        assert str(getattr(getattr(defaults, section), name)) != values[flag], flag
    args = build_parser().parse_args(["train", "CAT", "--out", "RUN", *[x for kv in values.items() for x in kv]])
    preset = preset_from_args(args)
    for field, flag in FLAGS.items():
        section, name = field.split(".")
        got = getattr(getattr(preset, section), name)
        assert str(got) == values[flag] or got == type(got)(values[flag]), (flag, got)


def test_every_flag_names_a_field_the_preset_validates() -> None:
    for field in FLAGS:
        section, name = field.split(".")
        assert hasattr(getattr(CPU_SMALL, section), name), field
    err = ConfigError("optim.momentum must lie in [0, 1), got 2", field="optim.momentum", value=2, allowed="in [0, 1)")
    assert err.for_flags(FLAGS) is err  # a field no flag sets keeps its own name


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--limit-per-class", "0"], "--limit-per-class must be >= 1, got 0"),
        (["--zipf-s", "nan"], "--zipf-s must be >= 0, got nan"),
    ],
)
def test_selavi_demo_data_refuses_bad_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    out = tmp_path / "demo"
    assert main(["demo-data", str(out), "--fallback", "--limit-per-class", "1", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert not out.exists()


def test_selavi_previews_and_evaluate_refuse_bad_values(
    tiny_catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "previews"
    assert main(["previews", str(tiny_catalog), "--out", str(out), "--workers", "0"]) == 2  # was: the default
    assert "--workers must be >= 1, got 0" in capsys.readouterr().err and not out.exists()
    assert main(["previews", str(tiny_catalog), "--out", str(out), "--workers", "-2"]) == 2
    assert "--workers must be >= 1, got -2" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "no-run"), "--seed", "-1"]) == 2
    assert "--seed must be >= 0, got -1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["export", "RUN", "--format", "csv", "--out", "OUT", "--head", "-1"],
            "--head must be a head of this run, 0 to 2",
        ),
        (
            ["export", "RUN", "--format", "csv", "--out", "OUT", "--head", "3"],
            "--head must be a head of this run, 0 to 2",
        ),
        (["export", "RUN", "--format", "csv", "--out", "OUT", "--min-confidence", "nan"], "--min-confidence must be"),
        (["export", "RUN", "--format", "csv", "--out", "OUT", "--min-confidence", "-0.5"], "--min-confidence must be"),
        (["labels", "RUN", "clusters", "--head", "7"], "--head must be a head of this run, 0 to 2"),
        (["labels", "RUN", "history", "--limit", "0"], "--limit must be >= 1, got 0"),
    ],
)
def test_selavi_export_and_labels_refuse_bad_values(
    studio_run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    """Before, --head 3 on a 3-head run and --min-confidence nan exported without a word (an empty label set)."""
    out = tmp_path / "labels.csv"
    argv = [str(studio_run_copy) if a == "RUN" else str(out) if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert not out.exists()
