"""The one continual loop and what it runs on: the loop and its plugin events,
data-parallel reductions, the process's memory policy, the accuracy-matrix metrics."""
