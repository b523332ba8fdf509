"""`python -m clip_train.curate`: scoring against a naive per-pair cosine, the score filter, deduplication, MetaCLIP
balancing against hand-computed probabilities, the written shards, resumable scoring, a CSV source, bad samples."""

import csv
import glob
import json
import os
import random
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from helpers import COLORS, colour_samples, tiny_clip_model
from hydra import compose, initialize_config_dir
from PIL import Image

from clip_train.curation.balancing import balanced, entry_counts, keep_probabilities, matched_entries
from clip_train.curation.curate_set import BalanceSettings, CurationSettings, curate, score_share, select_and_write
from clip_train.curation.selection import near_duplicate_pairs
from clip_train.data.shard_writer import Sample, encode_image, write_shards
from clip_train.data.shards import expand_shards
from clip_train.override_check import unknown_key_message
from clip_train.paths import CONFIG_DIR

SCORER = "tiny"


def noise_samples(count: int) -> list[Sample]:
    """`count` PNG squares of seeded random noise (distinct images, so distinct scores), captioned with a colour."""
    names, rng = list(COLORS), random.Random(0)
    return [
        Sample(f"{i:09d}", Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)),
               f"a {rng.choice(names)} square", {"i": i}, "png")
        for i in range(count)
    ]  # fmt: skip


def naive_scores(model, samples: list[Sample]) -> dict[str, float]:
    """{key: cosine} computed one pair at a time: the image's and the caption's embedding, each normalised here."""
    scores = {}
    with torch.no_grad():
        for sample in samples:
            image = model.encode_pixels(model.preprocess_encoded(encode_image(sample.image, "png"))[None])[0]
            text = model.encode_text([sample.caption])[0]
            scores[sample.key] = float(image @ text / (image.norm() * text.norm()))
    return scores


def read_shards(out: str) -> dict[str, dict]:
    """{key: {"png": bytes, "txt": str, "json": dict}} of every curated shard under `out`."""
    pairs = {}
    for path in sorted(glob.glob(os.path.join(out, "curated-*.tar"))):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                pairs.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return {k: {**v, "txt": v["txt"].decode(), "json": json.loads(v["json"])} for k, v in pairs.items()}


@pytest.fixture
def noisy_tars(tmp_path):
    samples = noise_samples(20)
    write_shards(str(tmp_path / "shards"), "train", samples, samples_per_shard=8)
    return samples, expand_shards(str(tmp_path / "shards" / "train-{00000..00002}.tar"), "data.train")


def test_the_score_filter_keeps_exactly_the_naive_top_fraction(tmp_path, noisy_tars):
    samples, units = noisy_tars
    model = tiny_clip_model()
    reference = naive_scores(model, samples)
    report = curate(model, units, str(tmp_path / "out"), SCORER, CurationSettings(keep_fraction=0.6))
    top = sorted(reference, key=lambda key: -reference[key])[:12]
    written = read_shards(str(tmp_path / "out"))
    assert sorted(written) == sorted(top)
    assert report["counts"] == {"scored": 20, "after_score_filter": 12, "after_dedup": 12, "after_balance": 12, "written": 12}
    for key, pair in written.items():
        assert pair["json"]["clip_score"] == pytest.approx(reference[key], abs=1e-5)


def test_the_threshold_keeps_every_pair_scoring_at_least_it(tmp_path, noisy_tars):
    samples, units = noisy_tars
    model = tiny_clip_model()
    reference = naive_scores(model, samples)
    ordered = sorted(reference.values())
    threshold = (ordered[6] + ordered[7]) / 2  # between the 7th and 8th lowest: 13 pass
    curate(model, units, str(tmp_path / "out"), SCORER, CurationSettings(threshold=threshold))
    assert sorted(read_shards(str(tmp_path / "out"))) == sorted(k for k, s in reference.items() if s >= threshold)
    with pytest.raises(ValueError, match="not both"):
        CurationSettings(threshold=0.0, keep_fraction=0.5)
    with pytest.raises(FileNotFoundError, match="curate.balance.entries: .*absent.txt"):
        CurationSettings(balance=BalanceSettings(entries=str(tmp_path / "absent.txt")))


