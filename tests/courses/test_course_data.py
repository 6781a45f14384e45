"""A data file several assignments read is kept once (courses/data/) and declared per assignment:
the release puts it beside the notebook, and the catalogue refuses a declaration that cannot hold."""

from __future__ import annotations

import os
import shutil

import pytest
import yaml

from assessments.courseware.release import build_release
from courses import catalogue
from courses.catalogue import COURSES_DIR, DATA_DIR, CatalogueError, load_catalogue
from hub.config import load

CFG = load()
PYTHON = os.path.join(CFG["notebook_env"], "bin", "python")


def test_the_corpus_is_kept_once_and_the_llm_assignments_that_read_it_declare_it():
    assert sorted(p.relative_to(COURSES_DIR).as_posix() for p in COURSES_DIR.rglob("corpus.txt")) == \
        ["data/corpus.txt"]
    declared = {f"{a.course_id}/{a.id}" for c in load_catalogue().values() for a in c.assignments
                if "corpus.txt" in a.data}
    assert declared == {"llm-101/tokenization", "llm-101/tiny-gpt", "llm-201/inference", "llm-201/lora"}


def test_a_release_holds_the_declared_data_beside_the_notebook(tmp_path):
    a = next(a for a in load_catalogue()["llm-101"].assignments if a.id == "tokenization")
    build_release(PYTHON, a, tmp_path / "release")
    assert sorted(p.name for p in (tmp_path / "release").iterdir()) == ["corpus.txt", "tokenization.ipynb"]
    assert (tmp_path / "release" / "corpus.txt").read_bytes() == (DATA_DIR / "corpus.txt").read_bytes()


def courses_with(tmp_path, change):
    """A copy of the course files with llm-101's first assignment changed by CHANGE."""
    folder = tmp_path / "courses"
    folder.mkdir()
    for path in COURSES_DIR.glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    data = yaml.safe_load((folder / "llm-101.yaml").read_text())
    change(data["assignments"][0])
    (folder / "llm-101.yaml").write_text(yaml.safe_dump(data))
    return folder


@pytest.mark.parametrize("change,message", [
    (lambda a: a.update(data=["missing.txt"]), "llm-101.yaml: key assignments[0].data[0]: no file missing.txt in"),
    (lambda a: a.update(data=["../hub/defaults.yaml"]), "llm-101.yaml: key assignments[0].data[0]: '../hub/"),
    (lambda a: a.update(data=["corpus.txt", "corpus.txt"]), "key assignments[0].data: ['corpus.txt', 'corpus.txt'] "
                                                            "has non-unique elements"),
])
def test_a_bad_data_declaration_names_the_key(tmp_path, change, message):
    with pytest.raises(CatalogueError) as e:
        load_catalogue(courses_with(tmp_path, change))
    assert message in str(e.value)


def test_an_assignment_folder_with_its_own_copy_of_a_declared_file_is_refused(tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    shutil.copytree(catalogue.NOTEBOOKS_DIR, notebooks)
    shutil.copy(DATA_DIR / "corpus.txt", notebooks / "llm-101" / "tokenization" / "corpus.txt")
    monkeypatch.setattr(catalogue, "NOTEBOOKS_DIR", notebooks)
    with pytest.raises(CatalogueError) as e:
        load_catalogue()
    assert "llm-101.yaml: key assignments[0].data[0]:" in str(e.value)
    assert "has its own corpus.txt; keep the one in" in str(e.value)
