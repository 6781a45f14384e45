"""Slurm's epilog notes of ended jobs: each followed session is told once, others are left alone,
and the epilog script itself writes only a job id, into its directory."""

import asyncio
import os
import subprocess

from hub.slurm_cluster import _render
from spawners.end_notices import EndNotices


class Spawner:
    def __init__(self):
        self.told: list[str] = []

    def accept_end_report(self, source: str = "its server") -> bool:
        self.told.append(source)
        return True


def test_a_followed_job_with_a_note_is_told_once_and_others_are_not(tmp_path):
    async def scenario():
        notices = EndNotices(str(tmp_path), every_s=0.01)
        ended, running = Spawner(), Spawner()
        notices.follow("101", ended)
        notices.follow("102", running)
        (tmp_path / "101").touch()
        (tmp_path / "999").touch()                     # another job's end: nobody here follows it
        await asyncio.sleep(0.1)
        notices.follow("101", ended)                   # a later poll follows again: the note is not read twice
        await asyncio.sleep(0.1)
        return ended.told, running.told, set(notices.followed)

    ended, running, followed = asyncio.run(scenario())
    assert ended == ["Slurm's epilog"] and running == [] and followed == {"102"}


def test_the_epilog_notes_the_job_id_and_nothing_else(tmp_path):
    script = tmp_path / "epilog.sh"
    notes = tmp_path / "ended dir"          # a space: the path is quoted in the script
    notes.mkdir()
    script.write_text(_render("epilog_slurmctld.sh.j2", notices_dir=f"'{notes}'"))
    os.chmod(script, 0o755)
    for job in ("4242", "../../etc/x", ""):
        subprocess.run([str(script)], env={"PATH": os.environ["PATH"], "SLURM_JOB_ID": job}, check=True)
    assert sorted(os.listdir(notes)) == ["4242"] and (notes / "4242").stat().st_size == 0