def test_the_output_shards_hold_the_source_pairs_with_their_scores(tmp_path, noisy_tars):
    samples, units = noisy_tars
    curate(tiny_clip_model(), units, str(tmp_path / "out"), SCORER, CurationSettings(keep_fraction=0.5))
    written = read_shards(str(tmp_path / "out"))
    by_key = {sample.key: sample for sample in samples}
    assert len(written) == 10
    for key, pair in written.items():
        assert pair["png"] == encode_image(by_key[key].image, "png") and pair["txt"] == by_key[key].caption
        assert pair["json"]["i"] == int(key) and isinstance(pair["json"]["clip_score"], float)
    with open(tmp_path / "out" / "sizes.json") as f:
        assert sum(json.load(f).values()) == 10
    loaded = expand_shards(str(tmp_path / "out" / "curated-00000.tar"), "x")
    assert loaded and Image.open(tmp_path / "out" / "score_histogram.png").size == (640, 320)


def test_a_duplicated_image_is_dropped_and_the_higher_scored_copy_stays(tmp_path):
    samples = noise_samples(12)
    copy = Sample(
        "000000099",
        samples[3].image,
        "a blue square" if samples[3].caption != "a blue square" else "a red square",
        {"i": 99},
        "png",
    )
    samples.append(copy)
    write_shards(str(tmp_path / "shards"), "train", samples, samples_per_shard=5)
    units = expand_shards(str(tmp_path / "shards" / "train-{00000..00002}.tar"), "data.train")
    model = tiny_clip_model()
    reference = naive_scores(model, samples)
    report = curate(model, units, str(tmp_path / "out"), SCORER, CurationSettings(dedup_threshold=0.99))
    loser = min(("000000003", "000000099"), key=reference.get)
    assert sorted(read_shards(str(tmp_path / "out"))) == sorted(s.key for s in samples if s.key != loser)
    assert report["counts"]["after_dedup"] == 12


def test_faiss_and_the_matrix_product_find_the_same_near_duplicates(monkeypatch):
    embeddings = torch.nn.functional.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    embeddings[7] = embeddings[3]
    naive = sorted((i, j) for i in range(50) for j in range(i + 1, 50) if float(embeddings[i] @ embeddings[j]) >= 0.9)
    assert (3, 7) in naive
    assert near_duplicate_pairs(embeddings, 0.9) == naive
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # import faiss now raises ImportError
    assert near_duplicate_pairs(embeddings, 0.9, chunk_rows=16) == naive


def test_balancing_probabilities_match_the_hand_computed_ones():
    entries = ["red", "blue square", "big"]
    captions = ["a red square", "a Red blue square", "a big red ball", "a green thing", "a BIG blue square", "a red dot"]
    matches = matched_entries(captions, [e.lower() for e in entries])
    assert matches == [[0], [0, 1], [0, 2], [], [1, 2], [0]]
    counts = entry_counts(matches, 3)
    assert counts.tolist() == [4, 2, 2]
    # t = 1: p(red) = 1/4, p(blue square) = p(big) = 1/2; several entries: 1 - prod(1 - p)
    expected = [0.25, 1 - 0.75 * 0.5, 1 - 0.75 * 0.5, 0.0, 1 - 0.5 * 0.5, 0.25]
    assert keep_probabilities(matches, counts, 1, keep_unmatched=False) == pytest.approx(expected)
    assert keep_probabilities(matches, counts, 1, keep_unmatched=True)[3] == 1.0
    assert keep_probabilities(matches, counts, 4, keep_unmatched=False).tolist() == [1, 1, 1, 0, 1, 1]
    draws = np.stack([balanced(np.array(expected), seed) for seed in range(4000)])
    assert draws.mean(0) == pytest.approx(expected, abs=0.03)  # 3 sigma at p = 1/2 is 0.024
    assert (balanced(np.array(expected), 5) == balanced(np.array(expected), 5)).all()


