"""The course catalogue: both tracks are there, and a bad course file names its key."""

import shutil

import pytest
import yaml

from courses.catalogue import COURSES_DIR, CatalogueError, load_catalogue
from hub.config import load

PROFILES = {p["key"] for p in load()["profiles"]}


def test_catalogue_has_two_tracks_of_at_least_five_assignments():
    catalogue = load_catalogue(profiles=PROFILES)
    per_track = {}
    for course in catalogue.values():
        per_track.setdefault(course.track, []).extend(course.assignments)
    assert set(per_track) == {"hpc-engineering", "llm-engineering"}
    assert all(len(assignments) >= 5 for assignments in per_track.values())
    assert all(a.path.exists() for assignments in per_track.values() for a in assignments)


def broken_copy(tmp_path, course_id, change):
    for path in COURSES_DIR.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    data = yaml.safe_load((tmp_path / f"{course_id}.yaml").read_text())
    change(data)
    (tmp_path / f"{course_id}.yaml").write_text(yaml.safe_dump(data))
    return tmp_path


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(track="quantum"), "llm-101.yaml: key track: 'quantum' is not one of"),
    (lambda d: d["assignments"][0].update(points=0), "llm-101.yaml: key assignments[0].points"),
    (lambda d: d["assignments"][1].update(id=d["assignments"][0]["id"]), "assignments[1].id: 'tokenization' repeats"),
    (lambda d: d.update(prerequisites=["llm-999"]), "llm-101.yaml: key prerequisites[0]: no course 'llm-999'"),
    (lambda d: d["assignments"][0].update(profile="gpu-h200-64"), "key assignments[0].profile: no resource profile"),
    (lambda d: d["assignments"][0].update(notebook="missing.ipynb"), "key assignments[0].notebook:"),
    (lambda d: d.update(id="llm-102"), "key id: 'llm-102' must match the file name 'llm-101'"),
    (lambda d: d.update(extra="x"), "llm-101.yaml: key (top level): Additional properties are not allowed"),
    (lambda d: d.update(gpu_budget={"course_gpu_hours": 0}), "key gpu_budget.course_gpu_hours: 0 is less than or equal"),
    (lambda d: d.update(gpu_budget={}), "key gpu_budget: {} should be non-empty (accepted: course_gpu_hours"),
    (lambda d: d.update(gpu_budget={"course_gpu_hours": 5, "learner_gpu_hours": 6}),
     "key gpu_budget.learner_gpu_hours: 6 is more than the whole course's 5 (accepted: at most course_gpu_hours)"),
])
def test_bad_course_file_names_the_key(tmp_path, change, message):
    folder = broken_copy(tmp_path, "llm-101", change)
    with pytest.raises(CatalogueError) as e:
        load_catalogue(folder, profiles=PROFILES)
    assert message in str(e.value)


def test_a_live_catalogue_follows_the_course_files(tmp_path, monkeypatch):
    """What the exchange and progress services hold: a course added, changed or removed is seen
    within a second, without a restart; a broken edit keeps the last good catalogue."""
    from courses import catalogue

    folder = tmp_path / "courses"
    folder.mkdir()
    for path in COURSES_DIR.glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    notebooks = tmp_path / "notebooks"       # the new course's notebooks: hpc-101's, under its own id
    notebooks.mkdir()
    for course in catalogue.NOTEBOOKS_DIR.iterdir():
        (notebooks / course.name).symlink_to(course)
    (notebooks / "hpc-102").symlink_to(catalogue.NOTEBOOKS_DIR / "hpc-101")
    monkeypatch.setattr(catalogue, "NOTEBOOKS_DIR", notebooks)
    monkeypatch.setattr(catalogue.LiveCatalogue, "CHECK_S", 0.0)

    live = catalogue.LiveCatalogue(folder)
    assert "hpc-102" not in live and live.version == 1
    data = yaml.safe_load((folder / "hpc-101.yaml").read_text())
    (folder / "hpc-102.yaml").write_text(yaml.safe_dump({**data, "id": "hpc-102", "title": "HPC again"}))
    assert live["hpc-102"].title == "HPC again" and live.version == 2
    assert [a.id for a in live["hpc-102"].assignments] == [a.id for a in live["hpc-101"].assignments]

    (folder / "hpc-102.yaml").write_text("id: [broken")
    assert live["hpc-102"].title == "HPC again" and live.version == 2     # the last good catalogue stays
    (folder / "hpc-102.yaml").unlink()
    assert "hpc-102" not in live and live.version == 3
