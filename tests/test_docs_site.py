"""The documentation site: offline by construction, complete, and consistent with the packages.

Offline means that no page asks another host for anything while it renders: no outside script,
stylesheet, font, image or frame. Two tests enforce it. One reads `mkdocs.yml`, the theme override
and the Markdown sources, so it runs everywhere; the other builds the site with
`mkdocs build --strict` and reads every built HTML and CSS file, and is skipped where mkdocs and its
plugins are not installed (`hatch run docs:build` has them).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("_docs_sources", Path(__file__).with_name("_docs_sources.py"))
_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_docs)
ROOT, DOCS, code_blocks, load_mkdocs_config, nav_pages = (
    _docs.ROOT,
    _docs.DOCS,
    _docs.code_blocks,
    _docs.load_mkdocs_config,
    _docs.nav_pages,
)

PACKAGES = ("monowarp", "deqcanon", "latentcanon", "lsmetrics")

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
_CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)")
_CSS_IMPORT = re.compile(r"@import\s+['\"]([^'\"]+)['\"]")  # the url(...) form is matched above

# Tags and attributes whose URL the browser fetches while rendering a page (links are followed
# only when clicked, so <a href> and <link rel="canonical"> are not among them).
_FETCHING_LINK_RELS = {
    "stylesheet",
    "preload",
    "modulepreload",
    "prefetch",
    "icon",
    "preconnect",
    "dns-prefetch",
    "manifest",
    "apple-touch-icon",
}


def is_outside(url: str) -> bool:
    """Whether fetching `url` would leave the machine (`mailto:`/`data:` and relative paths do not)."""
    url = url.strip()
    if url.startswith("//"):  # protocol-relative: another host
        return True
    scheme = _SCHEME.match(url)
    return scheme is not None and scheme[1].lower() not in ("data", "blob", "mailto", "javascript")


class _FetchedUrls(HTMLParser):
    """Collects the URLs an HTML page makes the browser fetch, and inline <style> text."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "link":
            rels = set(a.get("rel", "").lower().split())
            if rels & _FETCHING_LINK_RELS:
                self.urls.append((f"<link rel={a.get('rel')}>", a.get("href", "")))
        elif tag in ("script", "img", "iframe", "source", "video", "audio", "embed", "track", "input"):
            if "src" in a:
                self.urls.append((f"<{tag}>", a["src"]))
            if "srcset" in a:
                for part in a["srcset"].split(","):
                    self.urls.append((f"<{tag} srcset>", part.strip().split(" ")[0]))
        elif tag == "object" and "data" in a:
            self.urls.append(("<object>", a["data"]))
        if "style" in a:
            self.styles.append(a["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def outside_references_in_html(text: str) -> list[str]:
    parser = _FetchedUrls()
    parser.feed(text)
    found = [f"{what} {url}" for what, url in parser.urls if is_outside(url)]
    for style in parser.styles:
        found += outside_references_in_css(style)
    return found


def outside_references_in_css(text: str) -> list[str]:
    urls = _CSS_URL.findall(text) + _CSS_IMPORT.findall(text)
    return [f"css {url}" for url in urls if is_outside(url)]


# --------------------------------------------------------------------------------- without mkdocs
def test_outside_reference_detection():
    assert is_outside("https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js")
    assert is_outside("//fonts.googleapis.com/css?family=Roboto")
    assert not is_outside("javascripts/katex.js")
    assert not is_outside("/local-scale-equivariance/assets/main.css")
    assert not is_outside("data:image/svg+xml;base64,AAAA")
    html = (
        '<link rel="canonical" href="https://example.org/"><a href="https://example.org/">x</a>'
        '<link rel="stylesheet" href="https://example.org/a.css"><script src="b.js"></script>'
        '<img src="//example.org/c.png"><style>@import url("https://example.org/d.css");</style>'
    )
    assert outside_references_in_html(html) == [
        "<link rel=stylesheet> https://example.org/a.css",
        "<img> //example.org/c.png",
        "css https://example.org/d.css",
    ]


def test_config_and_sources_reference_nothing_outside():
    config = load_mkdocs_config()
    assert config["theme"].get("font") is False, (
        "theme.font must be false: the theme's fonts come from Google"
    )
    for key in ("extra_javascript", "extra_css"):
        for entry in config.get(key, []):
            path = entry if isinstance(entry, str) else entry["path"]
            assert not is_outside(path), f"{key}: {path} is loaded from another host"
            assert (DOCS / path).is_file(), f"{key}: {path} is missing from docs/"
    # Local scripts and stylesheets must not pull anything in themselves.
    for path in sorted(DOCS.rglob("*.css")):
        text = path.read_text(encoding="utf-8")
        assert not outside_references_in_css(text), path
        for url in _CSS_URL.findall(text):  # every font the stylesheet prefers is bundled
            if url.endswith(".woff2"):
                assert (path.parent / url).is_file(), f"{path}: {url} is missing"
    for path in sorted(DOCS.rglob("*.js")):
        if "vendor" in path.parts:
            continue
        assert not re.search(r"https?://", path.read_text(encoding="utf-8")), path
    # Raw HTML in the pages (code blocks excluded: they are shown, not loaded).
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"^([ \t]*)```.*?^\1```", "", text, flags=re.S | re.M)
        found = outside_references_in_html(text)
        assert not found, f"{path.relative_to(ROOT)} loads {found}"
    # The theme asks the hosting service for star counts unless its source partial is overridden.
    override = DOCS / "overrides" / "partials" / "source.html"
    assert config["theme"].get("custom_dir") == "docs/overrides"
    assert override.is_file()
    link = re.search(r"<a\s[^>]*>", override.read_text(encoding="utf-8"))
    assert link and "data-md-component" not in link[0], link


def test_math_renderer_is_bundled_with_its_licence():
    config = load_mkdocs_config()
    scripts = config["extra_javascript"]
    assert "javascripts/vendor/katex/katex.min.js" in scripts
    assert "javascripts/vendor/katex/contrib/auto-render.min.js" in scripts
    assert "javascripts/vendor/katex/katex.min.css" in config["extra_css"]
    katex = DOCS / "javascripts" / "vendor" / "katex"
    assert "MIT License" in (katex / "LICENSE").read_text(encoding="utf-8")
    size = sum(p.stat().st_size for p in katex.rglob("*") if p.is_file())
    assert size < 1_000_000, f"the bundled math renderer takes {size} bytes"
    extensions = [e if isinstance(e, str) else next(iter(e)) for e in config["markdown_extensions"]]
    assert "pymdownx.arithmatex" in extensions


def test_site_urls_are_set_and_consistent():
    config = load_mkdocs_config()
    repo = "https://github.com/local-scale-equivariance/local-scale-equivariance"
    assert config["repo_url"] == repo
    assert config["site_url"].startswith("https://") and config["site_url"].endswith("/")
    for name in PACKAGES:
        urls = tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())["project"]["urls"]
        assert urls["Homepage"] == repo
        assert urls["Documentation"] == config["site_url"]
        assert urls["Source"].startswith(repo + "/")
        assert all(u.startswith(("https://github.com/", config["site_url"])) for u in urls.values()), urls


