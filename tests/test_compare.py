"""``vidlight compare``: the page's figures, and the page itself in a real headless browser."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from vidlight.cli import main
from vidlight.compare import compare, sample_indices

from media import gradient, read_video, write_video
from needs import unavailable

N = 12


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, Path, list]:
    """A dark clip and its comparison page: SCI at strength auto and at 1."""
    folder = tmp_path_factory.mktemp("compare")
    frames = [(gradient(160, 96, i) * 0.2).astype(np.uint8) for i in range(N)]
    clip = write_video(folder / "dark.mp4", frames, options={"crf": "0"}).path
    out = folder / "report.html"
    variants = compare(clip, out, ["sci"], strengths=["auto", 1.0], frames=N, samples=3, log=lambda _: None)
    return clip, out, variants


def test_samples_spread_over_the_frames():
    assert sample_indices(12, 3) == [2, 6, 10]
    assert sample_indices(2, 5) == [1] or sample_indices(2, 5) == [0, 1]
    assert sample_indices(1, 4) == [0]


def test_the_page_holds_what_was_measured(page):
    clip, out, variants = page
    text = out.read_text()
    assert [v.label for v in variants] == ["input", "sci, strength auto", "sci, strength 1.0"]
    # The input's luma, computed here from the decoded file (BT.601 weights).
    decoded = read_video(clip).frames
    expected = [float((f.astype(np.float64) @ [0.299, 0.587, 0.114]).mean()) for f in decoded]
    np.testing.assert_allclose(variants[0].lumas, expected, atol=0.6)
    assert all(len(v.lumas) == N for v in variants)
    assert np.mean(variants[2].lumas) > np.mean(variants[0].lumas) + 20  # strength 1 brightens
    assert all(v.seconds and v.seconds > 0 for v in variants[1:])
    # Self-contained: every picture is embedded, nothing is fetched.
    assert not re.search(r'src="(?!data:)', text) and "http://" not in text and "https://" not in text
    assert text.count('class="slider"') == 3 * 2 and text.count("data:image/jpeg;base64,") == 3 * 2 * 2
    assert text.count("<svg") == 2 and f"{np.mean(variants[2].lumas):.1f}" in text


def test_a_model_is_loaded_once_and_warmed_up_before_its_clock(tmp_path, page, monkeypatch):
    """Its strengths share one loaded model, and each variant's timed pass follows an untimed
    frame, so loading and first-call costs do not fall on whichever variant came first."""
    import vidlight.pipeline.enhancer as enhancer
    import vidlight.pipeline.iterate as iterate

    clip = page[0]
    loads, passes = [], []
    real_load, real_frames = enhancer.load_engine_model, iterate.enhanced_frames
    monkeypatch.setattr(enhancer, "load_engine_model", lambda *a, **k: loads.append(1) or real_load(*a, **k))

    def frames(source, **options):
        passes.append(options["settings"].run.max_frames)
        return real_frames(source, **options)

    monkeypatch.setattr(iterate, "enhanced_frames", frames)
    compare(clip, tmp_path / "p.html", ["sci"], strengths=["auto", 1.0], frames=N, samples=2, log=lambda _: None)
    assert len(loads) == 1 and passes == [1, N, 1, N]


def test_cli_compare_names_models_in_any_case_and_refuses_typos(tmp_path, page):
    clip, _, _ = page
    result = CliRunner().invoke(
        main,
        ["compare", str(clip), "--models", "SCI", "--frames", "4", "--samples", "1", "--out", str(tmp_path / "c.html")],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.html").exists() and not list(tmp_path.glob(".*partial"))
    typo = CliRunner().invoke(
        main, ["compare", str(clip), "--models", "sci,zero-dec", "--out", str(tmp_path / "d.html")]
    )
    assert typo.exit_code == 2 and "did you mean zero-dce" in typo.output
    model = CliRunner().invoke(main, ["compare", str(clip), "--models", "sci", "-m", "zero-dce"])
    assert model.exit_code == 2 and "--models NAME,NAME" in model.output
    strength = CliRunner().invoke(main, ["compare", str(clip), "--strength", "1"])
    assert strength.exit_code == 2 and "--strengths S,S" in strength.output
    shown = CliRunner().invoke(main, ["compare", "--help"]).output
    assert "--models" in shown and "--strengths" in shown  # and not the flags it refuses
    assert "-m, --model" not in shown and "--strength " not in shown


def test_a_model_without_its_weights_is_left_out_of_the_comparison(tmp_path, page):
    """Offline (as every test runs) Zero-DCE++'s weights cannot be downloaded: the page is
    written with the models that could run, and the one left out is named with the reason.
    With no model left, the weights error is the run's."""
    clip, _, _ = page
    out = tmp_path / "c.html"
    args = ["compare", str(clip), "--frames", "4", "--samples", "1", "--out", str(out)]
    result = CliRunner().invoke(main, args)  # the default models: sci,zero-dce++
    assert result.exit_code == 0, result.output
    assert "zero-dce++: left out:" in result.output and "offline" in result.output
    page_text = out.read_text()
    assert "sci" in page_text and "<td>zero-dce++</td>" not in page_text  # no row for it
    assert '<p class="left-out">zero-dce++: left out: ' in page_text  # the page says why it is missing
    none = CliRunner().invoke(main, [*args, "--models", "zero-dce++"])
    assert none.exit_code == 1 and "offline" in none.output
    # a model option is checked against the compared model's options, not the default's
    option = CliRunner().invoke(main, [*args, "--models", "zero-dce++", "-o", "scale_factor=12"])
    assert option.exit_code == 1 and "offline" in option.output and "has no option" not in option.output
    # a checkpoint the user named that does not load is an error, not a model left out
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    named = CliRunner().invoke(main, [*args, "--models", "sci,zero-dce++", "-w", str(bad)])
    assert named.exit_code == 1 and "left out" not in named.output


