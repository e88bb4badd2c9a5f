import os

import pytest
from huggingface_hub.repocard import metadata_load
from PIL import Image

from modeling.evaluation.reports.cards import (
    RESULTS_END,
    RESULTS_START,
    check_model_card,
    render_model_card,
    results_block,
    write_model_card,
)
from modeling.evaluation.reports.grids import query_grid
from modeling.evaluation.reports.plots import plot_attribute_consistency, plot_comparison
from modeling.evaluation.reports.tables import markdown_table
from modeling.utils.io import atomic_write_text

ROWS = [
    {"model": "dual encoder", "p10": 0.7271, "top1": 0.792, "n": 1404},
    {"model": "colour | histogram", "p10": 0.192, "top1": None, "n": 12050},
    {"model": "random", "p10": 0.049, "top1": 0.047},
]


def _png(path, min_size=(50, 50)):
    assert os.path.getsize(path) > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.mode in ("RGB", "RGBA")
        assert image.width >= min_size[0] and image.height >= min_size[1]
        image.load()
        return image.size


def _no_temp_files(folder):
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


# -- markdown ------------------------------------------------------------------------------------------------------
def test_markdown_table_exact():
    table = markdown_table(ROWS, [("model", "Model"), ("p10", "P@10"), ("top1", "top-1"), ("n", "items")],
                           bold_best=["p10", "top1"])
    assert table == (
        "| Model | P@10 | top-1 | items |\n"
        "|:---|---:|---:|---:|\n"
        "| dual encoder | **0.727** | **0.792** | 1,404 |\n"
        "| colour \\| histogram | 0.192 | – | 12,050 |\n"
        "| random | 0.049 | 0.047 | – |"
    )


def test_markdown_table_digits_ties_and_text_columns():
    rows = [{"name": "a", "x": 0.51, "note": "ok"}, {"name": "b", "x": 0.5149, "note": None}, {"name": "c"}]
    table = markdown_table(rows, [("name", "run"), ("x", "score"), ("note", "note")], digits=2, bold_best=["x"])
    assert table.splitlines() == [
        "| run | score | note |",
        "|:---|---:|---|",
        "| a | **0.51** | ok |",  # 0.51 and 0.5149 look the same at 2 decimals: both are best
        "| b | **0.51** | – |",
        "| c | – | – |",
    ]


def test_markdown_table_rejects_unknown_bold_key():
    with pytest.raises(ValueError, match="not columns"):
        markdown_table(ROWS, [("model", "Model")], bold_best=["p10"])


# -- charts --------------------------------------------------------------------------------------------------------
def test_plot_comparison_with_missing_values(tmp_path):
    path = plot_comparison(ROWS, [("p10", "P@10"), ("top1", "top-1"), ("absent", "never measured")],
                           tmp_path / "sub" / "comparison.png", title="image→image")
    assert path == tmp_path / "sub" / "comparison.png"
    width, height = _png(path, min_size=(300, 200))
    assert width > height  # a landscape chart
    _no_temp_files(path.parent)


def test_plot_comparison_values_above_one_and_negative(tmp_path):
    rows = [{"name": "a", "s": 683.2, "d": -0.1}, {"name": "b", "s": 287, "d": None}]
    _png(plot_comparison(rows, [("s", "seconds"), ("d", "delta")], tmp_path / "c.png", name_key="name"))


def test_plot_comparison_needs_rows(tmp_path):
    with pytest.raises(ValueError):
        plot_comparison([], [("p10", "P@10")], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_plot_attribute_consistency(tmp_path):
    consistency = {
        "text": {"articleType": 0.91, "baseColour": 0.55, "gender": 1.0, "usage": 0.8, "season": None},
        "image": {"articleType": 0.8, "gender": 0.95},
        "composed": {"articleType": 0.7, "changed attribute matches text": 0.42},
    }
    path = plot_attribute_consistency(consistency, tmp_path / "consistency.png", title="attribute consistency")
    _png(path, min_size=(300, 200))
    _no_temp_files(tmp_path)


def test_plot_attribute_consistency_rejects_out_of_range(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plot_attribute_consistency({"text": {"gender": 95.0}}, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


# -- query grid ----------------------------------------------------------------------------------------------------
@pytest.fixture
def photos(tmp_path):
    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200), (30, 160, 30), (240, 240, 240)]):
        path = tmp_path / f"photo{i}.jpg"
        Image.new("RGB", (60, 80), colour).save(path)
        paths.append(path)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    return paths, broken


