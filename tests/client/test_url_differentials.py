"""The host judged is the host contacted: URLs that ``urllib.parse`` and the HTTP libraries read
differently are refused, and what is accepted is normalised to what is fetched."""

from __future__ import annotations

import httpx
import pytest
from urllib3.util import parse_url

from airflow_provider_doitong.client.errors import DoitongUntrustedOutput
from airflow_provider_doitong.client.safety import check_download_url, parse_strict_url
from airflow_provider_doitong.operators.links import DoitongImageLink

HOSTS = ("*.doitong.com", "127.0.0.1")

#: (URL, why it is refused). Each of the first ones passed the check that judged with
#: ``urllib.parse`` alone, while requests/urllib3 or httpx connect to another host.
REFUSED = [
    pytest.param(r"https://evil.example\.cdn.doitong.com/x.png", "backslash", id="backslash-in-host"),
    pytest.param(r"https://cdn.doitong.com\@evil.example/x.png", "backslash", id="backslash-before-at"),
    pytest.param(r"https://cdn.doitong.com:443\@evil.example/", "backslash", id="port-backslash-at"),
    pytest.param("https://a@b@cdn.doitong.com/x", "credentials", id="two-ats"),
    pytest.param("https://evil.example@cdn.doitong.com/x", "credentials", id="userinfo"),
    pytest.param("https://cdn.doitong.com\t.evil.example/x", "control", id="tab-in-host"),
    pytest.param("https://cdn.doitong.com\n.evil.example/x", "control", id="newline-in-host"),
    pytest.param("https://cdn%2edoitong.com/x", "percent-encoded", id="percent-dot"),
    pytest.param("https://evil%2eexample%2f.doitong.com/x", "percent-encoded", id="percent-slash"),
    pytest.param("https://cdn.doitong.com\u2028/x", "outside RFC 3986|international", id="line-separator"),
    pytest.param("https://evil\u2215example.doitong.com/x", "international|outside", id="division-slash"),
    pytest.param("https://cdn..doitong.com/x", "not a host name", id="empty-label"),
    pytest.param("https://-cdn.doitong.com/x", "outside RFC 3986|not a host name", id="leading-hyphen"),
    pytest.param("https://[::1/x", "outside RFC 3986", id="open-bracket"),
    pytest.param("https://cdn.doitong.com:99999/x", "port", id="port-range"),
    pytest.param("https:///cdn.doitong.com/x", "no host", id="no-authority"),
    pytest.param("https://evil.example#@cdn.doitong.com/x", "evil.example", id="fragment-at"),
    pytest.param("https://evil.example?@cdn.doitong.com/", "evil.example", id="query-at"),
]


@pytest.mark.parametrize(("url", "said"), REFUSED)
def test_urls_read_two_ways_are_refused(url: str, said: str) -> None:
    with pytest.raises(DoitongUntrustedOutput, match=said):
        check_download_url(url, HOSTS)


#: (URL, the URL fetched).
ACCEPTED = [
    pytest.param("HTTPS://CDN.DOITONG.COM/x.jpg", "https://cdn.doitong.com/x.jpg", id="case"),
    pytest.param(
        "https://cdn.doitong.com/x.jpg?sig=a%2Fb#frag",
        "https://cdn.doitong.com/x.jpg?sig=a%2Fb",
        id="fragment",
    ),
    pytest.param("https://cdn.doitong.com:0443/x", "https://cdn.doitong.com:443/x", id="port-zeros"),
    pytest.param("https://b\u00fccher.doitong.com/x", "https://xn--bcher-kva.doitong.com/x", id="idna"),
    pytest.param("https://cdn\u3002doitong.com/x", "https://cdn.doitong.com/x", id="ideographic-dot"),
    pytest.param("http://127.0.0.1:8765/outputs/a.jpg", "http://127.0.0.1:8765/outputs/a.jpg", id="loopback"),
]


@pytest.mark.parametrize(("url", "fetched"), ACCEPTED)
def test_accepted_urls_are_normalised_to_what_is_fetched(url: str, fetched: str) -> None:
    assert check_download_url(url, HOSTS) == fetched
    # Both HTTP libraries contact the host that was judged.
    judged = parse_strict_url(fetched)
    assert parse_url(fetched).host == judged.host
    assert httpx.URL(fetched).raw_host.decode() == judged.host


@pytest.mark.parametrize(
    ("url", "link"),
    [
        ("https://cdn.doitong.com/outputs/a.jpg", "https://cdn.doitong.com/outputs/a.jpg"),
        (r"https://evil.example\.cdn.doitong.com/a.jpg", ""),
        ("https://evil.example@cdn.doitong.com/a.jpg", ""),
        ("javascript://cdn.doitong.com/%0aalert(1)", ""),
        (None, ""),
    ],
)
def test_the_ui_link_uses_the_same_grammar(url: object, link: str) -> None:
    class Operator:
        image_url = url

    assert DoitongImageLink().get_link(Operator(), ti_key=None) == link  # type: ignore[arg-type]
