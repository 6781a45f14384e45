"""Sandboxed autograding: what runs inside a grading job.

The trusted steps (merging a submission into the trainer's source, scoring, feedback) run as
the job's own user; only the learner's code runs in the sandbox, in a kernel with its own uid,
no network, no view of sources or other submissions, and resource limits. Results leave the job
as JSON written by the trusted side, never as anything the sandbox produced and we unpickle.
"""
