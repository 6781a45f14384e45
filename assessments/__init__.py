"""Grading and learner progress: course checks, release, autograding as Slurm jobs, feedback, export."""
