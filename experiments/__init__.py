"""The study harness, its statistics, the method catalogue, benchmarks and figure scripts.

Run from the repository as `python experiments/<script>.py` (the package is installed with
`pip install -e .`, so the scripts import each other as `experiments.<name>`).
"""
