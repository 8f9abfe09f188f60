"""Exchange adapters: stream names, URL building and decoding raw frames to events.

Pure code like :mod:`oraculo_trio.core`: no trio and no I/O. The pipeline owns the sockets
and hands each frame to a decoder together with its read stamps.
"""
