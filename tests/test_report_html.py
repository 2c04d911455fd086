"""`tessera report`: the HTML page of a run, rendered in headless Chromium — the screenshot is not blank and every
figure loaded (the page's own onload count, read from the DOM Chromium dumps)."""

import shutil
import subprocess

import pytest
import yaml

from tessera.cli import main

RECIPE = {
    "name": "page", "data": {"name": "digits"}, "model": {"name": "vgg_tiny", "args": {"width": 8}},
    "baseline": {"train": {"epochs": 1, "batch_size": 64}},
    "pruning": {"defaults": {"scheme": "pattern_connectivity", "num_patterns": 4, "keep": 0.5},
                "targets": [{"op": "Conv2d", "kernel": 3}], "admm": {"train": {"epochs": 1, "batch_size": 64}},
                "retrain": {"epochs": 1, "batch_size": 64}},
}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page")
    (tmp / "r.yaml").write_text(yaml.safe_dump(RECIPE | {"output": str(tmp / "runs" / "page")}))
    assert main(["run", str(tmp / "r.yaml"), "--quiet", "--threads", "1", "--no-export"]) == 0
    return tmp / "runs" / "page"


def test_report_command_writes_html_and_markdown(run_dir, capsys):
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # library, kept weights, accuracy, latency
    assert "native (whole network)" in page and "Every graph node" in page
    assert "![kept weights per layer](figures/kept.png)" in (run_dir / "report.md").read_text()
    assert main(["report", str(run_dir.parent)]) == 2  # not a run folder: a one-line error
    assert "not a finished `tessera run` folder" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_chromium(run_dir, tmp_path):
    import matplotlib.image

    url = (run_dir / "report.html").as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "<title>figures 4/4</title>" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1200,1600", f"--screenshot={shot}", url], capture_output=True,
                   timeout=120)
    img = matplotlib.image.imread(shot)[..., :3]
    ink = (img.mean(-1) < 0.9).mean()  # share of pixels that are not (near) white
    assert 0.03 < ink < 0.9 and img.std() > 0.1
