"""deepscope report: the page of each kind of run, and the data behind every chart equal to the run's records.

The same checks run twice: on the specs written into the HTML (always), and in headless Chromium on what the
page's Vega views actually plotted (when /usr/bin/chromium and Playwright are present), from file://, with
every request that would leave the file blocked and counted, and the console watched for errors.
"""
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import deepscope
from deepscope.errors import DataError
from deepscope.report import source, write_report
from deepscope.report.panels import correlations
from deepscope.train import predict_logits
from deepscope.cli import main
from report_runs import CONV, offline, train_run

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("DEEPSCOPE_SCREENSHOTS")    # a folder: keep the browser tests' screenshots there


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _speed_expected(run_path, key):
    """{(step, layer name): value} from speed.jsonl, averaged over seeds (an experiment's records)."""
    values = {}
    for r in _jsonl(run_path / "speed.jsonl"):
        for name, entry in r["layers"].items():
            if entry.get(key) is not None:
                values.setdefault((r["step"], name), []).append(entry[key])
    return {k: float(np.mean(v)) if len(v) > 1 else v[0] for k, v in values.items()}


def _curves_expected(run_path, fields):
    return {(r["epoch"], split): r[key] for r in _jsonl(run_path / "metrics.jsonl") for key, split in fields
            if r.get(key) is not None}


ACC = (("train_acc", "train"), ("val_acc", "validation"), ("test_acc", "test"))
LOSS = (("train_loss", "train"), ("val_loss", "validation"))


def check_panels(run_path, kind, data_of):
    """Compare every chart's plotted rows (``data_of(panel id, data name)``) with the run's own records."""
    if kind in ("train", "char-lm"):
        rows = data_of("r0-loss", "loss")
        assert {(r["epoch"], r["split"]): r["value"] for r in rows} == _curves_expected(run_path, LOSS)
    if kind == "train":
        rows = data_of("r0-accuracy", "accuracy")
        assert {(r["epoch"], r["split"]): r["value"] for r in rows} == _curves_expected(run_path, ACC)
    if kind in ("train", "scope-speed", "char-lm"):
        first = _jsonl(run_path / "speed.jsonl")[0]["layers"]
        for key in ("bias_grad", "update_ratio"):
            want = _speed_expected(run_path, key)
            for suffix, name in (("heatmap", f"{key}_heat"), ("lines", f"{key}_lines")):
                rows = data_of(f"r0-{key}-{suffix}", name)
                got = {(r["step"], r["layer"].split(":")[0]): r[key] for r in rows}
                assert got == pytest.approx(want, rel=1e-12)
                # depth order: the layers appear in forward order
                assert list(dict.fromkeys(r["layer"].split(":")[0] for r in rows)) == \
                    [name for name, entry in first.items() if entry.get(key) is not None]
    if kind == "train":
        health = data_of("r0-health", "health")
        want = {(s, n): v for (s, n), v in _speed_expected(run_path, "dead").items()}
        assert {(r["step"], r["layer"].split(":")[0]): r["value"] for r in health} == want
        # the filters: trained = the saved model's first layer; change = trained - rebuilt initial weights
        rows = data_of("r0-filters", "filters")
        w = deepscope.backend.to_numpy(deepscope.load(run_path)[0].weight.data).mean(axis=1)
        got = np.zeros_like(w)
        for r in rows:
            got[r["filter"], r["row"], r["col"]] = r["trained"]
            assert r["change"] == pytest.approx(r["trained"] - r["init"], abs=1e-12)
        np.testing.assert_array_equal(got, w)
        # the confusion matrix counts the saved model's predictions on the test set
        rows = data_of("r0-confusion", "confusion")
        run = source.open_run(run_path)
        X, y, classes, _ = source.test_set(run)
        pred = predict_logits(deepscope.load(run_path), X).argmax(axis=1)
        assert sum(r["count"] for r in rows) == len(y)
        assert {(r["true"], r["predicted"]): r["count"] for r in rows if r["count"]} == \
            {(classes[t], classes[p]): int(((y == t) & (pred == p)).sum())
             for t in range(len(classes)) for p in range(len(classes)) if ((y == t) & (pred == p)).any()}
    if kind == "sweep":
        trials = json.loads((run_path / "trials.json").read_text())
        rows = data_of("r0-by-option", "by_option")
        assert sorted((r["value"], r["metric"]) for r in rows) == sorted((str(t["options"]["eta"]), t["val_acc"])
                                                                         for t in trials)
        rows = data_of("r0-trial-curves", "trial_curves")
        want = {(t["trial"], r["epoch"]): r["val_acc"] for t in trials
                for r in _jsonl(run_path / t["trial"] / "metrics.jsonl")}
        assert {(r["run"], r["epoch"]): r["value"] for r in rows} == want


