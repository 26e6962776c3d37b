"""Research library: data, models, training, curvature, measures and landscapes.

Importing this package has no side effects: no device is touched and no file is read.
"""
