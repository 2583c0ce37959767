"""The job RQ runs in the baseline: the same command our steps run, as a subprocess."""
import subprocess


def run_true():
    subprocess.run(["true"], check=True)