def test_every_page_is_in_the_nav():
    config = load_mkdocs_config()
    listed = {path for _, path in nav_pages(config["nav"])}
    excluded = [line.strip().rstrip("/") for line in config.get("exclude_docs", "").splitlines() if line]
    for path in sorted(DOCS.rglob("*.md")):
        rel = path.relative_to(DOCS).as_posix()
        if any(rel == e or rel.startswith(e + "/") for e in excluded):
            continue
        assert rel in listed, f"docs/{rel} is not in the nav of mkdocs.yml"
    for rel in listed:
        assert (DOCS / rel).is_file(), f"the nav lists docs/{rel}, which does not exist"


@pytest.mark.parametrize("name", PACKAGES)
def test_api_page_documents_every_public_name(name: str):
    # The API pages list their members by hand (entry points first); a new public name must be added.
    module = importlib.import_module(name)
    page = (DOCS / "api" / f"{name}.md").read_text(encoding="utf-8")
    members = re.search(rf"^::: {name}\n((?:    .*\n)+)", page, re.M)
    assert members, f"docs/api/{name}.md has no '::: {name}' block"
    listed = re.findall(r"^        - (\w+)$", members.group(1), re.M)
    public = {n for n in module.__all__ if not n.startswith("__")}
    submodules = {n for n in public if type(getattr(module, n)).__name__ == "module"}
    for sub in submodules:  # documented in a section of its own
        assert f"::: {name}.{sub}" in page, f"docs/api/{name}.md lacks a '::: {name}.{sub}' section"
    assert sorted(public - submodules - set(listed)) == [], f"add to docs/api/{name}.md"
    assert sorted(set(listed) - public) == [], f"docs/api/{name}.md lists names {name} does not export"


