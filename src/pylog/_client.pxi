# Part of pylog._core (included by _core.pyx): the embedded producer's per-record send path.