PANELS = {  # the panels each kind of report must have
    "train": ["r0-config", "r0-accuracy", "r0-loss", "r0-bias_grad-heatmap", "r0-bias_grad-lines",
              "r0-update_ratio-heatmap", "r0-update_ratio-lines", "r0-health", "r0-filters", "r0-confusion",
              "r0-errors"],
    "char-lm": ["r0-config", "r0-loss", "r0-bits", "r0-bias_grad-heatmap", "r0-update_ratio-heatmap", "r0-sample"],
    "scope-speed": ["r0-config", "r0-bias_grad-heatmap", "r0-bias_grad-lines"],
    "sweep": ["r0-config", "r0-trials", "r0-by-option", "r0-trial-curves"],
}
RUN_FIXTURES = {"train": "conv_run", "char-lm": "text_run", "scope-speed": "scope_run", "sweep": "sweep_run"}


def _specs(html: str) -> dict:
    text = re.search(r'<script type="application/json" id="deepscope-specs">(.*?)</script>', html, re.S).group(1)
    return json.loads(text)


@pytest.mark.parametrize("kind", list(RUN_FIXTURES))
def test_report_data_equals_the_runs_records(kind, request, tmp_path):
    run_path = request.getfixturevalue(RUN_FIXTURES[kind])
    out = write_report([run_path], tmp_path / "report.html")
    html = out.read_text(encoding="utf-8")
    assert source.open_run(run_path).kind == kind
    for pid in PANELS[kind]:
        assert f'id="{pid}"' in html, pid
    specs = _specs(html)

    def data_of(pid, name):
        assert specs[pid]["data"]["name"] == name
        return specs[pid]["data"]["values"]
    check_panels(run_path, kind, data_of)
    assert len(html) < 3_000_000
    assert "http://" not in html.replace("http://www.w3.org/", "")   # no resource to fetch (SVG namespaces only)


def test_text_report_shows_the_sample_and_bits(text_run, tmp_path):
    html = write_report([text_run], tmp_path / "r.html").read_text(encoding="utf-8")
    sample = (text_run / "sample.txt").read_text(encoding="utf-8")
    import html as _html
    assert _html.escape(sample) in html
    bits = {r["epoch"]: r["value"] for r in _specs(html)["r0-bits"]["data"]["values"]}
    assert bits == {r["epoch"]: r["val_bpc"] for r in _jsonl(text_run / "metrics.jsonl")}


def test_filters_change_is_trained_minus_the_true_initial_weights(tmp_path):
    """The initial filters the report rebuilds from a run's seed are the weights `deepscope train` started from:
    with a learning rate of 1e-12 the trained filters equal them to rounding."""
    run = tmp_path / "still"
    with offline():
        assert main(["train", "--arch", CONV, "--train-size", "64", "--epochs", "1", "--lr", "1e-12", "--momentum",
                     "0", "--lmbda", "0", "--seed", "3", "--quiet", "--out", str(run)]) == 0
    trained = source.first_layer_filters(deepscope.load(run))
    initial = source.first_layer_filters(source.initial_model(source.open_run(run)))
    np.testing.assert_allclose(trained, initial, atol=1e-6)
    other = deepscope.arch.build(CONV, init="he")   # another seed's draw
    assert np.abs(source.first_layer_filters(other) - initial).max() > 0.05


def test_live_report_follows_training_and_ends_as_a_full_page(tmp_path):
    """During training the run's report.html reloads itself and holds every finished epoch; at the end it is
    the full page (no reloading, confusion matrix and errors)."""
    seen = []

    class Look:   # runs after LiveReport in fit's callbacks
        def on_record(self, epoch, record):
            html = (tmp_path / "live" / "report.html").read_text(encoding="utf-8")
            seen.append(epoch)
            assert '<meta http-equiv="refresh"' in html and 'id="r0-confusion"' not in html
            epochs = {r["epoch"] for r in _specs(html)["r0-accuracy"]["data"]["values"]}
            assert epochs == set(range(1, epoch + 1))
    train_run(tmp_path / "live", epochs=2, callbacks=[Look()])
    assert seen == [1, 2]
    html = (tmp_path / "live" / "report.html").read_text(encoding="utf-8")
    assert "http-equiv" not in html and 'id="r0-confusion"' in html and 'id="r0-errors"' in html