def test_query_grid_text_image_and_composed(tmp_path, photos):
    paths, broken = photos
    rgba = Image.new("RGBA", (80, 60), (0, 0, 0, 0))
    queries = [
        {"text": "red summer dress for women, light and flowing, with a very long query text " * 3, "image": None,
         "results": [
             {"image": paths[0], "title": "Nike Men Red Round Neck T-shirt with a rather long title",
              "score": 0.81, "vsc": 0.62, "relevant": True},
             {"image": str(tmp_path / "nowhere.jpg"), "title": "missing file", "score": 0.7, "vsc": None,
              "relevant": False},
             {"image": broken, "title": "unreadable file", "score": 0.6, "relevant": None},
             {"image": None, "title": "no image", "score": 0.5},
         ]},
        {"text": None, "image": paths[1],
         "results": [{"image": p, "title": f"item {i}", "score": 0.9 - i / 10, "vsc": 0.3, "relevant": i % 2 == 0}
                     for i, p in enumerate(paths + paths)]},  # more than k results: the first k are drawn
        {"text": "make it navy blue", "image": Image.open(paths[2]),
         "results": [{"image": rgba, "title": "transparent", "score": 0.4, "vsc": 0.1, "relevant": True}]},
    ]
    path = query_grid(queries, tmp_path / "grids" / "grid.png", k=5, thumb=(48, 64))
    width, height = _png(path)
    # one query column and five result columns of 48 px photos; three rows of 64 px photos plus captions
    assert width > 6 * 48 and height > 3 * 64
    _no_temp_files(path.parent)
    with Image.open(path) as image:
        pixels = image.convert("RGB")
        colours = set(pixels.getdata())
    assert (22, 163, 74) in colours and (220, 38, 38) in colours  # relevance frames


def test_query_grid_default_thumb_size(tmp_path, photos):
    paths, _ = photos
    path = query_grid([{"text": "black watch", "results": [{"image": paths[0], "title": "t", "score": 0.5}]}],
                      tmp_path / "g.png", k=3)
    width, height = _png(path)
    assert width > 4 * 96 and height > 128