def test_balancing_caps_an_entry_at_t_end_to_end(tmp_path, noisy_tars):
    samples, units = noisy_tars
    entries = tmp_path / "entries.txt"
    entries.write_text("red\nblue\n\n")
    captions = [s.caption for s in samples]
    reds, blues = captions.count("a red square"), captions.count("a blue square")
    assert (reds, blues) == (4, 7)  # the seeded captions: with t = 4 every red pair stays, blue ones with p = 4/7
    model, kept_blues = tiny_clip_model(), []
    for seed in range(30):
        settings = CurationSettings(balance=BalanceSettings(entries=str(entries), t=4), seed=seed)
        report = curate(model, units, str(tmp_path / "out"), SCORER, settings)
        written = [pair["txt"] for pair in read_shards(str(tmp_path / "out")).values()]
        assert report["entries"]["red"] == {"before": 4, "after": 4} and report["entries"]["blue"]["before"] == 7
        kept_blues.append(written.count("a blue square"))
        assert report["entries"]["blue"]["after"] == kept_blues[-1]
        assert written.count("a red square") == 4 and len(written) == 4 + kept_blues[-1]  # unmatched: dropped
    assert np.mean(kept_blues) == pytest.approx(4.0, abs=0.75)  # binomial(7, 4/7): mean 4, sd of the mean 0.24
    assert len(set(kept_blues)) > 1
    settings = CurationSettings(balance=BalanceSettings(entries=str(entries), t=4, keep_unmatched=True))
    report = curate(model, units, str(tmp_path / "out"), SCORER, settings)
    assert report["counts"]["after_balance"] == 20 - 7 + report["entries"]["blue"]["after"]


def test_a_rerun_with_the_scores_kept_calls_the_model_on_nothing(tmp_path, noisy_tars):
    _, units = noisy_tars
    model = tiny_clip_model()
    calls = []
    encode = model.encode_pixels
    model.encode_pixels = lambda pixels: calls.append(len(pixels)) or encode(pixels)
    out = tmp_path / "out"
    first = curate(model, units, str(out), SCORER, CurationSettings(keep_fraction=0.6, batch_size=4))
    assert sum(calls) == 20
    for path in glob.glob(str(out / "*")):
        if not path.endswith("scores"):
            os.remove(path)
    calls.clear()
    again = curate(model, units, str(out), SCORER, CurationSettings(keep_fraction=0.6, batch_size=4))
    assert calls == [] and again["counts"] == first["counts"] and len(read_shards(str(out))) == 12
    scores = sorted(glob.glob(str(out / "scores" / "*.pt")))
    os.remove(scores[0])  # one unit's scores lost, as if the run was killed before writing them
    curate(model, units, str(out), SCORER, CurationSettings(keep_fraction=0.6, batch_size=4))
    assert 0 < sum(calls) < 20
    with pytest.raises(ValueError, match="delete"):
        curate(model, units, str(out), "another model", CurationSettings())


def test_ranks_scoring_every_world_th_unit_give_what_one_process_gives(tmp_path, noisy_tars):
    _, units = noisy_tars
    model, settings = tiny_clip_model(), CurationSettings(keep_fraction=0.6)
    single = curate(model, units, str(tmp_path / "single"), SCORER, settings)
    shares = [score_share(model, units, str(tmp_path / "split"), SCORER, settings, rank, 2) for rank in (0, 1)]
    assert shares == [2, 1]  # units 0 and 2, then unit 1
    split = select_and_write(units, str(tmp_path / "split"), SCORER, settings)
    assert split["counts"] == single["counts"]
    assert read_shards(str(tmp_path / "split")) == read_shards(str(tmp_path / "single"))


