# Part of pylog._core (included by _core.pyx).
