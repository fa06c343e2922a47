import base64

from convattn.report.html import markdown_to_html

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def test_subset_of_markdown(tmp_path):
    (tmp_path / "fig").mkdir()
    (tmp_path / "fig" / "a.png").write_bytes(PNG)
    md = """# Title <x>

A paragraph with **bold**, *italics*, `code <b>` and a [link](http://example.org).
Second line of it.

| name | value |
|---|---:|
| a \\| b | 1.5 |

- one
- two
  continued

> a warning

![a figure](fig/a.png)

```
x < y
```
"""
    html = markdown_to_html(md, tmp_path)
    assert '<h1 id="title-x">Title &lt;x&gt;</h1>' in html
    assert "<strong>bold</strong>" in html and "<em>italics</em>" in html
    assert "<code>code &lt;b&gt;</code>" in html
    assert '<a href="http://example.org">link</a>' in html
    assert "Second line of it.</p>" in html
    assert "<td>a | b</td>" in html and '<td class="num">1.5</td>' in html
    assert "<li>two continued</li>" in html
    assert '<div class="warn">a warning</div>' in html
    assert 'src="data:image/png;base64,' in html  # embedded, self-contained
    assert "<pre><code>x &lt; y</code></pre>" in html


def test_missing_image_keeps_its_path(tmp_path):
    html = markdown_to_html("![gone](nope.png)", tmp_path)
    assert 'src="nope.png"' in html
