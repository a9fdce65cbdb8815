"""Research scripts behind docs/ (not part of the product): probes, measurements, studies."""