def test_query_grid_rejects_empty_query(tmp_path):
    with pytest.raises(ValueError, match="neither text nor image"):
        query_grid([{"text": None, "image": None, "results": []}], tmp_path / "g.png")
    with pytest.raises(ValueError):
        query_grid([], tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()


# -- model card ----------------------------------------------------------------------------------------------------
def _metric(task, metric_type, value, name=None):
    return {"task_type": task, "dataset_name": "Myntra catalog, test split", "dataset_type": "fashion-catalog",
            "split": "test", "metric_type": metric_type, "metric_name": name or metric_type, "value": value}


def _card(**overrides):
    kwargs = {
        "model_name": "fashion-dual-encoder",
        "model_path_or_repo": "runs/dual-encoder",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "datasets": ["fashion-catalog"],
        "metrics": [
            _metric("image-to-image retrieval", "precision_at_10", 0.7271234567891234, "P@10 (articleType)"),
            _metric("image-to-image retrieval", "top1", 0.792),
            _metric("text-to-image retrieval", "recall_at_1", 0.261, "R@1"),
            _metric("composed image retrieval", "recall_at_10", 0.928, "R@10"),
        ],
        "results_markdown": markdown_table(ROWS, [("model", ""), ("p10", "P@10")]),
        "command": "python evaluate.py --model runs/dual-encoder --split test",
        "intended_use": "Product search over small e-commerce photos.",
        "training_data": "14,999 Myntra product photos from the Kaggle dataset Fashion Product Images (Small).",
        "evaluation_protocol": "Test split; image→image, title→image and composed queries.",
        "limitations": "Trained on 60x80 studio photos.",
        "usage_snippet": "import modeling\nfrom transformers import AutoModel\nmodel = AutoModel.from_pretrained('x')",
        "pipeline_tag": "feature-extraction",
        "extra_sections": {"Composed search": "A learned combiner."},
    }
    kwargs.update(overrides)
    return render_model_card(**kwargs)


def test_render_model_card_round_trip(tmp_path):
    text = _card()
    assert check_model_card(text)["license"] == "apache-2.0"
    path = write_model_card(tmp_path / "README.md", text)
    assert check_model_card(path)["library_name"] == "transformers"
    assert check_model_card(str(path))["pipeline_tag"] == "feature-extraction"

    metadata = metadata_load(path)
    assert metadata["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert metadata["datasets"] == ["fashion-catalog"]
    (entry,) = metadata["model-index"]
    assert entry["name"] == "fashion-dual-encoder"
    results = entry["results"]
    assert [r["task"]["type"] for r in results] == [
        "image-to-image-retrieval", "text-to-image-retrieval", "composed-image-retrieval"]
    assert results[0]["task"]["name"] == "image-to-image retrieval"
    assert results[0]["dataset"] == {"name": "Myntra catalog, test split", "type": "fashion-catalog", "split": "test"}
    assert results[0]["metrics"][0] == {"type": "precision_at_10", "value": 0.7271234567891234,
                                        "name": "P@10 (articleType)"}
    assert [m["type"] for m in results[0]["metrics"]] == ["precision_at_10", "top1"]
    assert results[2]["metrics"] == [{"type": "recall_at_10", "value": 0.928, "name": "R@10"}]

    body = path.read_text()
    order = ["# fashion-dual-encoder", "## Intended use", "## How to load", "```python\nimport modeling",
             "## Training data", "## Evaluation protocol", "## Results", RESULTS_START,
             "Produced by: `python evaluate.py --model runs/dual-encoder --split test`", RESULTS_END,
             "## Composed search", "## Limitations"]
    positions = [body.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert "licence has not been verified" in body


def test_render_model_card_numpy_values_and_grouping():
    np = pytest.importorskip("numpy")
    text = _card(metrics=[_metric("image-to-image retrieval", "p10", np.float32(0.5)),
                          _metric("image-to-image retrieval", "n", np.int64(1404))])
    (result,) = check_model_card(text)["model-index"][0]["results"]
    assert [m["value"] for m in result["metrics"]] == [0.5, 1404]
    with pytest.raises(ValueError, match="non-finite"):
        _card(metrics=[_metric("image-to-image retrieval", "p10", float("nan"))])
    with pytest.raises(ValueError, match="lacks"):
        _card(metrics=[{"task_type": "image-to-image retrieval", "value": 0.5}])
    with pytest.raises(ValueError, match="at least one metric"):
        _card(metrics=[])


def test_check_model_card_errors(tmp_path):
    text = _card()
    no_license = text.replace("license: apache-2.0\n", "")
    assert no_license != text
    with pytest.raises(ValueError, match="no license"):
        check_model_card(no_license)
    front, body = text.split("model-index:", 1)[0], text.split("\n---\n", 1)[1]
    with pytest.raises(ValueError, match="no model-index"):
        check_model_card(front + "---\n" + body)
    with pytest.raises(ValueError, match="no YAML metadata"):
        check_model_card("# A card\n\nwithout metadata\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        check_model_card("---\nlicense: [unclosed\n---\n# x\n")
    with pytest.raises(ValueError, match="no model card file"):
        check_model_card(tmp_path / "absent.md")


def test_results_block_quotes_a_multi_line_command_as_a_block():
    block = results_block("| a |\n|---|\n| 1 |", "python evaluate.py \\\n    --split test")
    assert "```bash\npython evaluate.py \\\n    --split test\n```" in block  # multi-line command as a block


# -- atomic writes -------------------------------------------------------------------------------------------------
def test_write_model_card_is_atomic(tmp_path):
    path = tmp_path / "model_card.md"
    original = _card()
    write_model_card(path, original)
    _no_temp_files(tmp_path)

    with pytest.raises(TypeError):
        write_model_card(path, None)
    with pytest.raises(TypeError):
        write_model_card(path, original.encode())
    with pytest.raises(ValueError, match="no license"):  # an invalid card never replaces a valid one
        write_model_card(path, original.replace("license: apache-2.0\n", ""))
    assert path.read_text() == original
    _no_temp_files(tmp_path)

    write_model_card(path, "# draft without metadata\n", check=False)
    assert path.read_text() == "# draft without metadata\n"
    _no_temp_files(tmp_path)


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "chart.png"
    path.write_bytes(b"old chart")
    os.chmod(path, 0o640)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        query_grid([{"text": "q", "results": []}], path)
    assert path.read_bytes() == b"old chart"
    _no_temp_files(tmp_path)
    monkeypatch.undo()

    query_grid([{"text": "q", "results": []}], path)
    _png(path)
    assert path.stat().st_mode & 0o777 == 0o640  # permissions of the replaced file are kept
    atomic_write_text(tmp_path / "new.md", "x")
    assert (tmp_path / "new.md").stat().st_mode & 0o777 == 0o644
