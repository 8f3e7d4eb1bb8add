"""The Slurm workload package."""