def test_a_csv_source_is_curated_as_its_tar_twin(tmp_path, noisy_tars):
    samples, tar_units = noisy_tars
    model = tiny_clip_model()
    os.makedirs(tmp_path / "images")
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["filepath", "title"])
        for sample in samples:
            sample.image.save(tmp_path / "images" / f"{sample.key}.png")
            writer.writerow([f"images/{sample.key}.png", sample.caption])
    csv_units = expand_shards(str(tmp_path / "pairs.csv"), "data.train", rows_per_unit=7)
    assert len(csv_units) == 3
    from_csv = curate(model, csv_units, str(tmp_path / "csv_out"), SCORER, CurationSettings(keep_fraction=0.6))
    curate(model, tar_units, str(tmp_path / "tar_out"), SCORER, CurationSettings(keep_fraction=0.6))
    tar_pairs, csv_pairs = read_shards(str(tmp_path / "tar_out")), read_shards(str(tmp_path / "csv_out"))
    assert from_csv["counts"]["written"] == 12
    assert sorted((p["txt"], round(p["json"]["clip_score"], 5)) for p in csv_pairs.values()) == sorted(
        (p["txt"], round(p["json"]["clip_score"], 5)) for p in tar_pairs.values()
    )


def test_bad_samples_are_skipped_and_counted_in_the_report(tmp_path):
    samples = noise_samples(6)
    samples[1] = Sample(samples[1].key, b"\xff\xd8\xff\xe0 truncated", samples[1].caption, {}, "jpg")
    samples[4] = Sample(samples[4].key, samples[4].image, "   ", {}, "png")
    write_shards(str(tmp_path / "shards"), "train", samples, samples_per_shard=6)
    units = expand_shards(str(tmp_path / "shards" / "train-00000.tar"), "data.train")
    report = curate(tiny_clip_model(), units, str(tmp_path / "out"), SCORER, CurationSettings())
    bad = {kind: n for kind, n in report["bad_samples"].items() if n}
    assert bad == {"corrupt_image": 1, "empty_caption": 1} and report["counts"]["scored"] == 4
    assert "corrupt_image 1" in (tmp_path / "out" / "report.md").read_text()


def test_a_misspelt_curate_key_is_refused_with_a_suggestion():
    message = unknown_key_message("curate", ["checkpoint=x", "data.train=y", "out=z", "curate.keep_fractoin=0.5"])
    assert message is not None and "curate.keep_fraction" in message


@pytest.mark.slow
def test_the_command_curates_colour_squares_with_a_trained_checkpoint(tmp_path, trained_checkpoint):
    from clip_train.curate import run

    write_shards(str(tmp_path / "shards"), "train", colour_samples(30), samples_per_shard=10)
    overrides = [f"checkpoint={trained_checkpoint}", f"data.train='{tmp_path}/shards/train-{{00000..00002}}.tar'",
                 f"out={tmp_path}/out", "curate.keep_fraction=0.6", "curate.dedup_threshold=0.999",
                 f"paths.output_dir={tmp_path}/run"]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        report = run(compose("curate", overrides=overrides))
    counts = report["counts"]
    assert (counts["scored"], counts["after_score_filter"]) == (30, 18)
    # four colours, each one image drawn again and again: deduplication leaves at most one per colour
    assert 1 <= counts["after_dedup"] <= 4 and counts["written"] == counts["after_dedup"]
    with open(tmp_path / "out" / "report.json") as f:
        assert json.load(f)["counts"] == counts
    assert len(read_shards(str(tmp_path / "out"))) == counts["written"]


@pytest.mark.slow
def test_two_processes_write_the_shards_one_process_writes(tmp_path, trained_checkpoint):
    write_shards(str(tmp_path / "shards"), "train", noise_samples(30), samples_per_shard=7)
    outputs = {}
    for devices in (1, 2):
        command = [sys.executable, "-m", "clip_train.curate", f"checkpoint={trained_checkpoint}",
                   f"data.train='{tmp_path}/shards/train-{{00000..00004}}.tar'", f"out={tmp_path}/out{devices}",
                   "curate.keep_fraction=0.5", f"devices={devices}", "accelerator=cpu",
                   f"hydra.run.dir={tmp_path}/run{devices}"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert done.returncode == 0, done.stderr[-2000:]
        outputs[devices] = read_shards(str(tmp_path / f"out{devices}"))
    assert len(outputs[1]) == 15 and outputs[2] == outputs[1]
    assert len(glob.glob(str(tmp_path / "out2" / "scores" / "*.pt"))) == 5
