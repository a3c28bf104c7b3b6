"""Training: interactions -> confidence matrix -> ALS -> evaluation against popularity -> artifact.

Pure Python and numpy (and implicit for the fit); storage lives in shared.storage.
"""
