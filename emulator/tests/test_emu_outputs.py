"""Outputs: a real JPEG of the requested size, deterministic, served without auth once completed."""

from __future__ import annotations

import io

import pytest
import requests
from PIL import Image


@pytest.mark.parametrize("width, height", [(256, 256), (1024, 768), (512, 2048)])
def test_output_is_a_jpeg_of_the_requested_size(api, width, height):
    job = api.wait(api.submit_id(width=width, height=height))
    response = requests.get(job["url"], timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "JPEG"
    assert image.size == (width, height)
    again = requests.get(job["url"], timeout=10)
    assert again.content == response.content


def test_outputs_differ_between_jobs_and_are_varied(api):
    urls = [api.wait(api.submit_id(prompt=f"scene {i}", width=256, height=256))["url"] for i in range(2)]
    images = [Image.open(io.BytesIO(requests.get(url, timeout=10).content)).convert("RGB") for url in urls]
    assert images[0].tobytes() != images[1].tobytes()
    colours = images[0].getcolors(maxcolors=256 * 256)
    assert colours is None or len(colours) > 20


def test_output_is_404_before_completion_and_for_unknown_jobs(emu, api):
    job_id = api.submit_id()
    url = f"{emu.base_url}/outputs/{job_id}.jpg"
    early = requests.get(url, timeout=10)
    assert early.status_code == 404
    assert early.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert requests.get(f"{emu.base_url}/outputs/nothing.jpg", timeout=10).status_code == 404
    assert requests.get(f"{emu.base_url}/outputs/{job_id}.png", timeout=10).status_code == 404
    api.wait(job_id)
    assert requests.get(url, timeout=10).status_code == 200
    assert emu.stats()["requests"]["download"] == 4
