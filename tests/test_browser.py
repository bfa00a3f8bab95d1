"""The pages users open, in a real browser (headless Chromium through Selenium; skipped, saying why,
where it is missing): generate's and edit's listening pages opened from a copied folder (every audio
element loads with the clip's duration, every image decodes, no console error), and the app: a seed
typed, Generate clicked, the clip played. Each page's screenshot is saved in the test's folder, and
also in $AUDIODIFF_SCREENSHOTS when set (how docs/screenshots/ are made)."""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from audiodiff import edit as edit_cli
from audiodiff import generate as generate_cli
from browser import AUDIO_STATE, IMAGE_STATE, browser, console_errors, wait_for
from test_pipeline import make_run

ROOT = Path(__file__).resolve().parents[1]


def screenshot(driver, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("AUDIODIFF_SCREENSHOTS"):  # a small copy for the README: 800 px wide, 256 colours
        from PIL import Image

        target = Path(os.environ["AUDIODIFF_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            small = image.convert("RGB").resize((800, round(image.height * 800 / image.width)), Image.LANCZOS)
            small.quantize(colors=256).save(target / path.name, optimize=True)
    return path


@pytest.fixture(scope="module")
def driver():
    d = browser()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run, or $AUDIODIFF_BROWSER_MODEL (a trained model, for the README's screenshots)."""
    if os.environ.get("AUDIODIFF_BROWSER_MODEL"):
        return Path(os.environ["AUDIODIFF_BROWSER_MODEL"])
    return make_run(tmp_path_factory.mktemp("browser") / "run", num_classes=3)


def check_page(driver, page: Path, shots: Path, name: str) -> None:
    driver.get(page.as_uri())
    console_errors(driver)  # whatever loading the page itself logged is checked below, with the media
    audio = wait_for(lambda: (lambda s: s if s and all(a["ready"] >= 1 or a["error"] for a in s) else None)(
        driver.execute_script(AUDIO_STATE)), what=f"the audio of {page}")
    assert all(a["error"] is None for a in audio), audio
    for a in audio:
        file = page.parent / a["src"].rsplit("/", 1)[-1]
        info = sf.info(file)
        assert a["duration"] == pytest.approx(info.frames / info.samplerate, abs=0.02), (a, file)
    images = wait_for(lambda: (lambda s: s if all(i["complete"] for i in s) else None)(
        driver.execute_script(IMAGE_STATE)), what=f"the images of {page}")
    assert images and all(i["width"] > 0 and i["height"] > 0 for i in images), images
    assert console_errors(driver) == []
    assert screenshot(driver, shots, name).stat().st_size > 0


def test_listening_pages_work_from_a_copied_folder(driver, run, tmp_path):
    gen, edited, shots = tmp_path / "gen", tmp_path / "edited", tmp_path / "screens"
    shots.mkdir()
    assert generate_cli.main(["--out", str(gen), "--model", str(run), "--num", "3", "--steps", "3", "--label", "0,1",
                              "--quiet"]) == 0
    assert edit_cli.main(["inpaint", str(gen / "clip_0000.wav"), "--out", str(edited), "--model", str(run),
                          "--region", "0.02:0.08", "--steps", "3", "--resample", "2", "--quiet"]) == 0
    copied = tmp_path / "elsewhere"
    shutil.copytree(gen, copied / "gen")
    shutil.copytree(edited, copied / "edited")
    shutil.rmtree(gen)  # the copies must stand alone: relative links only
    shutil.rmtree(edited)
    check_page(driver, copied / "gen" / "index.html", shots, "listening_page")
    check_page(driver, copied / "edited" / "index.html", shots, "edit_page")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_server(run, tmp_path_factory):
    pytest.importorskip("gradio", reason="the app's extra is not installed (pip install -e '.[app]')")
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "audiodiff.app", "--model", str(run), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: proc.poll() is not None or _answers(url), timeout=120, what=f"the app at {url}")
        assert proc.poll() is None, log.read_text()[-2000:]
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _answers(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


# the waveform player keeps its media element in a shadow root
PLAYER = """
const host = Array.from(document.querySelectorAll('#generated-audio *')).find(e => e.shadowRoot);
const media = host ? host.shadowRoot.querySelector('audio,video') : null;
return media ? {src: media.currentSrc || media.src, duration: media.duration, time: media.currentTime,
                played: media.played.length, error: media.error ? media.error.code : null} : null;
"""


def test_the_app_generates_a_clip_through_the_page_and_plays_it(driver, app_server, tmp_path):
    from selenium.webdriver.common.by import By

    url, _ = app_server
    driver.get(url)
    seed = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#seed input"), what="the seed box")[0]
    seed.clear()
    seed.send_keys("5")
    driver.find_element(By.CSS_SELECTOR, "#generate").click()
    status = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "#generate-status").text, timeout=120,
                      what="the generation")
    assert "seeds 5..5" in status, status
    player = wait_for(lambda: (lambda p: p if p and p["duration"] and p["duration"] > 0 else None)(
        driver.execute_script(PLAYER)), what="the clip in the player")
    assert player["error"] is None and player["duration"] > 0.1, player
    driver.find_element(By.CSS_SELECTOR, "#generated-audio button[aria-label='Play']").click()
    played = wait_for(lambda: (lambda p: p if p and (p["time"] > 0 or p["played"] > 0) else None)(
        driver.execute_script(PLAYER)), what="the clip to play")
    assert played["error"] is None
    assert console_errors(driver) == []
    assert screenshot(driver, tmp_path, "app_generate").stat().st_size > 0


def test_a_mistake_in_the_page_is_a_message_not_a_trace(app_server, tmp_path):
    pytest.importorskip("gradio_client")
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, _ = app_server
    client = Client(url, verbose=False)
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    with pytest.raises(AppError, match="not audio this app can read"):
        client.predict(handle_file(str(bad)), None, "vary", 0.5, 0.3, 0.6, 2.0, 0.2, "none", 3, 0, api_name="/edit")
    good = tmp_path / "tone.wav"
    sf.write(good, [0.1 * ((i // 50) % 2) for i in range(8000)], 22050)
    with pytest.raises(AppError, match="empty"):
        client.predict(handle_file(str(good)), None, "inpaint", 0.5, 0.3, 0.2, 2.0, 0.2, "none", 3, 0, api_name="/edit")
    with pytest.raises(AppError, match=r"1\.5 is greater than maximum value 1\.0"):  # the slider's own check
        client.predict(handle_file(str(good)), None, "vary", 1.5, 0.3, 0.6, 2.0, 0.2, "none", 3, 0, api_name="/edit")
    long = tmp_path / "long.wav"
    sf.write(long, [0.0] * (22050 * 61), 22050)
    generated = client.predict("1", "dpmpp", 3, 1.0, 2.0, 1e9, 0, 0, "griffinlim", 1, api_name="/generate")
    clip = _newest_choice(generated[5])  # the edit tab's picker now offers the generated clip
    edited = client.predict(None, clip, "inpaint", 0.5, 0.02, 0.08, 2.0, 0.2, "none", 3, 0, api_name="/edit")
    assert edited[4].startswith("inpaint: kept_max_abs 0")
    with pytest.raises(AppError, match="up to 60 s"):
        client.predict(handle_file(str(long)), None, "vary", 0.5, 0.3, 0.6, 2.0, 0.2, "none", 3, 0, api_name="/edit")


def _newest_choice(update) -> str:
    """The value of the last choice in a dropdown update sent by the app."""
    choices = update.get("choices") if isinstance(update, dict) else None
    assert choices, update
    last = choices[-1]
    return last[1] if isinstance(last, (list, tuple)) else last


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_four_concurrent_requests_are_answered_in_order_and_memory_comes_back(app_server):
    pytest.importorskip("gradio_client")
    from gradio_client import Client

    url, proc = app_server
    client = Client(url, verbose=False)
    args = ("1", "ddpm", 60, 1.0, 2.0, 1e9)
    client.predict(*args, 0, 0, "griffinlim", 2, api_name="/generate")  # warm: the level to come back to
    before = rss_mb(proc.pid)
    jobs = []
    for i in range(4):
        jobs.append(client.submit(*args, 100 + i, 0, "griffinlim", 2, api_name="/generate"))
        time.sleep(0.3)  # submitted in this order while the first still runs
    results = [job.result(timeout=300) for job in jobs]
    numbers = [int(r[4].split(":")[0].split()[1]) for r in results]
    seeds = [r[4].split("seeds ")[1].split("..")[0] for r in results]
    assert seeds == ["100", "101", "102", "103"], results
    assert numbers == sorted(numbers) and len(set(numbers)) == 4, numbers  # served one after another, in order
    time.sleep(1)
    after = rss_mb(proc.pid)
    assert after <= before * 1.1 + 20, (before, after)
