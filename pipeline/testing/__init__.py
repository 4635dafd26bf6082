"""The test and demo kit: a loopback file server with faults, a read simulator, a disk sampler.

Used by the tests, the demo and the benchmarks; no production module imports it.
"""