def test_install_page_matches_the_declared_dependencies():
    page = (DOCS / "install.md").read_text(encoding="utf-8")
    for name in PACKAGES:
        project = tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())["project"]
        for requirement in project["dependencies"]:
            assert f"`{requirement.replace(' ', '')}`" in page, f"install.md does not list {requirement}"
        for extra in project.get("optional-dependencies", {}):
            assert f'"{project["name"]}[{extra}]"' in page, f"install.md does not show {name}[{extra}]"


def test_changelog_has_an_unreleased_section_and_the_current_version():
    changelog = (DOCS / "changelog.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\]", changelog, re.M)
    assert headings[0] == "Unreleased"
    for name in PACKAGES:
        version = importlib.import_module(name).__version__
        assert version in headings, f"{name} {version} has no section in docs/changelog.md"


def test_citation_page_has_the_papers_bibtex():
    page = (DOCS / "citation.md").read_text(encoding="utf-8")
    bibtex = [code for lang, _, code, _ in code_blocks(page) if lang == "bibtex"]
    assert len(bibtex) == 1
    entry = " ".join(bibtex[0].split())
    assert entry.startswith("@inproceedings{")
    assert "Local Scale Equivariance with Latent Deep Equilibrium Canonicalizer" in entry
    assert "ICCV" in entry and "year = {2025}" in entry
    assert entry.count("{") == entry.count("}")


@pytest.mark.parametrize("page", ["index.md", "install.md", "citation.md", "changelog.md"])
def test_code_blocks_fit_the_text_column(page: str):
    # 88 characters fit the text column at 1280 px with both sidebars (docs/stylesheets/extra.css).
    for lang, line, code, _ in code_blocks((DOCS / page).read_text(encoding="utf-8")):
        for k, text in enumerate(code.splitlines()):
            assert len(text) <= 88, f"docs/{page}:{line + k}: {len(text)} characters ({lang})"


# ------------------------------------------------------------------------------------ with mkdocs
def _docs_toolchain_missing() -> str | None:
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        try:
            if importlib.util.find_spec(module) is None:
                return module
        except (ModuleNotFoundError, ValueError):
            return module
    return None


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = _docs_toolchain_missing()
    if missing:
        pytest.skip(f"{missing} is not installed (the docs environment has it: hatch run docs:build)")
    site = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return site


def test_built_site_loads_nothing_from_outside(built_site: Path):
    pages = sorted(built_site.rglob("*.html"))
    assert len(pages) >= len(nav_pages(load_mkdocs_config()["nav"]))
    for path in pages:
        found = outside_references_in_html(path.read_text(encoding="utf-8"))
        assert not found, f"{path.relative_to(built_site)} loads {found}"
    for path in sorted(built_site.rglob("*.css")):
        found = outside_references_in_css(path.read_text(encoding="utf-8"))
        assert not found, f"{path.relative_to(built_site)} loads {found}"


def test_built_pages_render_formulas_with_the_bundled_katex(built_site: Path):
    home = (built_site / "index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in home
    assert re.search(r'<script src="[^"]*javascripts/vendor/katex/katex\.min\.js"', home)
    assert re.search(r'<script src="[^"]*javascripts/katex\.js"', home)
    assert "mathjax" not in home.lower()


def test_built_site_works_under_its_sub_path(built_site: Path):
    config = load_mkdocs_config()
    base = "/" + config["site_url"].split("://", 1)[1].split("/", 1)[1]  # e.g. /project/
    not_found = (built_site / "404.html").read_text(encoding="utf-8")
    assets = re.findall(r'(?:href|src)="([^"]+\.(?:css|js))"', not_found)
    assert assets and all(a.startswith(base) for a in assets), assets
    sitemap = (built_site / "sitemap.xml").read_text(encoding="utf-8")
    assert sitemap.count("<loc>") >= len(nav_pages(config["nav"]))
    assert f"<loc>{config['site_url']}install/</loc>" in sitemap


def test_built_api_pages_have_summaries_and_source(built_site: Path):
    for name in PACKAGES:
        page = (built_site / "api" / name / "index.html").read_text(encoding="utf-8")
        assert "Source code in" in page, f"api/{name}: no source links"
        assert 'class="doc doc-heading' in page
