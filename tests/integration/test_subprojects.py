"""subprojects/: the meson wrap files that stand in for libraries a non-Debian host lacks.

Checked here without the network: every wrap parses and pins a release of its public upstream, the same release
Debian 12 packages; every overlay it names has a meson.build that provides the dependency the wrap promises; and
a `meson setup` of this tree with default options takes every library from the system (no subproject at all)
and refuses to download one even when a fallback is forced. That the fallbacks really build pgrouter was checked
by hand (README.md, "Building elsewhere"): it takes a full build.
"""
import configparser
import json
import re
import shutil
import subprocess

import pytest

import pgr

REPO = pgr.REPO
SUBPROJECTS = REPO / "subprojects"
PACKAGEFILES = SUBPROJECTS / "packagefiles"

# wrap name -> (Debian package whose upstream version the wrap pins, dependency names pgrouter asks for)
WRAPS = {
    "libpg_query": ("libpg-query-dev", {"libpg_query"}),
    "doctest": ("doctest-dev", {"doctest"}),
    "yaml-cpp": ("libyaml-cpp-dev", {"yaml-cpp"}),
    "prometheus-cpp": ("prometheus-cpp-dev", {"prometheus-cpp-core"}),
}
RELEASE = re.compile(r"\d+(\.\d+)+$|\d+-\d+(\.\d+)+$")


def wraps():
    found = {}
    for path in sorted(SUBPROJECTS.glob("*.wrap")):
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(path.read_text(), source=str(path))
        found[path.stem] = parser
    return found


def wrap_version(revision):
    """The release a tag names: v2.4.9 -> 2.4.9, yaml-cpp-0.7.0 -> 0.7.0, 15-4.0.0 -> 15-4.0.0."""
    version = re.sub(r"^(v|[a-z][a-z-]*-)", "", revision)
    assert RELEASE.match(version), f"revision {revision!r} is not a release tag"
    return version


def test_every_wrap_pins_a_release_of_its_upstream():
    found = wraps()
    assert set(found) == set(WRAPS), sorted(found)
    for name, wrap in found.items():
        assert wrap.sections() == ["wrap-git", "provide"], (name, wrap.sections())
        git = wrap["wrap-git"]
        assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+\.git", git["url"]), (name, git["url"])
        version = wrap_version(git["revision"])
        # The checkout directory is versioned, so a new pin never reuses an old checkout.
        assert git["directory"] == f"{name}-{version}", (name, git["directory"])
        assert set(wrap["provide"]) == WRAPS[name][1], (name, dict(wrap["provide"]))


def test_wraps_pin_the_release_debian_ships():
    if not shutil.which("dpkg-query"):
        pytest.skip("not a Debian host")
    for name, wrap in wraps().items():
        package = WRAPS[name][0]
        result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
        if result.returncode != 0:
            continue  # not installed here: nothing to compare with
        # Debian's version: upstream, a ~ds / +dfsg repack marker, then the Debian revision.
        upstream = re.match(r"(.*?)(?:[~+](?:ds|dfsg)\d*)?-[^-]+$", result.stdout).group(1)
        assert wrap_version(wrap["wrap-git"]["revision"]) == upstream, (name, package, result.stdout)


def test_every_overlay_provides_what_its_wrap_promises():
    for name, wrap in wraps().items():
        overlay = PACKAGEFILES / wrap["wrap-git"]["patch_directory"] / "meson.build"
        assert overlay.is_file(), f"{overlay} is missing"
        text = overlay.read_text()
        project = re.search(r"project\('([^']+)',[^)]*?(?<![_\w])version : '([^']+)'", text)
        assert project and project.group(1) == name, (overlay, project and project.group(1))
        assert project.group(2) == wrap_version(wrap["wrap-git"]["revision"]), (overlay, project.group(2))
        for dependency, variable in wrap["provide"].items():
            assert re.search(rf"^{re.escape(variable)} = declare_dependency\(", text, re.M), (overlay, variable)
            assert f"meson.override_dependency('{dependency}', {variable})" in text, (overlay, dependency)
    # Files an overlay lays over the upstream tree (prometheus-cpp's generated export header).
    assert (PACKAGEFILES / "prometheus-cpp/core/include/prometheus/detail/core_export.h").is_file()


def meson_setup(build, *options):
    return subprocess.run(["meson", "setup", *options, str(build), str(REPO)], capture_output=True, text=True,
                          timeout=180)


def test_default_setup_uses_only_system_libraries(tmp_path):
    if not shutil.which("meson"):
        pytest.skip("meson is missing")
    build = tmp_path / "build"
    result = meson_setup(build)
    assert result.returncode == 0, result.stdout + result.stderr
    options = {o["name"]: o["value"] for o in json.loads(subprocess.run(
        ["meson", "introspect", "--buildoptions", str(build)], capture_output=True, text=True, check=True).stdout)}
    assert options["wrap_mode"] == "nodownload" and options["force_fallback_for"] == [], options["wrap_mode"]
    info = json.loads(subprocess.run(["meson", "introspect", "--projectinfo", str(build)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["subprojects"] == [], info["subprojects"]
    ninja = (build / "build.ninja").read_text()
    assert "subprojects/" not in ninja, "the build compiles or links something from subprojects/"
    # libpg_query is found as a library, not through dependency(): the log says which one.
    log = (build / "meson-logs" / "meson-log.txt").read_text()
    assert re.search(r"^Library pg_query found: YES", log, re.M), "the system libpg_query was not found"
    assert "Looking for a fallback subproject" not in log


def test_forced_fallback_does_not_download_by_default(tmp_path):
    if not shutil.which("meson"):
        pytest.skip("meson is missing")
    if any(SUBPROJECTS.glob("libpg_query-*/")):
        pytest.skip("libpg_query's sources are already in subprojects/: the fallback needs no download")
    result = meson_setup(tmp_path / "build", "--force-fallback-for=libpg_query")
    assert result.returncode != 0
    assert "Automatic wrap-based subproject downloading is disabled" in result.stdout + result.stderr, \
        result.stdout[-2000:]
