"""MkDocs hooks: the repository's Markdown, written for reading on GitHub, built as a site.

The pages link the way GitHub resolves links, relative to the file's place in the repository:
docs/recipes/foo.md links `../../recipes/foo.py` and `../../tests/test_foo.py#L42`, README.md
links `docs/recipes/foo.md`. These hooks
  1. make README.md the home page (index.md);
  2. publish recipes/*.py and the tests' .py files at the same paths in the site;
  3. rewrite every relative link from a repository path to a site path, so that
     `mkdocs build --strict` checks each one;
  4. fill the navigation's "Recipes" entry from README's groups of recipes;
  5. tune search for pasted error messages: stop words and single letters join the
     separator, and the pages that gather every recipe's rows stay out of the index
     (tools/site/search.js keeps lunr's query syntax out of a pasted message);
  6. publish tools/site/ (the site's stylesheet and script) as assets/.
Used by mkdocs.yml (`hooks:`); `tox -e docs` builds the site into build/site.
"""

import os
import pathlib
import posixpath
import re

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

# Repository files published as plain files, at their repository paths.
PUBLISHED = ["recipes/*.py", "tests/**/*.py", "tests_torch/**/*.py"]
# The site's stylesheet and script (mkdocs.yml's extra_css, extra_javascript), as assets/*.
ASSETS = "tools/site"
# Pages that gather every recipe's messages or rows: a pasted message should find the page of
# the recipe that explains it (errors.md also says so in its front matter).
NOT_SEARCHED = {"errors.md", "behavior-matrix.md", "version-boundaries.md"}
# lunr's English stop words. The index drops them anyway, but Material's search appends a
# wildcard to every word of a short query (tools/site/search.js), so its "a", "in" or "from"
# would match every word they begin ("from_config") and rank the longest pages first. As
# separators they (and single letters, as in "weight(s)") leave the query; capitalized too.
STOP_WORDS = """a able about across after all almost also am among an and any are as at be
because been but by can cannot could dear did do does either else ever every for from get got
had has have he her hers him his how however i if in into is it its just least let like likely
may me might most must my neither no nor not of off often on only or other our own rather said
say says she should since so some than that the their them then there these they this tis to
too twas us wants was we were what when where which while who whom why will with would yet you
your"""
# A fenced block (``` or ````, left as it is), or a link to a relative path: ](path#anchor).
FENCE_OR_LINK = re.compile(
    r"(?P<fence>^(`{3,}).*?^\2[ \t]*$)|\]\((?P<path>[^)\s#:/][^)\s#:]*)(?P<anchor>#[^)\s]*)?\)",
    re.M | re.S,
)

root = pathlib.Path()
docs = "docs"


@event_priority(100)  # before the search plugin's on_config copies its settings
def on_config(config):
    global root, docs
    root = pathlib.Path(os.path.abspath(config.config_file_path)).parent
    docs = pathlib.Path(os.path.abspath(config.docs_dir)).relative_to(root).as_posix()
    search = next(plugin for name, plugin in config.plugins.items() if name.endswith("search"))
    words = "|".join(f"[{word[0].upper()}{word[0]}]{word[1:]}" for word in STOP_WORDS.split())
    search.config.separator += rf"|\b(?:[A-Za-z]|{words})\b"
    for entry in config.nav or []:
        if "Recipes" in entry:
            entry["Recipes"] = recipe_nav()
    return config


def recipe_nav():
    """README's groups of recipes (`### ` headings over `- [name](...)` lines) as nav."""
    pages = sorted(path.stem for path in root.joinpath(docs, "recipes").glob("*.md"))
    readme = root.joinpath("README.md").read_text(encoding="utf-8")
    section = readme.partition("\n## Recipes\n")[2].partition("\n## ")[0]
    groups, names = {}, []
    for line in section.splitlines():
        if line.startswith("### "):
            names = groups.setdefault(line[4:].strip(), [])
        elif (item := re.match(r"[-|]\s*\[(\w+)\]\(", line)) and item[1] in pages:
            names.append(item[1])
    grouped = {name for names in groups.values() for name in names}
    return [
        {title: [{n: f"recipes/{n}.md"} for n in names]} for title, names in groups.items() if names
    ] + [{name: f"recipes/{name}.md"} for name in pages if name not in grouped]


def on_files(files, config):
    for path in sorted(root.joinpath(ASSETS).glob("*.*")):
        files.append(File.generated(config, f"assets/{path.name}", abs_src_path=str(path)))
    files.append(File.generated(config, "index.md", abs_src_path=str(root / "README.md")))
    for pattern in PUBLISHED:
        for path in sorted(root.glob(pattern)):
            if "__pycache__" not in path.parts:
                uri = path.relative_to(root).as_posix()
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def repository_path(site_path):
    """Where a file of the site lies in the repository."""
    return "README.md" if site_path == "index.md" else f"{docs}/{site_path}"


def site_path(repository_path):
    """Where a file of the repository lies in the site: the inverse of repository_path, and
    the same path for the published recipes and tests."""
    if repository_path == "README.md":
        return "index.md"
    return repository_path.removeprefix(f"{docs}/")


def on_page_markdown(markdown, page, config, files):
    here = page.file.src_uri
    if here in NOT_SEARCHED:
        page.meta["search"] = {"exclude": True}
    folder = posixpath.dirname(repository_path(here))

    def rewrite(match):
        if match["fence"]:  # messages and examples stay as they are
            return match["fence"]
        target = posixpath.normpath(posixpath.join(folder, match["path"]))
        relative = posixpath.relpath(site_path(target), posixpath.dirname(here) or ".")
        return f"]({relative}{match['anchor'] or ''})"

    return FENCE_OR_LINK.sub(rewrite, markdown)
