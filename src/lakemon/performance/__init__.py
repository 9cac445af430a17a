"""Model-performance metrics finished on the driver from Spark aggregates (sums, histograms, counts)."""