def chromium() -> tuple[str, str]:
    """Chromium and its driver from the system packages; missing: skip here, fail under CI."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        message = "needs Chromium and its driver: apt-get install chromium chromium-driver"
        unavailable(message)
    return browser, driver


@pytest.mark.slow
def test_the_page_in_a_headless_browser(page, tmp_path):
    """It opens, every picture loads, a slider moves the split, and a screenshot shows the
    input on the left of the split and the brighter output on its right."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium()
    _, out, _ = page
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(argument)
    options.binary_location = browser
    web = webdriver.Chrome(service=Service(driver), options=options)
    try:
        web.get(out.as_uri())
        assert web.execute_script("return [...document.images].every(i => i.complete && i.naturalWidth > 0)")
        slider = web.find_elements("css selector", ".slider[data-model='sci, strength 1.0']")[0]
        web.execute_script("arguments[0].scrollIntoView()", slider)
        after = slider.find_element("css selector", "img.after")
        assert after.value_of_css_property("clip-path") == "inset(0px 0px 0px 50%)"

        def columns_at(split: int) -> np.ndarray:
            web.execute_script(
                "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))",
                slider.find_element("css selector", "input"),
                split,
            )
            assert after.value_of_css_property("clip-path") == f"inset(0px 0px 0px {split}%)"
            shot = cv2.imdecode(np.frombuffer(slider.screenshot_as_png, np.uint8), cv2.IMREAD_GRAYSCALE)
            (tmp_path / f"split{split}.png").write_bytes(slider.screenshot_as_png)
            return shot[: shot.shape[0] * 2 // 3].mean(axis=0)  # above the range control

        at20, at80 = columns_at(20), columns_at(80)
        w = len(at20)
        middle = slice(int(0.3 * w), int(0.7 * w))
        # Split at 20 %: the middle shows the output; at 80 %: the input, much darker.
        assert at20[middle].mean() > at80[middle].mean() + 20, (at20[middle].mean(), at80[middle].mean())
        assert abs(at20[: int(0.15 * w)].mean() - at80[: int(0.15 * w)].mean()) < 3  # the input stays put
    finally:
        web.quit()
