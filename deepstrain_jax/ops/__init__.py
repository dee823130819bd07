"""Array operations with physical units: coordinate grids, warping, strain."""