def test_several_runs_side_by_side(conv_run, text_run, tmp_path):
    html = write_report([conv_run, text_run], tmp_path / "both.html").read_text(encoding="utf-8")
    specs = _specs(html)
    assert {r["run"] for r in specs["all-validation"]["data"]["values"]} == {"conv", "text"}
    assert 'id="r0-filters"' in html and 'id="r1-sample"' in html


def test_report_never_overwrites_a_file_it_did_not_write(conv_run, tmp_path):
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    with pytest.raises(DataError, match="not a deepscope report"):
        write_report([conv_run], mine)
    assert mine.read_text() == "<p>my notes</p>"
    out = write_report([conv_run], tmp_path / "again.html")
    assert write_report([conv_run], out) == out           # its own report: replaced
    with pytest.raises(DataError, match="not a run folder"):
        write_report([tmp_path], tmp_path / "x.html")


def test_reproduce_command_names_the_runs_options(conv_run):
    cmd = source.open_run(conv_run).command
    assert cmd.startswith("deepscope train --arch conv6x5-maxpool2-fc20-softmax10:relu --epochs 2 --batch-size 16")
    assert "--data-source" not in cmd and "--n-train" not in cmd


# -- in a real browser ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: browser tests skipped (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright not installed (the test extra)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.mark.parametrize("kind", list(RUN_FIXTURES))
def test_report_in_chromium(kind, request, browser, tmp_path):
    run_path = request.getfixturevalue(RUN_FIXTURES[kind])
    out = write_report([run_path], tmp_path / f"{kind}.html")
    url = out.resolve().as_uri()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    problems, outside = [], []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    def route(r):
        if r.request.url == url or r.request.url.startswith("data:"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()
    page.route("**/*", route)
    page.goto(url)
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=60_000)
    assert problems == [] and outside == []
    for pid in PANELS[kind]:
        assert page.locator(f"#{pid}").is_visible(), pid
        if page.locator(f"#{pid} .chart").count():
            assert page.locator(f"#{pid} .chart canvas").count() >= 1, pid   # drawn, not only present
    check_panels(run_path, kind, lambda pid, name: page.evaluate(
        "([id, name]) => window.deepscopeViews[id].data(name)", [pid, name]))
    if kind == "sweep":   # the trials table sorts on a click
        header = page.locator("#r0-trials th", has_text="val_acc")
        header.click()
        col = [c.strip() for c in page.locator("#r0-trials th").all_inner_texts()].index("val_acc")
        values = [float(v) for v in page.locator(f"#r0-trials tbody tr td:nth-child({col + 1})").all_inner_texts()]
        assert values == sorted(values)
    shot = tmp_path / f"report_{kind}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(SCREENSHOTS) / shot.name)
    page.close()


def test_embedded_images_hold_the_pixels():
    from io import BytesIO

    from PIL import Image

    from deepscope.figures import image_png
    x = np.linspace(0, 1, 28 * 28).reshape(28, 28)
    back = np.asarray(Image.open(BytesIO(image_png(x))))
    np.testing.assert_array_equal(back, np.round(255 * (1 - x)).astype(np.uint8))   # dark = ink, as in MNIST plots


def test_report_command(conv_run, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(conv_run), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out and 'id="r0-filters"' in out.read_text(encoding="utf-8")
    assert main(["report", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.strip() == f"deepscope: error: no such run folder: {tmp_path / 'missing'}"


def test_show_filters_draws_initial_trained_and_change(conv_run, tmp_path, monkeypatch):
    import deepscope.cli.show as show
    assert main(["show", "filters", str(conv_run), "--out", str(tmp_path / "f.png")]) == 0   # the real figure
    assert (tmp_path / "f.png").stat().st_size > 0
    seen = {}
    monkeypatch.setattr(show, "plot_filters", lambda filters, path, title, initial=None:
                        seen.update(filters=filters, initial=initial, title=title) or Path(path))
    assert main(["show", "filters", str(conv_run), "--out", str(tmp_path / "g.png")]) == 0
    np.testing.assert_array_equal(seen["filters"], source.first_layer_filters(deepscope.load(conv_run)))
    initial = source.first_layer_filters(source.initial_model(source.open_run(conv_run)))
    np.testing.assert_array_equal(seen["initial"], initial)
    r = correlations(seen["filters"], initial)
    assert f"correlates {r.min():.2f}–{r.max():.2f}" in seen["title"]
