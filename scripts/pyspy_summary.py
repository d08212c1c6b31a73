"""Sum a py-spy raw profile (`py-spy record -f raw --threads`, as `gpu_serve.sh`'s PROFILE writes it): the share of
samples per thread, per innermost frame, and per frame anywhere on the stack.
Usage: python scripts/pyspy_summary.py PROFILE.txt [PROFILE.txt ...]"""

import collections
import sys


def summarize(path: str, rows: int = 20) -> None:
    total = 0
    threads, leaves, anywhere = collections.Counter(), collections.Counter(), collections.Counter()
    for line in open(path):
        stack, _, count = line.rstrip().rpartition(" ")
        if not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        total += n
        threads[frames[0][:60]] += n  # py-spy --threads puts the thread first
        leaves[frames[-1][:110]] += n
        for frame in set(frames[1:]):
            anywhere[frame[:110]] += n
    print(f"== {path}: {total} samples")
    for label, counter, k in (("thread", threads, 10), ("innermost", leaves, rows), ("on stack", anywhere, rows + 5)):
        for name, n in counter.most_common(k):
            print(f"{n / max(total, 1):6.1%} {label:9s} {name}")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        summarize(p)
