"""Template rendering is bounded: total output, loop iterations, and calls that would build a huge string."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from control_plane.prompts.templates import MAX_RENDERED_CHARS, TemplateProblem, render

API = "/api/v1"


def render_text(template: str, **variables: object) -> str:
    text, _ = render(template=template, messages=[], declared=[], variables=variables)
    return text


@pytest.mark.parametrize("template", [
    '{% for i in range(99999) %}{{ "x"*200 }}{% endfor %}',  # 54 characters that rendered 20 MB
    '{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}',  # 10**6 silent iterations
    '{% for a in items %}{% for b in items %}{% for c in items %}{% endfor %}{% endfor %}{% endfor %}',
    '{{ "%999999999s" % "x" }}', '{{ "{:>999999999}".format("x") }}', '{{ "x".ljust(99999999) }}',
    '{{ "x"|center(999999999) }}', '{{ "%999999999s"|format("x") }}', '{{ range(100000)|join("x"*999999) }}',
    '{{ "ab"|replace("", "y"*999999) }}', '{{ "a\nb"|indent("z"*999999) }}',
])
def test_runaway_templates_are_refused(template: str) -> None:
    with pytest.raises(TemplateProblem):
        render_text(template, items=list(range(100)))


def test_the_cap_covers_the_whole_prompt_not_each_part() -> None:
    half = '{{ "x" * 600000 }}'
    with pytest.raises(TemplateProblem, match=f"exceeds {MAX_RENDERED_CHARS}"):
        render(template="", messages=[{"role": "system", "content": half}, {"role": "user", "content": half}],
               declared=[], variables={})


def test_ordinary_templates_still_render() -> None:
    template = ('Hello {{ name }}! {% for x in items %}{{ loop.index }}:{{ x }} {% endfor %}{{ items|join(", ") }}'
                ' {{ "%5s"|format("a") }} {{ 7 % 3 }} {{ "a-b".replace("-", "+") }} {{ "{:>3}".format(1) }}'
                '{% for x in [] %}never{% else %} empty{% endfor %}')
    assert render_text(template, name="w", items=[1, 2]) == "Hello w! 1:1 2:2 1, 2     a 1 a+b   1 empty"
    assert len(render_text('{% for i in range(1000) %}{{ "x" * 999 }}{% endfor %}')) == 999_000


def test_render_endpoint_answers_422(client: TestClient, admin_headers: dict[str, str]) -> None:
    h = admin_headers
    assert client.post(f"{API}/prompts", json={"name": "loop"}, headers=h).status_code == 201
    template = '{% for i in range(99999) %}{{ "x"*200 }}{% endfor %}'
    created = client.post(f"{API}/prompts/loop/versions", json={"template": template}, headers=h)
    assert created.status_code == 201, created.text
    rendered = client.post(f"{API}/prompts/loop/render", json={"ref": "1", "variables": {}}, headers=h)
    assert rendered.status_code == 422 and "exceeds" in rendered.json()["error"]["message"]
