"""`nudging eval`: the paper's benchmarks, scored, tabled and plotted."""
