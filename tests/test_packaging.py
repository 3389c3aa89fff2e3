"""A non-editable install (a wheel) carries what the product needs at run time: the search spaces, the bundled
GLUE copy, py.typed and the console scripts, and finds them without a checkout around."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # builds and installs a wheel

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out)], check=True, capture_output=True)
    return next(out.glob("opdf_ray-*.whl"))


def test_the_wheel_ships_spaces_glue_data_types_and_console_scripts(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_spaces = {f"opdf_ray/_shipped/search_spaces/{p.name}" for p in (REPO / "search_spaces").glob("*.yaml")}
    shipped_glue = {f"opdf_ray/_shipped/glue/{p.parent.name}/{p.name}" for p in (REPO / "data/glue").glob("*/*")}
    assert shipped_spaces and shipped_spaces <= names
    assert shipped_glue and shipped_glue <= names
    assert "opdf_ray/py.typed" in names
    modules = {str(p.relative_to(REPO)) for p in (REPO / "opdf_ray").rglob("*.py") if "_shipped" not in p.parts}
    assert modules and modules <= names, sorted(modules - names)          # every subpackage (report/, methods/)
    entry_points = zipfile.ZipFile(wheel).read("opdf_ray-0.1.0.dist-info/entry_points.txt").decode()
    for script in ("opdf-ray = opdf_ray.commands:main", "opdf-tune = opdf_ray.cli:main",
                   "opdf-run = opdf_ray.run:main", "opdf-report = opdf_ray.report:main"):
        assert script in entry_points


def test_an_installed_wheel_finds_its_data_inside_the_package(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    probe = ("import opdf_ray, opdf_ray.data as d, opdf_ray.search_space as s;"
             "print(opdf_ray.__file__); print(s.load_space(s.default_space_path()).source);"
             "print(d.load_split('rte', 'validation')[1])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}).stdout
    package, space, glue = out.split()
    assert package.startswith(str(target))
    assert space == str(target / "opdf_ray/_shipped/search_spaces/default.yaml")
    assert glue == str(target / "opdf_ray/_shipped/glue/rte/validation.parquet")
