"""Medians of the `name key=value figure` lines the bench commands print, one
list per (name, key) over all rounds; prints the table it returns."""

import collections
import statistics


def medians(log_path: str) -> dict:
    runs = collections.defaultdict(list)
    for line in open(log_path):
        name, key, value = line.split()
        runs[(name, key)].append(float(value))
    med = {k: statistics.median(v) for k, v in runs.items()}
    print("\nmedians over", len(next(iter(runs.values()))), "rounds")
    for (name, key), v in sorted(med.items()):
        print(f"  {name:32s} {key:16s} {v:10.0f}")
    return med
