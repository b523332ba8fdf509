"""An `ImageTextIndex` in clip-retrieval's layout, and the README's FAISS example run as written."""

import numpy as np
import pytest
import torch
from helpers import small_encoder
from PIL import Image
from readme_code import python_code, run_in_finished_run

from clip_train.data.tokenizer import train_caption_tokenizer
from clip_train.index import ImageTextIndex
from clip_train.inference import ClipModel
from clip_train.recipe import Recipe

pyarrow_parquet = pytest.importorskip("pyarrow.parquet", reason="clip-retrieval's metadata is parquet: pip install pyarrow")

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


@pytest.fixture
def index() -> ImageTextIndex:
    """Six noise images, named, in the index of a random small model (images only: no tokenizer use)."""
    model = ClipModel(
        small_encoder(),
        train_caption_tokenizer(["a red square"], 300),
        Recipe(model={}, image_mean=CLIP_MEAN, image_std=CLIP_STD),
    )
    index = ImageTextIndex(model)
    index.add(noise_images(6), names=[f"photos/{i}.png" for i in range(6)])
    return index


def noise_images(count: int) -> list[Image.Image]:
    """Distinct images, so rankings have no ties to order either way."""
    generator = np.random.default_rng(0)
    return [Image.fromarray(generator.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(count)]


@pytest.mark.parametrize("dtype, tolerance", [("float16", 1e-3), ("float32", 0.0)])
def test_clip_retrieval_layout_holds_the_embeddings_and_paths(index, tmp_path, dtype, tolerance):
    index.save_clip_retrieval(str(tmp_path), dtype=dtype)
    embeddings = np.load(tmp_path / "img_emb" / "img_emb_0.npy")
    assert embeddings.dtype == np.dtype(dtype) and embeddings.shape == (6, 16)
    torch.testing.assert_close(torch.from_numpy(embeddings.astype(np.float32)), index.embeddings, rtol=0, atol=tolerance)
    metadata = pyarrow_parquet.read_table(tmp_path / "metadata" / "metadata_0.parquet")
    assert metadata.column_names == ["image_path"] and metadata.column("image_path").to_pylist() == index.paths


def test_faiss_on_the_exported_embeddings_ranks_as_the_index(index, tmp_path):
    faiss = pytest.importorskip("faiss", reason="the FAISS example needs faiss: pip install faiss-cpu")
    index.save_clip_retrieval(str(tmp_path), dtype="float32")
    embeddings = np.load(tmp_path / "img_emb" / "img_emb_0.npy")
    faiss_index = faiss.IndexFlatIP(embeddings.shape[1])
    faiss_index.add(embeddings)
    query = noise_images(5)[4]
    scores, rows = faiss_index.search(index.model.encode_image([query]).numpy(), 6)
    expected = index.search_image(query, k=6)
    assert [index.paths[row] for row in rows[0]] == [path for path, _ in expected]
    np.testing.assert_allclose(scores[0], [cosine for _, cosine in expected], atol=1e-6)


def test_readme_faiss_example_runs_as_written(trained_checkpoint, tmp_path, monkeypatch, capsys):
    """The README's "Using a trained model" code, then its FAISS example, in a folder holding a finished run."""
    pytest.importorskip("faiss", reason="the README's FAISS example needs faiss: pip install faiss-cpu")
    code = python_code("## Using a trained model", "### FAISS and clip-retrieval")
    namespace = run_in_finished_run(code, trained_checkpoint, tmp_path, monkeypatch)
    index, rows, scores = namespace["index"], namespace["rows"], namespace["scores"]
    query = namespace["model"].encode_text(["a red circle"])[0]
    exact = (index.embeddings[torch.from_numpy(rows[0])] @ query).numpy()  # float32 cosines of the rows FAISS found
    np.testing.assert_allclose(scores[0], exact, atol=2e-3)  # the rows were stored in float16
    np.testing.assert_allclose(scores[0], [cosine for _, cosine in index.search_text("a red circle", k=3)], atol=2e-3)
    assert (tmp_path / "photo_embeddings" / "metadata" / "metadata_0.parquet").is_file()
    assert "photos/" in capsys.readouterr().out
