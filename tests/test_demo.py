"""The web demo: its model-side work directly, and end to end in headless Chromium (upload an image,
get the depth image back, switch the colour map, download the 16-bit PNG)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import urllib.request

import numpy as np
import pytest
from conftest import random_image
from PIL import Image

from apdepth.image_utils import colorize_depth, depth_to_uint16

CHROMIUM = os.environ.get("APDEPTH_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("APDEPTH_CHROMEDRIVER", "/usr/bin/chromedriver")
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1600")


@pytest.fixture()
def pipe(embedded_pipe):
    """The web demo runs the embedded demo model, as `apdepth serve` does without --model."""
    return embedded_pipe


def test_demo_model_outputs(pipe, tmp_path):
    pytest.importorskip("gradio", reason="the demo needs Gradio: pip install 'apdepth[demo]'")
    from apdepth.apps.web_demo import DemoModel

    random_image(26, 34, seed=7).save(tmp_path / "room.png")
    model = DemoModel(pipe, workdir=tmp_path / "work")
    colored, depth, files, message = model.predict_image(str(tmp_path / "room.png"), "viridis")
    expected = pipe(Image.open(tmp_path / "room.png")).depth[0]
    np.testing.assert_allclose(depth, expected, atol=1e-6)
    np.testing.assert_array_equal(colored, np.asarray(colorize_depth(expected, "viridis")))
    assert [os.path.basename(f) for f in files] == ["room_depth.png", "room_depth.npy", "room_points.ply"]
    np.testing.assert_array_equal(np.asarray(Image.open(files[0])), depth_to_uint16(depth))
    np.testing.assert_allclose(np.load(files[1]), depth)
    assert open(files[2], "rb").read(3) == b"ply" and "26" in message
    # old request folders are cleaned up on the next request
    model.keep_seconds = 0.0
    os.utime(os.path.dirname(files[0]), (0, 0))
    model.predict_image(str(tmp_path / "room.png"), "viridis")
    assert not os.path.exists(files[0]) and len(os.listdir(tmp_path / "work")) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (apdepth[dev])")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)) and not shutil.which(path):
            pytest.skip(f"{path} not found: install Debian's {package} (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    except Exception as e:  # noqa: BLE001 - a browser that cannot start here is a skip, with the reason
        pytest.skip(f"headless Chromium did not start: {type(e).__name__}: {e}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_web_demo_in_headless_chromium(pipe, browser, tmp_path):
    pytest.importorskip("gradio", reason="the demo needs Gradio: pip install 'apdepth[demo]'")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from apdepth.apps.web_demo import launch

    photo = tmp_path / "photo.png"
    random_image(40, 56, seed=11).save(photo)
    expected = pipe(Image.open(photo)).depth[0]  # [40, 56]
    demo = launch(pipe, port=free_port(), block=False, workdir=tmp_path / "work")
    try:
        wait = WebDriverWait(browser, 40)
        browser.get(demo.local_url)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#image_input input[type=file]"))
        upload.send_keys(str(photo))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#image_input img"))  # the upload is shown
        browser.find_element(By.ID, "image_button").click()

        def depth_image(colormap):
            """Wait until the depth image shown equals the expected colouring; return it."""
            target = np.asarray(colorize_depth(expected, colormap))
            seen = {}

            def ready(d):
                imgs = d.find_elements(By.CSS_SELECTOR, "#depth_output img")
                src = imgs[0].get_attribute("src") if imgs else None
                if not src or src == seen.get("src"):
                    return False
                seen["src"] = src
                shown = np.asarray(Image.open(io.BytesIO(fetch(src))).convert("RGB"))
                seen["image"] = shown
                return shown.shape == target.shape and np.array_equal(shown, target)

            try:
                wait.until(ready)
            except Exception:
                shown = seen.get("image")
                raise AssertionError(f"depth image for {colormap} never matched; last shown "
                                     f"{None if shown is None else shown.shape}, expected {target.shape}") from None
            return seen["image"]

        shown = depth_image("Spectral")
        assert shown.shape == (40, 56, 3) and len(np.unique(shown.reshape(-1, 3), axis=0)) > 10
        info = wait.until(lambda d: d.find_element(By.ID, "image_info").text)
        assert "56x40 px" in info

        links = {os.path.basename(a.get_attribute("href")): a.get_attribute("href")
                 for a in browser.find_elements(By.CSS_SELECTOR, "#image_files a")}
        assert set(links) == {"photo_depth.png", "photo_depth.npy", "photo_points.ply"}
        png16 = np.asarray(Image.open(io.BytesIO(fetch(links["photo_depth.png"]))))
        np.testing.assert_array_equal(png16, depth_to_uint16(expected))
        assert fetch(links["photo_points.ply"]).startswith(b"ply\nformat binary_little_endian 1.0\n")

        # another colour map recolours the same depth without running the model again
        box = browser.find_element(By.CSS_SELECTOR, "#colormap input")
        box.click()
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("viridis")
        box.send_keys(Keys.ENTER)
        depth_image("viridis")
    finally:
        demo.close()


def test_demo_model_video(pipe, tmp_path):
    pytest.importorskip("gradio", reason="the demo needs Gradio: pip install 'apdepth[demo]'")
    pytest.importorskip("av", reason="video needs PyAV: pip install 'apdepth[video]'")
    import json
    import zipfile

    from test_video import decode, write_video

    from apdepth.apps.web_demo import DemoModel

    write_video(tmp_path / "clip.mp4", n=6)
    model = DemoModel(pipe, workdir=tmp_path / "work", max_video_frames=4)
    sbs, files, message = model.predict_video(str(tmp_path / "clip.mp4"), "magma")
    assert len(decode(sbs)) == 4 and decode(sbs)[0].shape == (48, 128, 3)  # frame limit, input | depth
    assert [os.path.basename(f) for f in files] == ["depth.mp4", "depth_frames_png16.zip", "video.json"]
    assert sorted(zipfile.ZipFile(files[1]).namelist()) == [f"{k:06d}.png" for k in range(4)]
    report = json.loads(open(files[2]).read())
    assert f"{report['flicker_stabilized']:.4f}" in message and "4 frames" in message
